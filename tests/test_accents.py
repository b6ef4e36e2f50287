"""data_prep/accents.py: English phones become another language's, missing diphones are avoided, and the
voices' phone tables are consistent with festival's phone sets. Speaking itself is covered for every voice
by tests/test_voices.py::test_engine_speaks_16k_mono."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import accents

# festival's radio phone set (American English) as its front end for kal_diphone produces it
RADIO_PHONES = (
    "aa ae ah ao aw ax axr ay b ch d dh dx eh el em en er ey f g hh hv ih iy jh k l m n nx ng ow oy p r s sh t "
    "th uh uw v w y z zh pau"
).split()


@pytest.mark.parametrize("language", [accents.ITALIAN, accents.FINNISH], ids=lambda language: language.name)
def test_phone_tables_use_only_the_languages_phones(language: accents.Language) -> None:
    assert set(language.from_english) == set(RADIO_PHONES)
    produced = {phone for phones in language.from_english.values() for phone in phones.split()}
    produced |= {phone + language.stress_mark for phone in produced if phone in language.vowels}
    substitutes = {phone for phones in language.substitutes.values() for phone in phones.split()}
    assert produced | substitutes | set(language.substitutes) <= set(language.phones)
    assert language.pause in language.phones and language.from_english["pau"] == language.pause


def test_translate_splits_drops_and_marks_stress() -> None:
    segments = [("pau", 0.1, False), ("hh", 0.2, False), ("aw", 0.4, True), ("s", 0.5, False), ("ax", 0.6, False)]
    timed = accents.translate(segments, accents.ITALIAN)
    # /h/ is dropped and its 0.1 s goes to the next phone; "aw" becomes two vowels sharing 0.3 s, the first
    # stressed; the unstressed schwa stays unmarked
    assert [phone for phone, _, _ in timed] == ["#", "a1", "u", "s", "a"]
    assert [(round(start, 6), round(end, 6)) for _, start, end in timed] == [
        (0.0, 0.1), (0.1, 0.25), (0.25, 0.4), (0.4, 0.5), (0.5, 0.6)
    ]
    assert [phone for phone, _, _ in accents.translate(segments, accents.FINNISH)] == ["#", "h", "a", "u", "s", "e"]


def test_translate_names_a_phone_it_cannot_map() -> None:
    with pytest.raises(accents.FestivalError, match="'q'.*italian"):
        accents.translate([("q", 0.1, False)], accents.ITALIAN)


def test_avoid_missing_changes_the_fewest_and_nearest_phones() -> None:
    language = accents.ITALIAN
    missing = frozenset({("S", "t"), ("S", "s"), ("n", "ng"), ("ng", "#"), ("a1", "E")})
    # the right phone first: ng -> n would leave n-n, which exists
    assert accents.avoid_missing(["a", "n", "ng", "a"], missing, language) == ["a", "n", "n", "a"]
    # nothing replaces "t", so the left phone changes: S -> s
    assert accents.avoid_missing(["#", "S", "t", "o"], missing, language) == ["#", "s", "t", "o"]
    # E -> e mends a1-E without touching the stressed vowel
    assert accents.avoid_missing(["a1", "E"], missing, language) == ["a1", "e"]
    assert accents.avoid_missing(["a", "t", "o"], missing, language) == ["a", "t", "o"]  # nothing missing


def test_avoid_missing_keeps_a_pair_nothing_mends() -> None:
    missing = frozenset({("t", "k"), ("#", "k")})
    assert accents.avoid_missing(["#", "t", "k"], missing, accents.ITALIAN) == ["#", "t", "k"]


def test_speak_with_accent_moves_f0_to_the_speaker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    segments = [("pau", 0.2, False), ("ah", 0.4, True), ("pau", 0.6, False)]
    monkeypatch.setattr(accents, "english_phones", lambda text, stretch: (segments, [(0.3, 100.0), (0.45, 90.0)]))
    monkeypatch.setattr(accents, "missing_diphones", lambda voice: frozenset())
    scripts = []
    monkeypatch.setattr(accents, "run_festival", scripts.append)
    accents.speak_with_accent("lp_diphone", "uh", 1.0, tmp_path / "out.wav")
    scale = accents.VOICES["lp_diphone"].f0_mean / accents.FRONT_END_F0_MEAN
    # each F0 target sits in its segment, at its time from the segment's start, at the speaker's pitch
    assert f"(a1 0.2000 (0.1000 {100 * scale:.1f}))" in scripts[0]
    assert f"(# 0.2000 (0.0500 {90 * scale:.1f}))" in scripts[0]
    assert "(voice_lp_diphone)" in scripts[0] and str(tmp_path / "out.wav") in scripts[0]
