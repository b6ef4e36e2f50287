"""English read by the people behind festival's Italian and Finnish voices.

Debian packages only four English festival/flite persons, and a model trained on four people does not
understand a fifth (docs/experiments/demo-voices.md). Its Italian and Finnish
diphone voices are four more people, recorded as diphones: every transition between two phones of
their language. To make them read English:

1. festival's English front end with the kal_diphone voice turns the text into phones (its lexicon and
   letter-to-sound rules), durations and an F0 contour, all of American English;
2. each English phone becomes the nearest phone, or two, of the voice's language (`Language.from_english`),
   the way a speaker of that language would say it; stressed vowels take the language's stressed form;
3. where the voice has no recording of a transition, a phone of the pair is replaced by a near
   substitute the voice does have (`Language.substitutes`);
4. the voice's own diphones make the waveform, on the English durations and F0 contour moved to the
   speaker's pitch (`AccentVoice.f0_mean` against the front end's).

The result is English with that speaker's timbre and an Italian or Finnish accent: people no other
voice is made from. The phone names are festival's: radio (American English), italian, finnish.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

FRONT_END_VOICE = "kal_diphone"
# Mean F0 (Hz) of each voice's own intonation model on one sentence of its language, measured with
# festival: kal_diphone 102 ("today we are going to the market to buy bread and milk"), lp 202 and
# pc 111 ("ciao, oggi andiamo al mercato a comprare il pane e la frutta"), lj 147 and mv 75
# ("tänään menemme kauppaan ostamaan leipää ja maitoa"), averaging the Target relation's f0 values.
FRONT_END_F0_MEAN = 102.0


@dataclass(frozen=True)
class Language:
    name: str
    phones: tuple[str, ...]  # the voice's phone set, pause included
    from_english: dict[str, str]  # radio phone -> the language's phones ("" drops it: Italian has no /h/)
    substitutes: dict[str, str]  # phone -> nearer-to-farther replacements where a diphone is missing
    stress_mark: str  # appended to the first vowel of a stressed syllable's phones ("" where not marked)
    vowels: frozenset[str]
    pause: str = "#"


ITALIAN = Language(
    name="italian",
    phones=tuple(
        "i e E a o O u i1 e1 E1 a1 o1 O1 u1 j w p t k b d g f s S v z Z ts tS dz dZ m n J ng nf l L r #".split()
    ),
    from_english=dict(
        aa="a", ae="E", ah="a", ao="O", aw="a u", ax="a", axr="e r", ay="a i", b="b", ch="tS", d="d", dh="d",
        dx="d", eh="E", el="e l", em="e m", en="e n", er="e r", ey="e i", f="f", g="g", hh="", hv="", ih="i",
        iy="i", jh="dZ", k="k", l="l", m="m", n="n", nx="n", ng="ng", ow="o", oy="O i", p="p", r="r", s="s",
        sh="S", t="t", th="t", uh="u", uw="u", v="v", w="w", y="j", z="z", zh="Z", pau="#",
    ),
    substitutes=dict(
        a1="a", e1="e", E1="E e1 e", E="e", O1="O o1 o", O="o", i1="i", o1="o", u1="u", ng="n", Z="dZ z", S="s",
        j="i", w="u",
    ),
    stress_mark="1",
    vowels=frozenset("aeEiOou"),
)

FINNISH = Language(
    name="finnish",
    phones=tuple(
        "a e i o u y @ 7 a: e: i: o: u: y: @: 7: p t k b d g f T s S h v m n N l L r j w p: t: k: b: d: g: f: "
        "T: D: s: z: S: Z: h: v: m: n: N: w: l: L: r: j: #".split()
    ),
    # Finnish marks length, not stress: the English long vowels take the long ones, "@" is /ae/, "7" /oe/.
    from_english=dict(
        aa="a:", ae="@", ah="a", ao="o:", aw="a u", ax="e", axr="e r", ay="a i", b="b", ch="t S", d="d", dh="d",
        dx="d", eh="e", el="e l", em="e m", en="e n", er="7 r", ey="e i", f="f", g="g", hh="h", hv="h", ih="i",
        iy="i:", jh="d S", k="k", l="l", m="m", n="n", nx="n", ng="N", ow="o u", oy="o i", p="p", r="r", s="s",
        sh="S", t="t", th="t", uh="u", uw="u:", v="v", w="v", y="j", z="s", zh="S", pau="#",
    ),
    substitutes={
        "N": "n", "S": "s", "a": "a:", "e": "e:", "i": "i:", "o": "o:", "u": "u:", "@": "@:", "7": "7:",
        "a:": "a", "e:": "e", "i:": "i", "o:": "o", "u:": "u", "l": "l:", "b": "p", "d": "t", "g": "k",
        "f": "v", "j": "i", "h": "h:", "m": "m:", "n": "n:", "r": "r:", "s": "s:", "v": "v:",
    },
    stress_mark="",
    vowels=frozenset(),
)


@dataclass(frozen=True)
class AccentVoice:
    language: Language
    person: str  # who was recorded: no other voice of the corpora is made from them
    f0_mean: float  # Hz, see FRONT_END_F0_MEAN


VOICES = {
    "lp_diphone": AccentVoice(ITALIAN, "lp", 202.0),  # festvox-italp16k, a woman
    "pc_diphone": AccentVoice(ITALIAN, "pc", 111.0),  # festvox-itapc16k, a man
    "suo_fi_lj_diphone": AccentVoice(FINNISH, "lj", 147.0),  # festvox-suopuhe-lj, a woman
    "hy_fi_mv_diphone": AccentVoice(FINNISH, "mv", 75.0),  # festvox-suopuhe-mv, a man
}


class FestivalError(RuntimeError):
    """festival failed; the message holds its output."""


def run_festival(script: str) -> str:
    """Run a Scheme script in festival; its standard output and error together. festival reports Scheme
    errors on stderr and still exits with 0, so "ERROR" in its output is a failure too."""
    result = subprocess.run(["festival", "--pipe"], input=script, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0 or "ERROR" in output:
        raise FestivalError(output.strip()[-2000:])
    return output


def english_phones(text: str, stretch: float) -> tuple[list[tuple[str, float, bool]], list[tuple[float, float]]]:
    """The front end's segments (phone, end time in s, in a stressed syllable) and F0 targets (time, Hz)
    for `text` spoken `stretch` times slower than its default pace."""
    quoted = text.replace("\\", " ").replace('"', " ")
    output = run_festival(
        f"(voice_{FRONT_END_VOICE})\n(Parameter.set 'Duration_Stretch {stretch:.4f})\n"
        f'(set! utt (utt.synth (Utterance Text "{quoted}")))\n'
        "(mapcar (lambda (s) (format t \"S %s %f %s\\n\" (item.name s) (item.feat s \"end\") "
        "(item.feat s \"R:SylStructure.parent.stress\"))) (utt.relation.items utt 'Segment))\n"
        "(mapcar (lambda (s) (if (> (item.feat s \"f0\") 0) (format t \"T %f %f\\n\" (item.feat s \"pos\") "
        "(item.feat s \"f0\")))) (utt.relation.items utt 'Target))\n"
    )
    segments, targets = [], []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == "S":
            segments.append((fields[1], float(fields[2]), fields[3] == "1"))
        elif len(fields) == 3 and fields[0] == "T":
            targets.append((float(fields[1]), float(fields[2])))
    if not segments:
        raise FestivalError(f"the English front end gave no phones for {text!r}: {output.strip()[-500:]}")
    return segments, targets


@functools.cache
def missing_diphones(voice: str) -> frozenset[tuple[str, str]]:
    """The phone pairs `voice` has no recording of, found by looking up every pair once: festival names
    each one it would replace by silence ("using default diphone #-# for x-y"). Only the lookup runs; making
    the waveform of all pairs at once crashes festival with some voices."""
    phones = VOICES[voice].language.phones
    pairs = " ".join(f"({a} 0.08) ({b} 0.08)" for a in phones for b in phones)
    output = run_festival(
        f"(voice_{voice})\n(set! utt (Utterance Segments ((# 0.1) {pairs} (# 0.1))))\n"
        "(Initialize utt)\n(us_get_diphones utt)\n"
    )
    return frozenset(
        tuple(line.rsplit(" ", 1)[-1].split("-", 1)) for line in output.splitlines() if "default diphone" in line
    )


def translate(segments: list[tuple[str, float, bool]], language: Language) -> list[tuple[str, float, float]]:
    """English segments as the language's phones with start and end times; a phone that maps to two
    shares its duration equally, and a dropped one gives its time to the next."""
    phones, start = [], 0.0
    for name, end, stressed in segments:
        if name not in language.from_english:
            raise FestivalError(f"the English front end produced phone {name!r}, which has no {language.name} mapping")
        targets = language.from_english[name].split()
        if not targets:
            continue  # `start` stays, so the next phone takes this one's time
        step = (end - start) / len(targets)
        for index, phone in enumerate(targets):
            if stressed and index == 0 and phone in language.vowels:
                phone += language.stress_mark
            phones.append((phone, start + index * step, start + (index + 1) * step))
        start = end
    return phones


def avoid_missing(phones: list[str], missing: frozenset[tuple[str, str]], language: Language) -> list[str]:
    """`phones` with substitutes where a pair is missing, left to right: the fewest and nearest changes
    to the pair (the right phone first, then the left one, which must still join its own left neighbour).
    A pair no substitute mends stays, and festival bridges it with a short silence."""
    def options(phone: str) -> list[str]:
        return [phone, *language.substitutes.get(phone, "").split()]

    result = phones[:1]
    for right in phones[1:]:
        left, before = result[-1], (result[-2] if len(result) > 1 else None)
        pair = next(
            (
                (new_left, new_right)
                for new_left in options(left)
                if before is None or (before, new_left) not in missing
                for new_right in options(right)
                if (new_left, new_right) not in missing
            ),
            (left, right),
        )
        result[-1:] = pair
    return result


def speak_with_accent(voice: str, text: str, stretch: float, wav: Path) -> None:
    """Write `text` read by `voice`'s speaker to `wav` (RIFF, the voice's own rate)."""
    accent = VOICES[voice]
    segments, targets = english_phones(text, stretch)
    timed = translate(segments, accent.language)
    names = avoid_missing([phone for phone, _, _ in timed], missing_diphones(voice), accent.language)
    scale = accent.f0_mean / FRONT_END_F0_MEAN
    items = []
    for name, (_, start, end) in zip(names, timed):
        # Segments utterances take F0 targets relative to their segment's start
        points = " ".join(f"({time - start:.4f} {f0 * scale:.1f})" for time, f0 in targets if start <= time < end)
        items.append(f"({name} {end - start:.4f} {points})")
    run_festival(
        f"(voice_{voice})\n(set! utt (utt.synth (Utterance Segments ({' '.join(items)}))))\n"
        f'(utt.save.wave utt "{wav}" \'riff)\n'
    )
