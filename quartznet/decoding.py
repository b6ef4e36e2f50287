"""CTC beam search with an optional n-gram language model, through torchaudio's `ctc_decoder`
(flashlight-text's decoder; KenLM reads ARPA or binary LM files), and a grid search over its weights.

Token mapping. flashlight needs a word-separator ("silence") token and a blank token. Our labels are
used as they are, except the space, which becomes "|" (flashlight's word separator); the blank is
appended last as "<blank>", so token i of the decoder is label i of the model and the blank keeps its
index len(vocabulary). Decoded tokens are mapped back ("|" -> " ").

Modes:
  lexicon       `lexicon_path` given: words are restricted to the lexicon ("word<TAB>c h a r s |" per
                line, see `build_lexicon`) and the LM, if any, is a word LM (`data_prep.build_lm`, or
                the LibriSpeech ones; see docs/recipes.md).
  lexicon-free  no lexicon: any character sequence; flashlight then scores every emitted token with
                the LM, so the LM must be a character LM over these tokens (`build_lm --unit char`).

    python -m quartznet.decoding lexicon --words data/synthetic_asr/train.json --out runs/lm/lexicon.txt
    python -m quartznet.decoding grid --model runs/demo_asr/model.nemo --manifest data/synthetic_asr/dev.json \\
        --lm runs/lm/train_3gram.arpa --lexicon runs/lm/lexicon.txt
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from quartznet.common.cli import at_least, resolve_device
from quartznet.common.errors import ConfigError, InputError, MissingInputError, UserError, user_errors
from quartznet.common.metrics import ErrorCounts, utterance_errors
from quartznet.common.outputs import atomic_write_text, check_writable, replaced_atomically
from quartznet.data.datasets import collate_asr
from quartznet.data.manifest import manifest_rows, text_field, text_lines
from quartznet.models import CTCModel
from quartznet.network.heads import LABELS, Decode
from quartznet.tasks import load_transcriber
from quartznet.tasks.evaluation import asr_dataset, utterance_outputs

log = logging.getLogger(__name__)

WORD_SEPARATOR = "|"
BLANK_TOKEN = "<blank>"
UNKNOWN_WORD = "<unk>"


def decoder_tokens(vocabulary: Sequence[str], blank_id: int) -> list[str]:
    """The decoder's token list for a model's labels (space -> "|", blank appended last)."""
    if blank_id != len(vocabulary):
        raise InputError(f"beam search expects the blank last (index {len(vocabulary)}), the model has it at {blank_id}")
    if " " not in vocabulary:
        raise InputError("beam search needs a space label to find word boundaries; the vocabulary has none")
    for reserved in (WORD_SEPARATOR, BLANK_TOKEN):
        if reserved in vocabulary:
            raise InputError(f"the vocabulary contains {reserved!r}, which the decoder reserves; rename that label")
    return [WORD_SEPARATOR if label == " " else label for label in vocabulary] + [BLANK_TOKEN]


def _spell(word: str, labels: set[str]) -> list[str] | None:
    """A word as model labels; letters missing from the labels are tried in lower case (the official
    LibriSpeech LMs are upper case, the models lower case). None when the word cannot be spelled."""
    spelling = []
    for char in word:
        if char not in labels:
            char = char.lower()
        if char not in labels or char == " ":
            return None
        spelling.append(char)
    return spelling or None


def build_lexicon(words: Iterable[str], vocabulary: Sequence[str], path: str | Path) -> Path:
    """Write a flashlight lexicon: each word spelled by its characters and ended with "|" (the word
    separator the decoder emits between words). Words the vocabulary cannot spell are left out."""
    labels = set(vocabulary)
    path = Path(path)
    written, skipped = 0, 0
    with replaced_atomically(path) as temporary, temporary.open("w", encoding="utf-8") as out:
        for word in dict.fromkeys(words):  # unique, first-seen order
            spelling = _spell(word, labels)
            if spelling is None:
                skipped += 1
                continue
            out.write(f"{word}\t{' '.join(spelling)} {WORD_SEPARATOR}\n")
            written += 1
        if not written:  # inside the block: an existing lexicon is kept
            raise InputError(f"{path}: no word could be spelled with the model's labels; check the word list's alphabet")
    if skipped:
        log.warning("%s: left out %d words with characters outside the vocabulary", path, skipped)
    return path


def read_words(path: str | Path) -> list[str]:
    """Words for a lexicon: an ARPA file's unigrams, a manifest's `text` words (`.json`), or the first
    column of a word list / pronunciation lexicon (librispeech-lexicon.txt). Files are streamed, so a
    multi-GB ARPA costs only its unigram section."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such word list (give an ARPA file, a manifest or a word list)")
    if path.suffix == ".json":
        return [word for where, row in manifest_rows(path) for word in text_field(row, "text", where).lower().split()]
    words: list[str] = []
    lines = (line for _, line in text_lines(path))
    first = next(lines, "")
    while first and (not first.strip() or first.startswith("#")):  # ARPA files may open with comments
        first = next(lines, "")
    if first.strip() == "\\data\\":
        for line in lines:  # skip to the unigrams, stop at the next section
            if line.strip() == "\\1-grams:":
                break
        for line in lines:
            fields = line.split()
            if not fields or fields[0].startswith("\\"):
                break
            if fields[1] not in ("<s>", "</s>", "<unk>"):
                words.append(fields[1])
        return words
    for line in itertools.chain([first], lines):
        if line.strip():
            words.append(line.split()[0])
    return words


def read_spellings(path: str | Path, tokens: Sequence[str]) -> dict[str, str]:
    """word -> its spelling as text, from a flashlight lexicon whose spellings use only `tokens` (the
    decoder's); an InputError naming `file:line` otherwise, before the decoder reads the file."""
    spellings, known = {}, set(tokens)
    for where, line in text_lines(path):
        parts = line.split()
        if len(parts) < 2:  # blank lines too: flashlight's reader refuses them, without saying where
            raise InputError(f"{where}: expected 'word<TAB>c h a r s |', got {line.strip()!r}")
        unknown = [token for token in parts[1:] if token not in known]
        if unknown:
            raise InputError(f"{where}: the spelling of {parts[0]!r} uses {unknown}, which the model's labels "
                             "lack; build the lexicon from this model (python -m quartznet.decoding lexicon --model)")
        spellings.setdefault(parts[0], "".join(t for t in parts[1:] if t != WORD_SEPARATOR))
    return spellings


# How the files KenLM reads begin: its binary format, and compressed ARPA (gzip, bzip2, xz).
LM_MAGICS = (b"mmap lm http://kheafield.com/code", b"\x1f\x8b", b"BZh", b"\xfd7zXZ")


def check_language_model(path: str | Path) -> None:
    """An InputError unless `path` looks like a file KenLM reads: a KenLM binary, a compressed file, or
    text with a `\\data\\` line in its first 4 KB (comments and blank lines may come first); said before
    KenLM itself reads it (its own errors come after a progress bar on stderr)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(LM_MAGICS) or b"\\data\\" in (line.strip() for line in head.splitlines()):
        return
    raise InputError(f"{path}: not a language model (an ARPA file begins with \\data\\, a KenLM binary with "
                     f"{LM_MAGICS[0].decode()!r}); python -m data_prep.build_lm writes one")


class BeamSearchDecoder:
    """CTC beam search over a model's log-probabilities, optionally with a KenLM n-gram LM.

    `lm_weight` scales the LM's log-probability (natural log), `word_score` is added per word (a
    positive value counters the LM's bias towards short outputs). `beam_threshold` prunes hypotheses
    more than that much below the best one.
    """

    def __init__(
        self, vocabulary: Sequence[str], blank_id: int, lm_path: str | Path | None = None,
        lexicon_path: str | Path | None = None, beam_size: int = 32, lm_weight: float = 0.5,
        word_score: float = 0.0, beam_threshold: float = 25.0,
    ) -> None:
        try:
            from torchaudio.models.decoder import ctc_decoder
        except ImportError as error:  # torchaudio imports flashlight-text only here
            raise ImportError("beam search needs flashlight-text: pip install flashlight-text") from error
        for name, value in (("lm_path", lm_path), ("lexicon_path", lexicon_path)):
            if value is not None and not Path(value).is_file():
                raise MissingInputError(f"{name}={value}: no such file (an LM: data_prep.build_lm; a lexicon: "
                                        "python -m quartznet.decoding lexicon)")
        if lm_path is not None:
            check_language_model(lm_path)
        self.tokens = decoder_tokens(vocabulary, blank_id)
        # lexicon mode reports whole lexicon words (the token path may end inside a word); they are
        # written as the model spells them, which differs from the LM's word form for upper-case LMs
        self._spellings = read_spellings(lexicon_path, self.tokens) if lexicon_path is not None else None
        with tempfile.TemporaryDirectory() as folder:
            lm_dict = None
            if lexicon_path is None and lm_path is not None:
                # Lexicon-free: the LM's "words" are our tokens. torchaudio's own token->LM dictionary
                # for this case scored every token as <unk> here (flashlight-text 0.0.7: the LM then
                # only shortened the output), so give it one whose index i is token i, read at construction.
                lm_dict = Path(folder) / "lm_dict.txt"
                lm_dict.write_text("\n".join([*self.tokens, UNKNOWN_WORD]) + "\n", encoding="utf-8")
            try:
                self._decoder = ctc_decoder(
                    lexicon=str(lexicon_path) if lexicon_path is not None else None, tokens=self.tokens,
                    lm=str(lm_path) if lm_path is not None else None, lm_dict=str(lm_dict) if lm_dict else None,
                    beam_size=beam_size, beam_threshold=beam_threshold, lm_weight=lm_weight, word_score=word_score,
                    blank_token=BLANK_TOKEN, sil_token=WORD_SEPARATOR, unk_word=UNKNOWN_WORD,
                )
            except (RuntimeError, ValueError) as error:  # KenLM's or flashlight's loader: the files, not the program
                reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
                given = {"language model": lm_path, "lexicon": lexicon_path}
                given = {kind: path for kind, path in given.items() if path is not None}
                raise InputError(f"{' and '.join(map(str, given.values()))}: the decoder cannot read this "
                                 f"{' and '.join(given)} ({reason}); an LM comes from python -m data_prep.build_lm, "
                                 "a lexicon from python -m quartznet.decoding lexicon") from error

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Best transcript per utterance of log_probs (B, T, V+1) with valid lengths (B,)."""
        emissions = log_probs.detach().float().cpu().contiguous()  # flashlight reads fp32 CPU memory
        hypotheses = self._decoder(emissions, lengths.detach().cpu().to(torch.int32))
        if self._spellings is not None:
            return [" ".join(self._spellings[w] for w in best[0].words) if best else "" for best in hypotheses]
        return [self._text(best[0].tokens.tolist()) if best else "" for best in hypotheses]

    def _text(self, token_ids: list[int]) -> str:
        # tokens come back with repeats merged and blanks removed; "|" is the space
        text = "".join(" " if self.tokens[i] == WORD_SEPARATOR else self.tokens[i] for i in token_ids)
        return " ".join(text.split())


STRATEGIES = ("greedy", "beam")


def make_decoder(
    model: CTCModel, strategy: str = "greedy", beam_size: int = 32, lm_path: str | Path | None = None,
    lexicon_path: str | Path | None = None, lm_weight: float = 0.5, word_score: float = 0.0,
    options: str = "decoding.strategy=beam",
) -> Decode:
    """The one way an application turns decoding options into a decoder: `strategy` "greedy" is the
    model's own decoding, "beam" a BeamSearchDecoder (an LM and lexicon when given). A missing
    flashlight-text is a UserError naming the `options` that asked for beam search and what to install."""
    if strategy == "greedy":
        return model.decode
    if strategy != "beam":
        raise ConfigError(f"decoding strategy {strategy!r}: choose one of {list(STRATEGIES)}")
    log.info("beam search: beam %s, LM %s (weight %s), lexicon %s, word score %s", beam_size, lm_path, lm_weight,
             lexicon_path, word_score)
    try:
        return BeamSearchDecoder(model.vocabulary, model.blank_id, lm_path=lm_path, lexicon_path=lexicon_path,
                                 beam_size=beam_size, lm_weight=lm_weight, word_score=word_score).decode
    except ImportError as error:
        raise UserError(f"{options}: {error}") from error


@dataclass
class GridPoint:
    lm_weight: float
    word_score: float
    errors: ErrorCounts

    @property
    def wer(self) -> float:
        return self.errors.wer


def collect_log_probs(
    model: CTCModel, manifest: str | Path, batch_size: int = 32, device: torch.device = torch.device("cpu"),
    amp: bool = False,
) -> tuple[list[torch.Tensor], list[str]]:
    """Per-utterance log-probabilities (T_i, V+1) on the CPU and the normalised references, in
    manifest order: computed once so that many decoder settings can be scored without the network."""
    dataset = asr_dataset(model, manifest)
    outputs = dict(utterance_outputs(model, dataset, collate_asr, batch_size, num_workers=0, device=device, amp=amp))
    indices = sorted(outputs)
    references = [dataset.tokenizer.decode(dataset.tokens[i].tolist()) for i in indices]
    return [outputs[i] for i in indices], references


def score(decoder: BeamSearchDecoder, log_probs: Sequence[torch.Tensor], references: Sequence[str]) -> ErrorCounts:
    total = ErrorCounts()
    for emission, reference in zip(log_probs, references):
        hypothesis = decoder.decode(emission[None], torch.tensor([emission.shape[0]]))[0]
        total = total + utterance_errors(reference, hypothesis)
    return total


def grid_search(
    vocabulary: Sequence[str], blank_id: int, log_probs: Sequence[torch.Tensor], references: Sequence[str],
    lm_weights: Sequence[float], word_scores: Sequence[float], lm_path: str | Path | None = None,
    lexicon_path: str | Path | None = None, beam_size: int = 32,
) -> list[GridPoint]:
    """WER of every (lm_weight, word_score) pair, best first (ties: the smaller LM weight, then word score)."""
    points = []
    for lm_weight, word_score in itertools.product(lm_weights, word_scores):
        decoder = BeamSearchDecoder(vocabulary, blank_id, lm_path, lexicon_path, beam_size, lm_weight, word_score)
        points.append(GridPoint(lm_weight, word_score, score(decoder, log_probs, references)))
        log.info("lm_weight %.2f word_score %.2f: WER %.2f%%", lm_weight, word_score, 100 * points[-1].wer)
    return sorted(points, key=lambda p: (p.wer, p.lm_weight, p.word_score))


def greedy_errors(model: CTCModel, log_probs: Sequence[torch.Tensor], references: Sequence[str]) -> ErrorCounts:
    total = ErrorCounts()
    for emission, reference in zip(log_probs, references):
        total = total + utterance_errors(reference, model.decode(emission[None], torch.tensor([emission.shape[0]]))[0])
    return total


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from error


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", help="WER per (lm_weight, word_score) on a dev manifest, best first")
    grid.add_argument("--model", required=True, help="a .nemo or .ckpt CTC model")
    grid.add_argument("--manifest", required=True, help="the dev manifest to tune on")
    grid.add_argument("--lm", default=None, help="KenLM ARPA or binary file (word LM with --lexicon, char LM without)")
    grid.add_argument("--lexicon", default=None, help="flashlight lexicon (none: lexicon-free)")
    grid.add_argument("--lm-weights", type=_floats, default=_floats("0,0.25,0.5,0.75,1,1.5,2"))
    grid.add_argument("--word-scores", type=_floats, default=_floats("-1,0,1,2"))
    grid.add_argument("--beam-size", type=at_least(1), default=32)
    grid.add_argument("--batch-size", type=at_least(1), default=32)
    grid.add_argument("--device", default="cpu")
    grid.add_argument("--json", default=None, help="also write the table here")
    lexicon = commands.add_parser("lexicon", help="a flashlight lexicon from words (spelled by characters + '|')")
    lexicon.add_argument("--words", required=True, nargs="+",
                         help="word lists (first column), manifests (.json) or ARPA files (their unigrams)")
    lexicon.add_argument("--out", required=True)
    lexicon.add_argument("--model", default=None, help="take the alphabet from this model (default: space, a-z, ')")
    for command in (grid, lexicon):
        command.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors(args.debug, interrupted="interrupted; nothing was written"):
        if args.command == "lexicon":
            for path in args.words:
                if not Path(path).is_file():
                    raise UserError(f"--words {path}: file not found")
            check_writable(args.out, [*args.words, args.model])
            vocabulary = load_transcriber(args.model).vocabulary if args.model else LABELS
            words = [w for path in args.words for w in read_words(path)]
            print(f"wrote {build_lexicon(words, vocabulary, args.out)}")
            return

        device = resolve_device(args.device)  # every check that needs no model first
        for option, value in (("--manifest", args.manifest), ("--lm", args.lm), ("--lexicon", args.lexicon)):
            if value is not None and not Path(value).is_file():
                raise UserError(f"{option} {value}: file not found")
        if args.json:
            check_writable(args.json, [args.model, args.manifest, args.lm, args.lexicon])
        model = load_transcriber(args.model).to(device)
        log_probs, references = collect_log_probs(model, args.manifest, args.batch_size, device)
        greedy = greedy_errors(model, log_probs, references)
        points = grid_search(model.vocabulary, model.blank_id, log_probs, references, args.lm_weights,
                             args.word_scores, args.lm, args.lexicon, args.beam_size)
        print(f"{args.manifest}: {len(references)} utterances, greedy WER {100 * greedy.wer:.2f}%")
        print(f"{'lm_weight':>9} {'word_score':>10} {'WER':>7}")
        for p in points:
            print(f"{p.lm_weight:9.2f} {p.word_score:10.2f} {100 * p.wer:6.2f}%")
        if args.json:
            atomic_write_text(args.json, json.dumps({"greedy_wer": greedy.wer, "grid": [
                {"lm_weight": p.lm_weight, "word_score": p.word_score, "wer": p.wer} for p in points]}, indent=2))


if __name__ == "__main__":
    main()
