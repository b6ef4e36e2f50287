"""Beam search with an n-gram LM: the ARPA files data_prep.build_lm writes (normalised, loadable by
KenLM through torchaudio's ctc_decoder), beam + LM against greedy on a briefly trained tiny model,
and evaluate.py with decoding.strategy=beam."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import ROOT
from data_prep.build_lm import build_lm
from quartznet.decoding import BeamSearchDecoder, build_lexicon, collect_log_probs, greedy_errors, read_words, score
from quartznet.models import CTCModel

pytest.importorskip("flashlight.lib.text", reason="beam search needs flashlight-text")

VOCABULARY = [" ", *"abcdefghijklmnopqrstuvwxyz", "'"]
SENTENCES = ["the cat sat", "the dog sat down", "a cat ran", "the cat ran down", "a dog sat", "dog ran"]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed for speech")


def read_arpa(path: Path) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """log10 probabilities and backoff weights of every n-gram of an ARPA file."""
    logp, backoff = {}, {}
    order = 0
    for line in path.read_text().splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1:line.index("-")])
        elif order and line.strip() and not line.startswith("\\"):
            fields = line.split("\t")
            gram = tuple(fields[1].split())
            logp[gram] = float(fields[0])
            if len(fields) > 2:
                backoff[gram] = float(fields[2])
    return logp, backoff


def probability(gram: tuple[str, ...], logp: dict, backoff: dict) -> float:
    """P(gram[-1] | gram[:-1]) as an ARPA reader computes it (back off until the n-gram is known)."""
    if gram in logp:
        return 10 ** logp[gram]
    return 10 ** backoff.get(gram[:-1], 0.0) * probability(gram[1:], logp, backoff)


def test_unigram_arpa_sums_to_one_and_a_bigram_loads_in_the_decoder(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    logp, _ = read_arpa(build_lm([corpus], tmp_path / "uni.arpa", order=1))
    words = {w for s in SENTENCES for w in s.split()}
    assert set(logp) == {(w,) for w in words} | {("<s>",), ("</s>",), ("<unk>",)}
    assert math.isclose(sum(10 ** logp[(w,)] for w in words | {"</s>"}), 1.0, abs_tol=1e-3)

    bigram = build_lm([corpus], tmp_path / "bi.arpa", order=2)  # KenLM reads models of order 2 and up
    lexicon = build_lexicon(read_words(bigram), VOCABULARY, tmp_path / "lexicon.txt")
    decoder = BeamSearchDecoder(VOCABULARY, len(VOCABULARY), lm_path=bigram, lexicon_path=lexicon)
    log_probs = torch.randn(2, 40, len(VOCABULARY) + 1).log_softmax(-1)
    for text in decoder.decode(log_probs, torch.tensor([40, 25])):
        assert set(text.split()) <= words


@pytest.mark.parametrize("order, unit", [(3, "word"), (4, "char")])
def test_higher_order_arpa_is_normalised_in_every_context(tmp_path, order, unit):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    path = build_lm([corpus], tmp_path / "lm.arpa", order=order, unit=unit)
    logp, backoff = read_arpa(path)
    predicted = [g[0] for g in logp if len(g) == 1 and g[0] not in ("<s>", "<unk>")]
    contexts = {g[:-1] for g in logp if len(g) > 1} | {("<s>", "zzz")}  # seen contexts plus an unseen one
    for context in contexts:
        total = sum(probability(context + (w,), logp, backoff) for w in predicted)
        assert math.isclose(total, 1.0, abs_tol=1e-3), context
    # the LM loads through KenLM: lexicon-free decoding with the character model
    if unit == "char":
        decoder = BeamSearchDecoder(VOCABULARY, len(VOCABULARY), lm_path=path, lm_weight=1.0)
        assert len(decoder.decode(torch.randn(1, 30, len(VOCABULARY) + 1).log_softmax(-1), torch.tensor([30]))) == 1


def test_decoder_tokens_map_space_to_the_word_separator_and_reject_bad_vocabularies():
    from quartznet.decoding import decoder_tokens

    tokens = decoder_tokens(VOCABULARY, len(VOCABULARY))
    assert tokens[0] == "|" and tokens[1:28] == VOCABULARY[1:] and tokens[-1] == "<blank>"
    with pytest.raises(ValueError, match="blank last"):
        decoder_tokens(VOCABULARY, 0)
    with pytest.raises(ValueError, match="'\\|'"):
        decoder_tokens(VOCABULARY + ["|"], len(VOCABULARY) + 1)
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        BeamSearchDecoder(VOCABULARY, len(VOCABULARY), lm_path="missing.arpa")


EPOCHS = 40  # seed 0: greedy WER 2/28 on its training set here; 60 epochs reach 0 (the test would be moot)


@pytest.fixture(scope="module")
def briefly_trained(tmp_path_factory) -> tuple[CTCModel, Path]:
    """A tiny model trained on a small synthetic set until greedy decoding is imperfect but close."""
    from data_prep.synthetic import generate_asr
    from test_training import asr_data, fit, subset_manifest, tiny_asr_config

    folder = tmp_path_factory.mktemp("beam")
    corpus = generate_asr(folder, seed=5, train=12, dev=2, test=2, min_words=2, max_words=3, jobs=2)
    manifest = subset_manifest(corpus["train"], folder / "train_abs.json", 12)
    pl.seed_everything(0)
    model = CTCModel(tiny_asr_config())
    fit(model, asr_data(manifest, model.vocabulary), max_epochs=EPOCHS, check_val_every_n_epoch=EPOCHS)
    return model.eval(), manifest


@needs_espeak
def test_beam_search_with_a_reference_lm_beats_or_equals_greedy(briefly_trained, tmp_path):
    model, manifest = briefly_trained
    log_probs, references = collect_log_probs(model, manifest)
    greedy = greedy_errors(model, log_probs, references)
    print(f"greedy WER {greedy.wer:.3f}")
    assert 0 < greedy.wer < 0.9, "the test needs a model whose greedy output has some, not only, errors"

    lm = build_lm([manifest], tmp_path / "lm.arpa", order=2)
    lexicon = build_lexicon(read_words(manifest), model.vocabulary, tmp_path / "lexicon.txt")
    decoder = BeamSearchDecoder(model.vocabulary, model.blank_id, lm_path=lm, lexicon_path=lexicon, lm_weight=1.0)
    beam = score(decoder, log_probs, references)
    print(f"beam WER {beam.wer:.3f}")
    assert beam.wer <= greedy.wer

    char_lm = build_lm([manifest], tmp_path / "char.arpa", order=5, unit="char")  # lexicon-free mode
    lexicon_free = score(BeamSearchDecoder(model.vocabulary, model.blank_id, lm_path=char_lm, lm_weight=0.5),
                         log_probs, references)
    print(f"lexicon-free beam WER {lexicon_free.wer:.3f}")
    assert lexicon_free.wer <= greedy.wer


@needs_espeak
def test_evaluate_py_with_beam_search_runs_end_to_end(briefly_trained, tmp_path):
    model, manifest = briefly_trained
    checkpoint = model.save_to(tmp_path / "tiny.nemo")
    lm = build_lm([manifest], tmp_path / "lm.arpa", order=3)
    lexicon = build_lexicon(read_words(lm), model.vocabulary, tmp_path / "lexicon.txt")
    command = [sys.executable, str(ROOT / "evaluate.py"), f"checkpoint={checkpoint}", f"manifest={manifest}",
               f"output_dir={tmp_path / 'out'}", "num_workers=0", "device=cpu", "decoding.strategy=beam",
               f"decoding.lm_path={lm}", f"decoding.lexicon_path={lexicon}", "decoding.beam_size=8"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WER:" in done.stdout
    words = set(read_words(lexicon))
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.json").read_text().splitlines()]
    assert len(rows) == 12 and all(set(row["pred_text"].split()) <= words for row in rows)


def test_one_factory_turns_decoding_options_into_a_decoder(briefly_trained, monkeypatch):
    import quartznet.decoding as decoding
    from quartznet.common.errors import ConfigError, UserError

    model, _ = briefly_trained
    assert decoding.make_decoder(model, "greedy") == model.decode
    log_probs = torch.log_softmax(torch.randn(1, 40, len(model.vocabulary) + 1), -1)
    beam = decoding.make_decoder(model, "beam", beam_size=8)
    assert isinstance(beam(log_probs, torch.tensor([40]))[0], str)
    with pytest.raises(ConfigError, match="decoding strategy 'best'"):
        decoding.make_decoder(model, "best")

    def no_flashlight(*args, **kwargs):
        raise ImportError("beam search needs flashlight-text: pip install flashlight-text")

    monkeypatch.setattr(decoding, "BeamSearchDecoder", no_flashlight)
    with pytest.raises(UserError, match="--beam-size/--lm/--lexicon: beam search needs flashlight-text"):
        decoding.make_decoder(model, "beam", options="--beam-size/--lm/--lexicon")
