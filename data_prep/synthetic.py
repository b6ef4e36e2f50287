"""The embedded default data: synthesised speech, so the project runs end to end offline.

  asr  an ASR corpus in LibriSpeech layout (LibriSpeech/{train,dev,test}/<speaker>/<chapter>/...flac
       and .trans.txt), then manifests {train,dev,test}.json through data_prep.librispeech.
       Sentences are random sequences of 2-6 words (--min-words, --max-words) from
       data_prep/wordlist.txt; every sentence is used once, so dev and test sentences never occur in train.
  kws  a Speech Commands-like corpus in the official layout (<word>/<speaker>_nohash_<n>.wav, 1 s at
       16 kHz) with all 35 v2 keywords, a few other words, _background_noise_/ and
       validation_list.txt / testing_list.txt, then manifests through data_prep.speech_commands
       (v2_*.json for the 35 words, subset12_*.json for the 12-class task).

A speaker is an espeak-ng English voice (accent) with a voice variant. The variants are split by seed
into train / dev / test groups, so dev and test speakers are voices the train set never heard. Each
utterance gets its own speaking rate, pitch, volume and a little white noise, is resampled from
espeak-ng's 22050 Hz to 16 kHz mono and saved as 16-bit FLAC (asr) or WAV (kws). ASR sentences also get
pauses of their own length before and after, over a noise floor that varies down to digital silence.

The ASR corpus can also mix in voices made from recordings of real people (`--engines
espeak,flite,festival`): flite's kal, kal16, awb, rms and slt, and festival's kal_diphone, ked_diphone
and cmu_us_slt_arctic_hts (Debian: flite, festival, festvox-kallpc16k, festvox-kdlpc16k,
festvox-us-slt-hts). Their speakers are the recorded people: one person is held out for dev and one for
test from every engine at once (flite's slt and festival's slt are the same woman), and each split draws
its utterances evenly from the engines that have voices in it. `accented` adds four more people: the
speakers of festival's Italian and Finnish voices (festvox-italp16k, festvox-itapc16k, festvox-suopuhe-lj,
festvox-suopuhe-mv) reading English with their accent, through festival's English front end
(data_prep/accents.py). The default, espeak-ng alone, makes the same corpus whatever other engines exist.

`--vocabulary N` draws the sentences from the N most frequent words of festival's Wall Street Journal
lexicon (Debian: festlex-poslex) instead of the built-in 270-word list, weighted by the square root
of their frequency: a model trained on it has to spell words, not recognise a closed set.
`--numbers F` puts a spoken number into a fraction F of the sentences, at a random place: a digit
string ("two nine three four zero") or an amount ("three hundred forty two"). The WSJ text behind the
lexicon writes numbers as digits, so its list barely has number words ("ten" ranks 4,951st, "twenty"
is missing), while people say numbers all the time.
`--word-order pos-trigram` (with `--vocabulary`) puts the words in the order of English: a sequence of
part-of-speech tags from festival's tag trigram of the same WSJ text, each tag spoken by a word of the
vocabulary ("the systems of many written sales"), so function words come as often as in text and the
synthesisers phrase the sentence as English; the default, random, draws every word on its own.

Output depends only on the settings, the seed and the engine versions (recorded in <out>/corpus.json):
the same command gives the same bytes. Work runs on all cores, and a rerun only makes what is missing.

    python -m data_prep.synthetic asr --out data/synthetic_asr
    python -m data_prep.synthetic asr --out data/mixed_asr --engines espeak,flite,festival
    python -m data_prep.synthetic asr --out data/voices_asr --engines espeak,flite,festival --vocabulary 5000 \
        --numbers 0.25
    python -m data_prep.synthetic kws --out data/synthetic_kws --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_prep import librispeech, speech_commands
from data_prep.common import (
    PrepError,
    parse_args_with_debug,
    prep_errors,
    run_main,
)
from data_prep.engines import (
    DEFAULT_ENGINES,
    ENGINE_NAMES,
    HELD_OUT_VARIANTS,
    PITCH_SPAN,
    RECORDED_ENGINES,
    REFERENCE_RATE,
    VOICES,
    Speaker,
    Utterance,
    available_speakers,
    canonical_engines,
    espeak_version,
)
from data_prep.rendering import (
    SAMPLE_RATE,
    coloured_noise,
    render_all,
    render_keyword,
    render_sentence,
    write_audio,
)
from data_prep.sentences import (
    AMOUNT_DIGITS,
    DIGIT_STRING_LENGTHS,
    RANDOM_ORDER,
    TAG_ORDER,
    WORD_ORDERS,
    WSJ_LEXICON,
    WSJ_POS_TRIGRAM,
    add_numbers,
    lexicon_vocabulary,
    load_words,
    tagged_sentences,
    unique_sentences,
)
from quartznet.common.cli import at_least, fraction

CORPUS_FILE = "corpus.json"
# The ASR corpus defaults to one accent: every accent says the same spelling with other sounds, and
# the CPU demo must learn the corpus in minutes. All accents: `--accents all`.
ASR_ACCENTS = ("en-us",)
# Words of the kws corpus that are not keywords: the "unknown" class of the 12-class task draws on them too.
KWS_OTHER_WORDS = ("apple", "water", "paper", "garden", "music", "window", "yellow", "coffee")
NOISE_SECONDS = 30
# Pauses around each ASR sentence and its noise floor. Real recordings start and end with pauses of
# varying length, some over a digital-silence floor; a model that only ever heard speech from the first
# frame invents letters in such a pause. Pauses are u**3 * max seconds (mostly short, a fifth of the
# leading ones over 0.5 s: the mean adds ~0.4 s to a ~1.7 s sentence, which the demo's CPU budget
# affords); CLEAN_FRACTION of the sentences get no noise at all, the others white noise at ASR_SNR_DB.
MAX_LEADING_PAUSE = 1.0
MAX_TRAILING_PAUSE = 0.5
CLEAN_FRACTION = 0.1
ASR_SNR_DB = (20.0, 50.0)


# --------------------------------------------------------------------------------------------- speakers

# Recorded people per held-out group (dev, test). There are only five people behind all the English
# recorded voices (nine with the accented ones), so each held-out group gets one and training keeps the rest.
HELD_OUT_PERSONS = 1


def speaker_groups(seed: int, voices: Sequence[str], variants: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """(voice, variant) speakers of the train / dev / test groups; the groups share no variant."""
    shuffled = list(variants)
    random.Random(f"{seed}-variants").shuffle(shuffled)
    groups = {
        "test": shuffled[:HELD_OUT_VARIANTS],
        "dev": shuffled[HELD_OUT_VARIANTS : 2 * HELD_OUT_VARIANTS],
        "train": shuffled[2 * HELD_OUT_VARIANTS :],
    }
    return {
        group: [(voice, variant) for variant in sorted(names) for voice in voices] for group, names in groups.items()
    }


def person_groups(seed: int, speakers: Sequence[Speaker]) -> dict[str, list[Speaker]]:
    """Recorded speakers of the train / dev / test groups, split by person across all engines at once."""
    persons = sorted({speaker.person for speaker in speakers})
    if len(persons) < 2 * HELD_OUT_PERSONS + 1:
        raise PrepError(
            f"the recorded voices installed are only {len(persons)} people ({', '.join(persons)}); held-out dev "
            f"and test need {2 * HELD_OUT_PERSONS + 1}: install more voices (`make speech-tools`) or add an engine"
        )
    random.Random(f"{seed}-persons").shuffle(persons)
    held = {
        "test": persons[:HELD_OUT_PERSONS],
        "dev": persons[HELD_OUT_PERSONS : 2 * HELD_OUT_PERSONS],
        "train": persons[2 * HELD_OUT_PERSONS :],
    }
    return {group: [s for s in speakers if s.person in names] for group, names in held.items()}


def engine_groups(seed: int, accents: Sequence[str], engines: Sequence[str]) -> dict[str, list[Speaker]]:
    """The speakers of every ASR split: espeak-ng's variants and the recorded people are held out separately.

    One pool would rarely put any of the five recorded people in dev or test beside 70 espeak-ng
    variants; separate quotas make every held-out split hear a person no training voice was made from.
    """
    groups: dict[str, list[Speaker]] = {split: [] for split in ASR_SPLITS}
    if "espeak" in engines:
        voices, variants = available_speakers(accents)
        for split, pairs in speaker_groups(seed, voices, variants).items():
            groups[split] += [Speaker("espeak", voice, variant, variant) for voice, variant in pairs]
    recorded = [
        speaker for name in engines if name in RECORDED_ENGINES for speaker in RECORDED_ENGINES[name].speakers()
    ]
    if recorded:
        for split, speakers in person_groups(seed, recorded).items():
            groups[split] += speakers
    return groups


def pick_speaker(rng: random.Random, group: Sequence[Speaker], engines: Sequence[str]) -> Speaker:
    """A speaker of the group. Mixed corpora first pick an engine evenly, or espeak-ng's ~50 training
    voices would drown the handful of recorded ones; an espeak-only corpus draws as it always did."""
    if tuple(engines) == DEFAULT_ENGINES:
        return rng.choice(group)
    engine = rng.choice([name for name in engines if any(s.engine == name for s in group)])
    return rng.choice([speaker for speaker in group if speaker.engine == engine])


def speaker_record(speaker: Speaker, split: str, engines: Sequence[str]) -> dict[str, str]:
    """corpus.json's entry for a speaker; espeak-only corpora keep their original entries."""
    record = {"voice": speaker.voice, "variant": speaker.variant, "split": split}
    if tuple(engines) != DEFAULT_ENGINES:
        record |= {"engine": speaker.engine, "person": speaker.person}
    return record


# --------------------------------------------------------------------------------------------- every corpus


def random_prosody(rng: random.Random, rates: tuple[int, int]) -> dict:
    """An utterance's speaking rate (words per minute, within `rates`), pitch, peak level and noise."""
    return {
        "rate": rng.randint(*rates),
        "pitch": rng.randint(20, 80),
        "peak": round(rng.uniform(0.3, 0.9), 4),
        "snr_db": round(rng.uniform(20.0, 40.0), 2),
        "noise_seed": rng.getrandbits(32),
    }


def claim_output(out: Path, description: dict) -> None:
    """Record the settings in <out>/corpus.json, refusing a folder that holds a corpus made otherwise.

    This is what makes resuming safe: files found on disk were made with exactly these settings.
    """
    out.mkdir(parents=True, exist_ok=True)
    record = out / CORPUS_FILE
    text = json.dumps(description, indent=1, sort_keys=True) + "\n"
    if record.exists() and record.read_text(encoding="utf-8") != text:
        raise PrepError(
            f"{out} holds a corpus made with other settings (or other synthesiser versions), see {record}; "
            "use a new --out or delete that folder"
        )
    partial = record.with_name(record.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(record)


def engine_versions(engines: Sequence[str]) -> dict[str, str]:
    """corpus.json's version entries; each engine's check names its install command when it is missing."""
    versions = {"espeak_ng": espeak_version()} if "espeak" in engines else {}
    return versions | {name: RECORDED_ENGINES[name].version() for name in engines if name in RECORDED_ENGINES}


# --------------------------------------------------------------------------------------------- ASR corpus

ASR_SPLITS = ("train", "dev", "test")
CHAPTERS = {"train": 1, "dev": 2, "test": 3}  # one chapter per speaker and split


def plan_asr(
    out: Path,
    seed: int,
    sizes: dict[str, int],
    min_words: int,
    max_words: int,
    accents: Sequence[str] = ASR_ACCENTS,
    engines: Sequence[str] = DEFAULT_ENGINES,
    vocabulary: int = 0,
    numbers: float = 0.0,
    word_order: str = RANDOM_ORDER,
) -> tuple[list[Utterance], dict]:
    """The utterances of every split, and the speakers (LibriSpeech id -> voice, variant, split, and in
    corpora of several engines engine and person)."""
    engines = canonical_engines(engines)
    groups = engine_groups(seed, accents, engines)
    speaker_ids = {
        speaker: 100 + index for index, speaker in enumerate(s for split in ASR_SPLITS for s in groups[split])
    }
    rng = random.Random(seed)
    words, weights = lexicon_vocabulary(vocabulary) if vocabulary else (load_words(), None)
    if word_order == TAG_ORDER:
        sentences = tagged_sentences(rng, words, sum(sizes.values()), min_words, max_words)
    else:
        sentences = unique_sentences(rng, words, sum(sizes.values()), min_words, max_words, weights)
    sentences = iter(add_numbers(sentences, numbers, seed))
    utterances, counters = [], defaultdict(int)
    for split in ASR_SPLITS:
        for _ in range(sizes[split]):
            chosen = pick_speaker(rng, groups[split], engines)
            speaker, chapter = speaker_ids[chosen], CHAPTERS[split]
            index = counters[(speaker, chapter)]
            counters[(speaker, chapter)] += 1
            path = out / "LibriSpeech" / split / str(speaker) / str(chapter) / f"{speaker}-{chapter}-{index:04d}.flac"
            prosody = random_prosody(rng, (130, 200))
            clean = rng.random() < CLEAN_FRACTION
            prosody["snr_db"] = float("inf") if clean else round(rng.uniform(*ASR_SNR_DB), 2)
            utterance = Utterance(
                str(path), next(sentences), chosen.voice, chosen.variant, **prosody,
                leading_pause=round(rng.random() ** 3 * MAX_LEADING_PAUSE, 3),
                trailing_pause=round(rng.random() ** 3 * MAX_TRAILING_PAUSE, 3),
                engine=chosen.engine,
            )
            utterances.append(utterance)
    speakers = {
        str(speaker_ids[speaker]): speaker_record(speaker, split, engines)
        for split in ASR_SPLITS
        for speaker in groups[split]
    }
    return utterances, speakers


def write_transcripts(utterances: Sequence[Utterance]) -> None:
    """`<speaker>-<chapter>.trans.txt` next to the FLACs, upper case like LibriSpeech's."""
    chapters: dict[Path, list[str]] = defaultdict(list)
    for utterance in utterances:
        path = Path(utterance.path)
        chapters[path.parent].append(f"{path.stem} {utterance.text.upper()}")
    for folder, lines in chapters.items():
        target = folder / f"{folder.parent.name}-{folder.name}.trans.txt"
        partial = target.with_name(target.name + ".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(target)


def generate_asr(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    train: int = 2400,
    dev: int = 200,
    test: int = 200,
    min_words: int = 2,
    max_words: int = 6,
    accents: Sequence[str] = ASR_ACCENTS,
    engines: Sequence[str] = DEFAULT_ENGINES,
    vocabulary: int = 0,
    numbers: float = 0.0,
    word_order: str = RANDOM_ORDER,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Make (or finish) the ASR corpus and its manifests; returns split -> manifest. `vocabulary` > 0 draws
    sentences from that many words of festival's WSJ lexicon instead of data_prep/wordlist.txt; `numbers`
    is the fraction of sentences that get a spoken number; `word_order` "pos-trigram" orders the words
    as English does (`tagged_sentences`, needs `vocabulary`), "random" draws each word on its own."""
    out = Path(out)
    sizes = {"train": train, "dev": dev, "test": test}
    if not 1 <= min_words <= max_words:
        raise PrepError(f"need 1 <= --min-words <= --max-words, got {min_words} and {max_words}")
    engines = canonical_engines(engines)
    versions = engine_versions(engines)
    if vocabulary < 0:
        raise PrepError(f"--vocabulary must be 0 (the built-in word list) or a word count, got {vocabulary}")
    if not 0.0 <= numbers <= 1.0:
        raise PrepError(f"--numbers is a fraction of the sentences, from 0 to 1; got {numbers}")
    if word_order not in WORD_ORDERS:
        raise PrepError(f"--word-order must be one of {', '.join(WORD_ORDERS)}; got {word_order!r}")
    if word_order == TAG_ORDER and not vocabulary:
        raise PrepError("--word-order pos-trigram tags the words of festival's WSJ lexicon: give --vocabulary N too")
    utterances, speakers = plan_asr(
        out.absolute(), seed, sizes, min_words, max_words, accents, engines, vocabulary, numbers, word_order
    )
    settings = {"corpus": "asr", "seed": seed, "sizes": sizes, "min_words": min_words, "max_words": max_words,
                "accents": list(accents), "max_pauses": [MAX_LEADING_PAUSE, MAX_TRAILING_PAUSE], "pause_power": 3,
                "clean_fraction": CLEAN_FRACTION, "snr_db": list(ASR_SNR_DB)}
    if engines != DEFAULT_ENGINES:  # recorded only when used, so existing espeak-only corpora stay valid
        settings |= {"engines": list(engines), "held_out_persons": HELD_OUT_PERSONS,
                     "reference_rate": REFERENCE_RATE, "pitch_span": PITCH_SPAN}
    if vocabulary:  # likewise
        settings |= {"vocabulary": {"source": WSJ_LEXICON.name, "words": vocabulary, "weights": "sqrt(frequency)"}}
    if word_order != RANDOM_ORDER:  # likewise
        settings |= {"word_order": {"source": WSJ_POS_TRIGRAM.name, "weights": "sqrt(P(word | tag))"}}
    if numbers:  # likewise
        settings |= {"numbers": {"fraction": numbers, "digit_strings": list(DIGIT_STRING_LENGTHS),
                                 "amounts_below": 10**AMOUNT_DIGITS}}
    claim_output(out, {"settings": settings, **versions, "speakers": speakers})
    try:
        render_all(render_sentence, utterances, jobs or os.cpu_count() or 1, "synthesise asr")
    finally:
        for engine in RECORDED_ENGINES.values():
            engine.close()
    write_transcripts(utterances)
    manifests = {}
    for split in ASR_SPLITS:
        manifests[split] = out / f"{split}.json"
        count = librispeech.convert_split(out / "LibriSpeech" / split, manifests[split])
        print(f"{split}: {count} utterances -> {manifests[split]}")
    return manifests


# --------------------------------------------------------------------------------------------- KWS corpus

KWS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # speaker group -> Speech Commands split


def speaker_code(voice: str, variant: str) -> str:
    """An 8-hex-digit speaker id like the dataset's, stable for a voice across runs and seeds."""
    return f"{zlib.crc32(f'{voice}+{variant}'.encode()):08x}"


def plan_kws(out: Path, seed: int, counts: dict[str, int], repeats: int) -> tuple[list[Utterance], dict]:
    """Every speaker of a split says every word `repeats` times; returns the utterances and speakers."""
    voices, variants = available_speakers()
    groups = speaker_groups(seed, voices, variants)
    rng = random.Random(seed)
    words = sorted({*speech_commands.LABELS["v2"], *KWS_OTHER_WORDS})
    utterances, speakers = [], {}
    for group, split in KWS_SPLITS.items():
        if counts[split] > len(groups[group]):
            raise PrepError(
                f"{counts[split]} {split} speakers asked for, but only {len(groups[group])} voices are held for it"
            )
        for voice, variant in sorted(rng.sample(groups[group], counts[split])):
            code = speaker_code(voice, variant)
            if code in speakers:
                raise PrepError(
                    f"speaker id {code} of {voice}+{variant} collides with {speakers[code]}; use another --seed"
                )
            speakers[code] = {"voice": voice, "variant": variant, "split": split}
            for word in words:
                for repeat in range(repeats):
                    path = out / word / f"{code}_nohash_{repeat}.wav"
                    prosody = random_prosody(rng, (150, 220))  # brisk enough for every word to fit in 1 s
                    utterances.append(Utterance(str(path), word, voice, variant, clip_offset=rng.random(), **prosody))
    return utterances, speakers


def write_background(out: Path, seed: int) -> None:
    folder = out / speech_commands.BACKGROUND
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for kind in ("white", "pink", "brown", "hum"):
        noise = coloured_noise(
            rng, kind, NOISE_SECONDS * SAMPLE_RATE
        )  # drawn in order, so each file is seed-determined
        target = folder / f"{kind}_noise.wav"
        if not target.exists():
            write_audio(target, noise, "WAV")


def write_split_lists(out: Path, utterances: Sequence[Utterance], speakers: dict) -> None:
    for split, name in speech_commands.SPLIT_LISTS.items():
        lines = sorted(
            f"{Path(u.path).parent.name}/{Path(u.path).name}"
            for u in utterances
            if speakers[Path(u.path).name.split("_")[0]]["split"] == split
        )
        partial = out / f"{name}.partial"
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        partial.replace(out / name)


def generate_kws(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    train_speakers: int = 96,
    val_speakers: int = 12,
    test_speakers: int = 12,
    repeats: int = 1,
    jobs: int | None = None,
) -> dict[str, Path]:
    """Make (or finish) the keyword corpus and its manifests; returns task_split -> manifest."""
    out = Path(out)
    counts = {"train": train_speakers, "validation": val_speakers, "test": test_speakers}
    version = espeak_version()
    utterances, speakers = plan_kws(out.absolute(), seed, counts, repeats)
    settings = {"corpus": "kws", "seed": seed, "speakers": counts, "repeats": repeats}
    claim_output(out, {"settings": settings, "espeak_ng": version, "speakers": speakers})
    render_all(render_keyword, utterances, jobs or os.cpu_count() or 1, "synthesise kws")
    write_background(out, seed)
    write_split_lists(out, utterances, speakers)
    return speech_commands.write_manifests(out, out, "v2", seed=seed)


# --------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    corpora = parser.add_subparsers(dest="corpus", required=True, metavar="{asr,kws}")
    asr = corpora.add_parser("asr", help="LibriSpeech-like sentences (train/dev/test)")
    kws = corpora.add_parser("kws", help="Speech Commands-like keywords")
    for command in (asr, kws):
        command.add_argument(
            "--out", type=Path, required=True, help="output folder (resumed if it holds the same corpus)"
        )
        command.add_argument("--seed", type=int, default=0, help="seed of everything random (default: %(default)s)")
        command.add_argument(
            "--jobs", type=at_least(1), default=None, help="parallel syntheses (default: the number of CPU cores)"
        )
    asr.add_argument("--train-utterances", type=at_least(1), default=2400, help="default: %(default)s")
    asr.add_argument("--dev-utterances", type=at_least(1), default=200, help="default: %(default)s")
    asr.add_argument("--test-utterances", type=at_least(1), default=200, help="default: %(default)s")
    asr.add_argument("--min-words", type=at_least(1), default=2, help="shortest sentence (default: %(default)s)")
    asr.add_argument("--max-words", type=at_least(1), default=6, help="longest sentence (default: %(default)s)")
    asr.add_argument(
        "--accents", type=lambda text: VOICES if text == "all" else tuple(text.split(",")), default=ASR_ACCENTS,
        help=f"comma-separated espeak-ng English voices, or 'all' ({', '.join(VOICES)}; default: {','.join(ASR_ACCENTS)})",
    )
    asr.add_argument(
        "--engines", type=lambda text: ENGINE_NAMES if text == "all" else tuple(text.split(",")),
        default=DEFAULT_ENGINES,
        help=f"comma-separated synthesisers, or 'all' ({', '.join(ENGINE_NAMES)}; "
        f"default: {','.join(DEFAULT_ENGINES)})",
    )
    asr.add_argument(
        "--vocabulary", type=at_least(0), default=0,
        help="draw sentences from the N most frequent words of festival's WSJ lexicon (festlex-poslex) instead "
        "of the built-in 270-word list (default: 0, the built-in list)",
    )
    asr.add_argument(
        "--numbers", type=fraction, default=0.0,
        help="fraction of the sentences that get a spoken number, a digit string or an amount (default: 0)",
    )
    asr.add_argument(
        "--word-order", choices=WORD_ORDERS, default=RANDOM_ORDER,
        help="random: every word drawn on its own; pos-trigram: in the order of English, from festival's WSJ "
        "part-of-speech trigram (with --vocabulary; default: %(default)s)",
    )
    kws.add_argument("--train-speakers", type=at_least(1), default=96, help="default: %(default)s")
    kws.add_argument("--val-speakers", type=at_least(1), default=12, help="default: %(default)s")
    kws.add_argument("--test-speakers", type=at_least(1), default=12, help="default: %(default)s")
    kws.add_argument("--repeats", type=at_least(1), default=1, help="times each speaker says each word (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parse_args_with_debug(parser, argv)
    if args.corpus == "asr" and args.max_words < args.min_words:
        parser.error(f"argument --max-words: must be >= --min-words ({args.min_words}), got {args.max_words}")
    with prep_errors(args.debug, as_program=argv is None):
        if args.corpus == "asr":
            generate_asr(
                args.out,
                seed=args.seed,
                train=args.train_utterances,
                dev=args.dev_utterances,
                test=args.test_utterances,
                min_words=args.min_words,
                max_words=args.max_words,
                accents=args.accents,
                engines=args.engines,
                vocabulary=args.vocabulary,
                numbers=args.numbers,
                word_order=args.word_order,
                jobs=args.jobs,
            )
        else:
            generate_kws(
                args.out,
                seed=args.seed,
                train_speakers=args.train_speakers,
                val_speakers=args.val_speakers,
                test_speakers=args.test_speakers,
                repeats=args.repeats,
                jobs=args.jobs,
            )


if __name__ == "__main__":
    run_main(main)
