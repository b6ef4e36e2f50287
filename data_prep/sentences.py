"""The sentences of the synthetic ASR corpus: vocabulary, word order and spoken numbers.

Words come from the built-in list (data_prep/wordlist.txt) or the most frequent words of festival's
Wall Street Journal lexicon; they are drawn one by one (random order) or in the order of English, from
festival's part-of-speech trigram of the same text; `add_numbers` puts spoken numbers into a fraction
of the sentences. The sentences a corpus is made of are distinct, so dev and test sentences never
occur in train.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data_prep.common import PrepError

WORDLIST = Path(__file__).with_name("wordlist.txt")
# Festival's part-of-speech lexicon from the Wall Street Journal (Debian: festlex-poslex, installed with
# festival's English voices): a word list with frequencies, for corpora with a broad vocabulary.
WSJ_LEXICON = Path("/usr/share/festival/dicts/wsj.wp39.poslexR")
# Its companion, festival's part-of-speech trigram of the same text (the tagger's model): counts of tag
# triples, which give sentences the word order of English (`--word-order pos-trigram`).
WSJ_POS_TRIGRAM = Path("/usr/share/festival/dicts/wsj.wp39.tri.ngrambin")
RANDOM_ORDER, TAG_ORDER = "random", "pos-trigram"  # the values of --word-order
WORD_ORDERS = (RANDOM_ORDER, TAG_ORDER)


# --------------------------------------------------------------------------------------------- vocabulary


def load_words(path: Path = WORDLIST) -> list[str]:
    words = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    bad = [word for word in words if not re.fullmatch(r"[a-z']+", word)]
    if bad or len(set(words)) != len(words):
        raise PrepError(f"{path}: words must be unique and in lowercase a-z and apostrophe only (bad: {bad[:5]})")
    return words


_LEXICON_ENTRY = re.compile(r'^\("(?P<word>[^"]*)" \((?P<tags>.*)\) \(\) \)$')
_LEXICON_TAG = re.compile(r"\((?P<tag>\S+) (?P<log_p>-?[\d.]+)\)")


def lexicon_entries(path: Path = WSJ_LEXICON) -> list[tuple[str, list[tuple[str, float]]]]:
    """Festival's WSJ lexicon as (word, [(part-of-speech tag, ln P(word | tag)), ...]), numeric tags left out."""
    if not path.is_file():
        raise PrepError(
            f"{path} not found: --vocabulary needs festival's WSJ lexicon; install it with "
            "`sudo apt-get install festlex-poslex` (or `make speech-tools`) and rerun"
        )
    entries = []
    for line in path.read_text(encoding="latin-1").splitlines():
        match = _LEXICON_ENTRY.match(line.strip())
        if match:
            tags = [(tag["tag"], float(tag["log_p"])) for tag in _LEXICON_TAG.finditer(match["tags"])]
            entries.append((match["word"], [(tag, log_p) for tag, log_p in tags if tag.isalpha()]))
    return entries


def lexicon_vocabulary(size: int, path: Path = WSJ_LEXICON) -> tuple[list[str], list[float]]:
    """The `size` most frequent lowercase words (a-z, apostrophe) of festival's WSJ lexicon, and weights to
    draw them with: the square root of their frequency (common words come up often, rare ones still do).

    Each entry lists ln P(word | tag) per part-of-speech tag. A tag's rarest word was seen once, so
    count(tag) = 1 / min P(word | tag), and a word's count is the sum of P(word | tag) * count(tag) over
    its tags (they come out as integers to within 0.05 for 98% of the entries). Tags with a single word
    ("of", existential "there") have no rarest word; their words get the most frequent word's count.
    Capitalised entries (names), tokens with other characters, WSJ's negation token "n't" and entries
    under numeric pseudo-tags are left out.
    """
    entries = lexicon_entries(path)
    rarest: dict[str, float] = {}
    sizes: dict[str, int] = defaultdict(int)
    for _, tags in entries:
        for tag, log_p in tags:
            rarest[tag] = min(rarest.get(tag, 0.0), log_p)
            sizes[tag] += 1
    counts: dict[str, float] = defaultdict(float)
    single: set[str] = set()
    for word, tags in entries:
        for tag, log_p in tags:
            if sizes[tag] == 1:
                single.add(word)
            else:
                counts[word] += np.exp(log_p - rarest[tag])
    for word in single:
        counts[word] = max(counts.values())
    usable = (word for word in counts if re.fullmatch(r"[a-z]+('[a-z]+)?", word) and word != "n't")
    ranked = sorted(usable, key=lambda w: (-counts[w], w))
    if len(ranked) < size:
        raise PrepError(f"{path}: only {len(ranked)} usable words, asked for --vocabulary {size}")
    words = ranked[:size]
    return words, [float(np.sqrt(counts[word])) for word in words]


# --------------------------------------------------------------------------------------------- word order


def unique_sentences(
    rng: random.Random, words: Sequence[str], count: int, min_words: int, max_words: int,
    weights: Sequence[float] | None = None,
) -> list[str]:
    """`count` distinct sentences of min_words-max_words words drawn from `words` (uniformly, or by `weights`)."""

    def draw() -> str:
        length = rng.randint(min_words, max_words)
        if weights is None:  # the built-in list's draws, unchanged: existing corpora stay byte-identical
            return " ".join(rng.choice(words) for _ in range(length))
        return " ".join(rng.choices(words, weights, k=length))

    return distinct(draw, count, count * 20, f"{min_words}-{max_words} words from {len(words)} words")


def distinct(draw: Callable[[], str | None], count: int, attempts: int, what: str) -> list[str]:
    """The first `count` distinct sentences of up to `attempts` draws (None: a draw that gave none)."""
    sentences: dict[str, None] = {}  # insertion-ordered set
    for _ in range(attempts):
        sentence = draw()
        if sentence is not None:
            sentences[sentence] = None
            if len(sentences) == count:
                return list(sentences)
    raise PrepError(f"cannot make {count} distinct sentences of {what}")


def pos_trigram(path: Path = WSJ_POS_TRIGRAM) -> tuple[list[str], np.ndarray]:
    """Festival's tag trigram: (tags, counts) with counts[a, b, c] the (smoothed) count of tag c after a, b.

    The file is speech_tools' binary n-gram: a line "NgramBin_2 3", the history tags and the predicted
    tags (one line each, the same list), then big-endian float64 counts of every (a, b) history in order,
    c fastest, where a negative value -k stands for k - 1 zero counts in a row.
    """
    if not path.is_file():
        raise PrepError(
            f"{path} not found: --word-order pos-trigram needs festival's WSJ tag trigram; install it with "
            "`sudo apt-get install festlex-poslex` (or `make speech-tools`) and rerun"
        )
    header, history_tags, predicted_tags, body = path.read_bytes().split(b"\n", 3)
    tags = history_tags.decode("ascii").split()
    if header.split() != [b"NgramBin_2", b"3"] or predicted_tags.split() != history_tags.split() or len(body) % 8:
        raise PrepError(f"{path}: not a speech_tools binary trigram of one tag set (header {header[:40]!r})")
    counts: list[float] = []
    for value in np.frombuffer(body, dtype=">f8").tolist():
        counts.extend([0.0] * (int(-value) - 1) if value < 0 else [value])
    if len(counts) != len(tags) ** 3:
        raise PrepError(f"{path}: {len(counts)} counts for {len(tags)} tags, expected {len(tags) ** 3}")
    return tags, np.array(counts).reshape(len(tags), len(tags), len(tags))


# Tags of the trigram that end a phrase (punctuation) and that attach to the word before ('s, ').
PHRASE_END_TAG, POSSESSIVE_TAG = "punc", "pos"


def tagged_sentences(
    rng: random.Random, words: Sequence[str], count: int, min_words: int, max_words: int,
    lexicon: Path = WSJ_LEXICON, trigram: Path = WSJ_POS_TRIGRAM,
) -> list[str]:
    """`count` distinct sentences with the word order of English: a tag sequence from festival's WSJ tag
    trigram, started after punctuation and ended at the next punctuation once min_words are out (longer
    than max_words: drawn again), each tag spoken by one of `words` with weight sqrt(P(word | tag)), as
    the random order weights words by the square root of their frequency. Function words come out as
    often as in text ("of" 1.8% of the words against 0.6% in random order; measured on 4,000 sentences)
    and next to the words they go with, which the synthesisers then speak with English phrasing."""
    tags, counts = pos_trigram(trigram)
    vocabulary = set(words)
    spoken: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for word, word_tags in lexicon_entries(lexicon):
        if word in vocabulary:
            for tag, log_p in word_tags:
                spoken[tag].append((word, float(np.exp(log_p / 2))))
    usable = np.array([tag in spoken or tag in (PHRASE_END_TAG, POSSESSIVE_TAG) for tag in tags])
    # Cumulative weights, so that each draw is a bisection; tags without a word of the vocabulary never come up.
    cumulative = np.cumsum(counts * usable, axis=-1).tolist()
    choices = {
        tag: ([word for word, _ in options], np.cumsum([weight for _, weight in options]).tolist())
        for tag, options in spoken.items()
    }
    start = tags.index(PHRASE_END_TAG)

    def draw() -> str | None:
        history, sentence = (start, start), []
        while len(sentence) <= max_words:
            row = cumulative[history[0]][history[1]]
            if row[-1] == 0:
                return None
            tag = rng.choices(range(len(tags)), cum_weights=row)[0]
            if tags[tag] == PHRASE_END_TAG:
                if len(sentence) >= min_words:
                    return " ".join(sentence)
            elif tags[tag] == POSSESSIVE_TAG:
                if sentence:
                    sentence[-1] += "'" if sentence[-1].endswith("s") else "'s"
            else:
                options, weights = choices[tags[tag]]
                sentence.append(rng.choices(options, cum_weights=weights)[0])
            history = (history[1], tag)
        return None

    return distinct(draw, count, count * 50, f"{min_words}-{max_words} words in tag order")


# --------------------------------------------------------------------------------------------- numbers


_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DIGIT_STRING_LENGTHS = (1, 7)  # spoken digit strings: codes, phone numbers
AMOUNT_DIGITS = 4  # spoken amounts: below 10,000


def spoken_cardinal(value: int) -> str:
    """0 <= value < 1,000,000 as words, American style without "and": 342 -> "three hundred forty two"."""
    if not 0 <= value < 1_000_000:
        raise ValueError(f"spoken_cardinal covers 0-999999, got {value}")
    if value < 20:
        return _UNITS[value]
    if value < 100:
        tens, unit = divmod(value, 10)
        return _TENS[tens] + (f" {_UNITS[unit]}" if unit else "")
    size, name = (100, "hundred") if value < 1000 else (1000, "thousand")
    high, rest = divmod(value, size)
    return f"{spoken_cardinal(high)} {name}" + (f" {spoken_cardinal(rest)}" if rest else "")


def spoken_number(rng: random.Random) -> str:
    """A digit string or an amount, half and half; amounts have 1 to AMOUNT_DIGITS digits, equally often."""
    if rng.random() < 0.5:
        return " ".join(_UNITS[rng.randrange(10)] for _ in range(rng.randint(*DIGIT_STRING_LENGTHS)))
    return spoken_cardinal(rng.randrange(10 ** rng.randint(1, AMOUNT_DIGITS)))


def add_numbers(sentences: Sequence[str], fraction: float, seed: int) -> list[str]:
    """Insert a spoken number at a random place into a `fraction` of the sentences. The draws have their
    own seeded stream, so every other draw of a corpus (sentences, voices, prosody) stays as without it."""
    rng = random.Random(f"numbers-{seed}")
    result = []
    for sentence in sentences:
        if rng.random() < fraction:
            words = sentence.split()
            words.insert(rng.randint(0, len(words)), spoken_number(rng))
            sentence = " ".join(words)
        result.append(sentence)
    return result
