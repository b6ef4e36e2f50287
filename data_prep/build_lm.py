"""Build an n-gram language model in ARPA format from a text corpus, in pure Python, for beam search
with `quartznet.decoding.BeamSearchDecoder` (torchaudio's ctc_decoder loads it through KenLM).

Input: text files with one sentence per line, or manifests (`.json`: one JSON object per line, the
`text` field is used). Text is lower-cased and split on whitespace.

Smoothing: interpolated Kneser-Ney with one absolute discount per order, D = n1 / (n1 + 2 n2) from
the count-of-counts. The highest order uses raw counts, lower orders continuation counts (how many
different words precede the n-gram; n-grams starting with <s> keep raw counts, nothing precedes
them). The unigram distribution is not discounted, so every model sums to one over the vocabulary
plus </s>; <unk> is written with log10 probability -99 (the model gives unknown words no mass).

Units:
  word  a word n-gram model, for lexicon decoding (`lexicon_path=...`, a lexicon built from the same
        words with `python -m quartznet.decoding lexicon`).
  char  a character n-gram model over the decoder's tokens ("|" between words), for lexicon-free
        decoding: flashlight's lexicon-free decoder scores every emitted token with the LM, so a word
        model there would see only unknown "words".

    python -m data_prep.build_lm data/synthetic_asr/train.json --order 3 --out runs/lm/train_3gram.arpa
    python -m data_prep.build_lm sentences.txt --order 6 --unit char --out runs/lm/char_6gram.arpa

Real runs (LibriSpeech) use the official models from https://www.openslr.org/11/ instead:
3-gram.pruned.1e-7.arpa.gz (the usual first-pass LM), 4-gram.arpa.gz (the largest) and
librispeech-lexicon.txt. Their words are upper case; the lexicon builder spells each word with the
model's lower-case characters, so the ARPA can be used as it is once decompressed (gunzip; KenLM's
`build_binary lm.arpa lm.bin` makes it load much faster). librispeech-lexicon.txt gives phonemes,
which a character model cannot use: take only its words (the first column) for the lexicon:

    gunzip -k 3-gram.pruned.1e-7.arpa.gz
    python -m quartznet.decoding lexicon --words librispeech-lexicon.txt --out lexicon.txt
    python evaluate.py checkpoint=QuartzNet15x5Base-En.nemo split=dev-other decoding.strategy=beam \\
        decoding.lm_path=3-gram.pruned.1e-7.arpa decoding.lexicon_path=lexicon.txt
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from data_prep.common import PrepError, parse_args_with_debug, prep_errors, run_main
from quartznet.common.cli import at_least
from quartznet.common.outputs import check_writable, replaced_atomically
from quartznet.data.manifest import manifest_rows, text_field, text_lines

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
WORD_SEPARATOR = "|"  # the token flashlight expects between words (see quartznet.decoding)
NO_PROBABILITY = -99.0  # ARPA's conventional log10 "never" for <s> as a predicted word and for <unk>

Gram = tuple[str, ...]


def read_sentences(paths: Sequence[str | Path]) -> Iterator[str]:
    """Lower-cased sentences from text files (a line each) or manifests (`.json`, the `text` field)."""
    for path in map(Path, paths):
        if not path.is_file():
            raise PrepError(f"{path}: no such corpus file; give text files (a sentence per line) or manifests")
        if path.suffix == ".json":
            lines: Iterable[str] = (text_field(row, "text", where) for where, row in manifest_rows(path))
        else:
            lines = (line for _, line in text_lines(path))
        for line in lines:
            line = " ".join(line.lower().split())
            if line:
                yield line


def sentence_units(sentence: str, unit: str) -> list[str]:
    if unit == "word":
        return sentence.split()
    return list(sentence.replace(" ", WORD_SEPARATOR))


def count_ngrams(sentences: Iterable[list[str]], order: int) -> list[Counter[Gram]]:
    """Raw counts of every n-gram up to `order`, sentences padded with <s> ... </s>."""
    counts: list[Counter[Gram]] = [Counter() for _ in range(order)]
    for units in sentences:
        padded = [BOS] + units + [EOS]
        for n in range(1, order + 1):
            for start in range(len(padded) - n + 1):
                gram = tuple(padded[start:start + n])
                if gram != (BOS,):  # <s> is never predicted
                    counts[n - 1][gram] += 1
    return counts


def kneser_ney_counts(raw: list[Counter[Gram]]) -> list[Counter[Gram]]:
    """The counts each order is estimated from: raw at the top order, continuation counts below."""
    order = len(raw)
    adjusted = [Counter() for _ in range(order)]
    adjusted[-1] = Counter(raw[-1])
    for n in range(order - 1, 0, -1):  # n-grams of length n get the number of distinct left extensions
        for gram in raw[n]:
            adjusted[n - 1][gram[1:]] += 1
        for gram, count in raw[n - 1].items():
            if gram[0] == BOS:
                adjusted[n - 1][gram] = count
    return adjusted


def discount(counts: Counter[Gram]) -> float:
    """Absolute discount from the count-of-counts (Ney's estimate), kept inside (0, 1)."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5  # too little data for the estimate
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)


def estimate(raw: list[Counter[Gram]]) -> tuple[list[dict[Gram, float]], list[dict[Gram, float]]]:
    """log10 probabilities of every seen n-gram (interpolated with the lower orders) and log10 backoff
    weights of every context; the ARPA reader's backoff then reproduces the interpolated model exactly."""
    order = len(raw)
    counts = kneser_ney_counts(raw) if order > 1 else raw
    total = sum(counts[0].values())
    probabilities: list[dict[Gram, float]] = [{gram: count / total for gram, count in counts[0].items()}]
    backoffs: list[dict[Gram, float]] = [dict() for _ in range(order)]
    for n in range(2, order + 1):
        d = discount(counts[n - 1])
        context_total: dict[Gram, int] = defaultdict(int)
        context_types: dict[Gram, int] = defaultdict(int)
        for gram, count in counts[n - 1].items():
            context_total[gram[:-1]] += count
            context_types[gram[:-1]] += 1
        # the mass the discount frees in a context goes to the lower order: gamma(h) = D * types / total
        gamma = {h: d * context_types[h] / context_total[h] for h in context_total}
        lower = probabilities[n - 2]
        current: dict[Gram, float] = {}
        for gram, count in counts[n - 1].items():
            h = gram[:-1]
            current[gram] = (count - d) / context_total[h] + gamma[h] * _lower_probability(gram[1:], lower, probabilities, backoffs)
        probabilities.append(current)
        backoffs[n - 2] = gamma
    log_probabilities = [{gram: math.log10(p) for gram, p in level.items()} for level in probabilities]
    log_backoffs = [{gram: math.log10(b) for gram, b in level.items()} for level in backoffs]
    return log_probabilities, log_backoffs


def _lower_probability(gram: Gram, lower: dict[Gram, float], probabilities: list[dict[Gram, float]],
                       backoffs: list[dict[Gram, float]]) -> float:
    """P(gram[-1] | gram[:-1]) under the model of order len(gram), backing off where it was not seen."""
    if gram in lower:
        return lower[gram]
    n = len(gram)  # unseen: backoff(context) * P(word | shorter context)
    return backoffs[n - 2].get(gram[:-1], 1.0) * _lower_probability(gram[1:], probabilities[n - 2], probabilities, backoffs)


def write_arpa(path: str | Path, log_probabilities: list[dict[Gram, float]], log_backoffs: list[dict[Gram, float]]) -> Path:
    path = Path(path)
    order = len(log_probabilities)
    unigrams = dict(log_probabilities[0])
    unigrams[(BOS,)] = NO_PROBABILITY
    unigrams[(UNK,)] = NO_PROBABILITY
    levels = [unigrams] + log_probabilities[1:]
    with replaced_atomically(path) as temporary, temporary.open("w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        for n, level in enumerate(levels, 1):
            out.write(f"ngram {n}={len(level)}\n")
        for n, level in enumerate(levels, 1):
            out.write(f"\n\\{n}-grams:\n")
            for gram in sorted(level):
                line = f"{level[gram]:.6f}\t{' '.join(gram)}"
                if n < order and gram in log_backoffs[n - 1]:
                    line += f"\t{log_backoffs[n - 1][gram]:.6f}"
                out.write(line + "\n")
        out.write("\n\\end\\\n")
    return path


def build_lm(corpus: Sequence[str | Path], out: str | Path, order: int = 3, unit: str = "word") -> Path:
    """Read the corpus, estimate the model and write it; returns the ARPA path."""
    if order < 1:
        raise PrepError(f"--order must be at least 1, got {order}")
    if unit not in ("word", "char"):
        raise PrepError(f"--unit must be 'word' or 'char', got {unit!r}")
    check_writable(out, corpus)
    sentences = [sentence_units(s, unit) for s in read_sentences(corpus)]
    if not sentences:
        raise PrepError(f"{', '.join(map(str, corpus))}: no sentences found; the LM needs text")
    log_probabilities, log_backoffs = estimate(count_ngrams(sentences, order))
    return write_arpa(out, log_probabilities, log_backoffs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="+", help="text files (a sentence per line) or manifests (.json, 'text')")
    parser.add_argument("--out", required=True, help="the ARPA file to write")
    parser.add_argument("--order", type=at_least(1), default=3, help="n of the n-grams (default 3; KenLM, hence the decoder, needs 2 or more)")
    parser.add_argument("--unit", choices=("word", "char"), default="word",
                        help="word: for lexicon decoding; char: for lexicon-free decoding (default word)")
    args = parse_args_with_debug(parser, argv)
    with prep_errors(args.debug, as_program=argv is None):
        path = build_lm(args.corpus, args.out, args.order, args.unit)
        print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
