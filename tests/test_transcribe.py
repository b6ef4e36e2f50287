"""transcribe: formats and sample rates, word timestamps, chunked long audio, the CLI (espeak-ng speech)."""

from __future__ import annotations

import json
import shutil

import jiwer
import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile
import torch
import torchaudio

from conftest import randomize_batchnorm, tiny_ctc_config
from quartznet.data.audio import load_audio
from quartznet.data.manifest import read_manifests, write_manifest
from quartznet.long_audio import chunked_log_probs
from quartznet.models import CTCModel
from quartznet.transcribe import AudioItem, inference_settings, iter_transcriptions, main, transcribe, transcribe_texts
from test_training import asr_data, fit, subset_manifest, tiny_asr_config

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed for speech (make setup installs it)")


SILENCE_SAMPLES = 16000  # 1 s


@pytest.fixture(scope="module")
def overfit(tmp_path_factory) -> tuple[CTCModel, list]:
    """A tiny model that has memorised 4 espeak-ng utterances (WER 0 on them), and those utterances.

    It also trains on an 8 kHz-band copy of each and on copies after 1 s and 2 s of digital silence
    (`silence{i}.wav`, `silence2{i}.wav`)."""
    from data_prep.synthetic import generate_asr

    folder = tmp_path_factory.mktemp("asr")
    corpus = generate_asr(folder, seed=3, train=4, dev=1, test=1, min_words=2, max_words=3, jobs=2)
    few = subset_manifest(corpus["train"], folder / "few.json", 4)
    entries = read_manifests(few)
    # Telephone-band copies in training too: a model that memorised 4 full-band recordings reads an 8 kHz
    # file differently, and this test is about the resampling in transcribe, not about that.
    rows = []
    for i, entry in enumerate(entries):
        wave = load_audio(entry.audio_filepath)
        # and the copies after silence are what the timestamp test decodes.
        variants = {"": wave, "narrow": torchaudio.functional.resample(torchaudio.functional.resample(wave, 16000, 8000), 8000, 16000),
                    "silence": torch.cat([torch.zeros(SILENCE_SAMPLES), wave]),
                    "silence2": torch.cat([torch.zeros(2 * SILENCE_SAMPLES), wave])}
        for name, audio in variants.items():
            path = folder / f"{name}{i}.wav" if name else entry.audio_filepath
            if name:
                soundfile.write(path, audio.numpy(), 16000)
            rows.append({"audio_filepath": str(path), "duration": audio.shape[0] / 16000, "text": entry.text})
    both = write_manifest(folder / "both.json", rows)
    pl.seed_everything(0)
    model = CTCModel(tiny_asr_config())
    fit(model, asr_data(both, model.vocabulary), max_epochs=150, check_val_every_n_epoch=150)
    return model.eval(), entries


def test_transcribe_texts_gives_the_texts_and_leaves_the_model_as_it_was(overfit):
    model, entries = overfit
    model.train()
    texts = transcribe_texts(model, [e.audio_filepath for e in entries], batch_size=3)  # a full and a partial batch
    assert texts == [e.text for e in entries]
    assert model.training
    model.eval()


def test_wav_flac_stereo_44k_and_8k_give_the_text_of_the_16k_original(overfit, tmp_path):
    model, entries = overfit
    original = entries[0].audio_filepath
    wave = load_audio(original)
    stereo = torchaudio.functional.resample(wave, 16000, 44100)
    soundfile.write(tmp_path / "mono16k.wav", wave.numpy(), 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "mono16k.flac", wave.numpy(), 16000)
    soundfile.write(tmp_path / "stereo44k.wav", torch.stack([stereo, 0.8 * stereo], 1).numpy(), 44100)
    soundfile.write(tmp_path / "mono8k.flac", torchaudio.functional.resample(wave, 16000, 8000).numpy(), 8000)
    names = ["mono16k.wav", "mono16k.flac", "stereo44k.wav", "mono8k.flac"]
    rows = transcribe(model, [original] + [tmp_path / n for n in names], batch_size=2)
    assert [r["text"] for r in rows] == [entries[0].text] * 5


def test_timestamps_are_monotonic_inside_the_audio_and_spell_the_text(overfit):
    model, entries = overfit
    for row, entry in zip(transcribe(model, [e.audio_filepath for e in entries], timestamps=True), entries):
        words = row["words"]
        assert " ".join(w["word"] for w in words) == row["text"] == entry.text
        times = [t for w in words for t in (w["start"], w["end"])]
        assert times == sorted(times) and all(w["start"] < w["end"] for w in words)
        assert times[0] >= 0 and times[-1] <= entry.duration + 0.02


def speech_onset(wave: torch.Tensor) -> float:
    """Seconds before the first 10 ms frame whose RMS exceeds a tenth of the loudest frame's."""
    frames = wave[: wave.shape[0] // 160 * 160].view(-1, 160)
    rms = frames.pow(2).mean(1).sqrt()
    return int(torch.nonzero(rms > 0.1 * rms.max())[0]) * 0.01


def test_words_after_a_known_silence_start_after_it_and_move_with_it(overfit):
    model, entries = overfit
    folder = entries[0].audio_filepath.parents[4]  # the corpus folder: LibriSpeech/<split>/<spk>/<chapter>/<file>
    silence = SILENCE_SAMPLES / 16000
    for i, entry in enumerate(entries):
        once = folder / f"silence{i}.wav"  # 1 s of digital silence, the recording's own pause, the speech
        first, second = transcribe(model, [once, folder / f"silence2{i}.wav"], timestamps=True)
        assert first["text"] == second["text"] == entry.text
        onset = speech_onset(load_audio(once))
        # A CTC model may fire a character a little before its sound: this tiny memorising model fires up
        # to 0.1 s before the end of the digital silence, anchored on the noise floor that follows it.
        assert silence - 0.15 <= first["words"][0]["start"] <= onset + 0.1
        # One more second of silence moves every word by one second, to the output frame (20 ms).
        for a, b in zip(first["words"], second["words"], strict=True):
            assert abs(b["start"] - a["start"] - silence) <= 0.021 and abs(b["end"] - a["end"] - silence) <= 0.021


def long_recording(entries, seconds: float) -> torch.Tensor:
    """espeak-ng sentences one after another with short pauses, at least `seconds` long."""
    pieces, total, index = [], 0, 0
    while total < seconds * 16000:
        wave = load_audio(entries[index % len(entries)].audio_filepath)
        pieces += [wave, torch.zeros(3200)]
        total += wave.shape[0] + 3200
        index += 1
    return torch.cat(pieces)


def test_chunked_log_probs_equal_whole_file_log_probs(overfit):
    """A random tiny QuartzNet 5x5 (receptive field < 2 s) with 2 s of context: every stitched frame is the
    whole-file frame, including the mel features computed piecewise and normalised over the whole file."""
    _, entries = overfit
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config(se=True))
    randomize_batchnorm(model)
    audio = long_recording(entries, 45.0)
    with inference_settings(model), torch.inference_mode():
        whole, whole_len, _ = model(input_signal=audio.unsqueeze(0), input_signal_length=torch.tensor([audio.shape[0]]))
        whole = whole[0, :whole_len[0]]
        for chunk, batch_size in ((5.0, 3), (7.3, 16)):  # an odd chunk length exercises the frame rounding
            stitched = chunked_log_probs(model, audio, chunk, 2.0, batch_size)
            assert stitched.shape == whole.shape
            assert (stitched - whole).abs().max().item() < 1e-4


def test_chunked_transcription_matches_whole_file_transcription(overfit, tmp_path):
    """Streamed from disk in windows: a 16 kHz FLAC, a 44.1 kHz WAV (resampled block by block) and a
    40 s slice of a manifest entry (offset/duration) give the words of whole-file decoding."""
    model, entries = overfit
    audio = long_recording(entries, 60.0)
    soundfile.write(tmp_path / "long.flac", audio.numpy(), 16000)
    soundfile.write(tmp_path / "long44k.wav", torchaudio.functional.resample(audio, 16000, 44100).numpy(), 44100)
    for item in (tmp_path / "long.flac", tmp_path / "long44k.wav",
                 AudioItem(str(tmp_path / "long.flac"), offset=9.6, duration=40.0)):
        whole = transcribe(model, [item], chunk_seconds=1000.0)[0]["text"]
        chunked = transcribe(model, [item], chunk_seconds=5.0, overlap_seconds=2.0)[0]["text"]
        wer = jiwer.wer(whole, chunked)
        print(f"{item}: chunked vs whole-file WER {wer:.4f} over {len(whole.split())} words")
        assert wer == 0.0 and len(whole.split()) >= 20


def test_cli_writes_json_lines_skips_bad_files_and_fails_when_nothing_is_readable(overfit, tmp_path, capsys):
    model, entries = overfit
    checkpoint = model.save_to(tmp_path / "model.nemo")
    folder = tmp_path / "audio" / "nested"
    folder.mkdir(parents=True)
    for i, entry in enumerate(entries[:2]):
        shutil.copy(entry.audio_filepath, folder / f"{i}.wav")
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": str(entries[2].audio_filepath)}) + "\n")
    out = tmp_path / "out.jsonl"
    code = main([str(checkpoint), str(tmp_path / "audio"), str(manifest), "--timestamps", "--output", str(out),
                 "--batch-size", "2", "--device", "cpu"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == [entries[0].text, entries[1].text, entries[2].text]
    assert all(r["words"] for r in rows)
    err = capsys.readouterr().err
    assert "broken.wav" in err and "transcribed 3 of 4 inputs (1 skipped)" in err

    # a path on the command line that does not exist fails before any work; unreadable files are skipped,
    # and a run with nothing readable is an error that leaves an existing output as it was
    with pytest.raises(SystemExit) as stop:
        main([str(checkpoint), str(folder / "broken.wav"), str(tmp_path / "missing.wav")])
    printed = capsys.readouterr()
    assert stop.value.code == 1 and printed.out == "" and "missing.wav: file not found" in printed.err
    with pytest.raises(SystemExit) as stop:
        main([str(checkpoint), str(folder / "broken.wav"), "--output", str(out)])
    printed = capsys.readouterr()
    assert stop.value.code == 1 and "error: transcribed 0 of 1 inputs" in printed.err
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == [e.text for e in entries[:3]]


def test_iter_transcriptions_yields_each_batch_when_ready_and_leaves_the_model_alone(overfit, monkeypatch):
    import quartznet.transcribe as module

    model, entries = overfit
    paths = [e.audio_filepath for e in entries]
    loaded, real_load = [], module.load_audio
    monkeypatch.setattr(module, "load_audio", lambda path, *a, **k: loaded.append(path) or real_load(path, *a, **k))
    model.train()
    rows = iter_transcriptions(model, paths, batch_size=2)
    first = next(rows)
    assert len(loaded) == 2 and first["text"] == entries[0].text  # the first batch only
    assert model.training and not torch.is_inference_mode_enabled()  # not while the generator is suspended
    assert [first, *rows] == transcribe(model, paths, batch_size=2)
    model.eval()


def test_silence_gives_no_words():
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config())
    with inference_settings(model), torch.inference_mode():
        log_probs, _, _ = model(input_signal=torch.zeros(1, 16000))
    best = np.full(log_probs.shape[1], model.blank_id).tolist()
    from quartznet.transcribe import word_timestamps

    assert word_timestamps(best, model, 0.02) == []


def test_cli_beam_search_with_a_lexicon_gives_the_lexicon_words(overfit, tmp_path, capsys):
    pytest.importorskip("flashlight.lib.text", reason="beam search needs flashlight-text")
    from quartznet.decoding import build_lexicon

    model, entries = overfit
    checkpoint = model.save_to(tmp_path / "model.nemo")
    lexicon = build_lexicon(sorted({w for e in entries for w in e.text.split()}), model.vocabulary, tmp_path / "lexicon.txt")
    assert main([str(checkpoint), *[str(e.audio_filepath) for e in entries], "--lexicon", str(lexicon), "--beam-size", "8"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == [e.text for e in entries]
