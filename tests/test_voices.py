"""The synthesisers of data_prep/synthetic.py: every engine speaks, held-out people stay out of training
across engines, and the default espeak-ng corpus is the one the demo numbers were measured on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from data_prep import engines, synthetic

RATE = 16000
DEFAULT_SIZES = {"train": 2400, "dev": 200, "test": 200}  # generate_asr's defaults, i.e. `make demo`'s corpus

VOICES = [("espeak", "en-us", "Alex")] + [
    (name, voice, "") for name, engine in synthetic.RECORDED_ENGINES.items() for voice in engine.voices
]


def require_voice(engine: str, voice: str, variant: str) -> None:
    """pytest.skip naming what is missing and how to install it."""
    if engine == "espeak":
        if shutil.which("espeak-ng") is None:
            pytest.skip("espeak-ng is not installed (sudo apt-get install espeak-ng)")
        return
    recorded = synthetic.RECORDED_ENGINES[engine]
    install = f"sudo apt-get install {' '.join(recorded.packages)}"
    if shutil.which(recorded.program) is None:
        pytest.skip(f"{engine} is not installed ({install})")
    if voice not in recorded.installed_voices():
        pytest.skip(f"{engine} has no voice {voice} ({install})")


@pytest.mark.parametrize(("engine", "voice", "variant"), VOICES, ids=[f"{e}-{v}" for e, v, _ in VOICES])
def test_engine_speaks_16k_mono(engine: str, voice: str, variant: str, tmp_path: Path) -> None:
    require_voice(engine, voice, variant)
    path = tmp_path / "speech.flac"
    utterance = synthetic.Utterance(
        str(path), "go forward ten meters", voice, variant, rate=150, pitch=70, peak=0.5,
        snr_db=float("inf"), noise_seed=0, engine=engine,
    )
    synthetic.render_sentence(utterance)  # the corpus path: synthesis, 16 kHz, level, pauses, noise
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert (rate, audio.shape[1]) == (RATE, 1)
    assert 0.6 < audio.shape[0] / RATE < 5.0  # four words, neither cut off nor stretched out of shape
    assert np.abs(audio).max() == pytest.approx(0.5, abs=1e-3)
    assert float(np.sqrt(np.mean(audio**2))) > 0.03  # speech, not a click in silence


def text2wave_samples(voice: str, text: str, stretch: float, wav: Path) -> np.ndarray:
    """festival's own one-process-per-utterance path, with the settings the session applies."""
    settings = ["-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.4f})"]
    if voice.endswith("_hts"):
        settings += ["-eval", f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / stretch:.4f}))))']
    subprocess.run(["text2wave", *settings, "-o", str(wav)], input=text.encode(), check=True, capture_output=True)
    return soundfile.read(str(wav), dtype="int16")[0]


def test_festival_session_speaks_as_a_fresh_festival_would(tmp_path: Path) -> None:
    """One festival process per worker thread gives the same samples as text2wave per utterance, whatever
    voice and pace came before (the HTS speed included), and joins a text that festival splits in two."""
    festival = synthetic.RECORDED_ENGINES["festival"]
    for voice in festival.voices:
        require_voice("festival", voice, "")
    if shutil.which("text2wave") is None:
        pytest.skip("text2wave is not installed (sudo apt-get install festival)")
    requests = [(voice, text, stretch) for stretch in (1.15, 0.85) for voice in festival.voices
                for text in ("go forward ten meters", "Two nine. Three four zero.")]
    try:
        for index, (voice, text, stretch) in enumerate(requests):
            festival.render(voice, text, stretch, tmp_path / f"session{index}.wav")
    finally:
        sessions = list(festival._sessions)
        festival.close()
    assert len(sessions) == 1 and sessions[0].process.returncode is not None  # one process, stopped by close()
    for index, (voice, text, stretch) in enumerate(requests):
        spoken = soundfile.read(str(tmp_path / f"session{index}.wav"), dtype="int16")[0]
        assert np.array_equal(spoken, text2wave_samples(voice, text, stretch, tmp_path / f"fresh{index}.wav")), (voice, text)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("session")) == sorted(
        f"session{index}.wav" for index in range(len(requests))
    )  # no text or part files left beside them


def test_festival_error_names_it_and_the_next_utterance_still_speaks(tmp_path: Path) -> None:
    require_voice("festival", "cmu_us_slt_arctic_hts", "")
    festival = synthetic.RECORDED_ENGINES["festival"]
    try:
        festival.render("cmu_us_slt_arctic_hts", "first", 1.0, tmp_path / "first.wav")
        with pytest.raises(synthetic.PrepError, match="unbound variable : voice_no_such_voice_hts"):
            festival.render("no_such_voice_hts", "hello", 1.0, tmp_path / "bad.wav")  # in the session's process
        festival.render("cmu_us_slt_arctic_hts", "hello there", 1.0, tmp_path / "good.wav")
    finally:
        festival.close()
    assert not (tmp_path / "bad.wav").exists()
    assert soundfile.read(str(tmp_path / "good.wav"))[0].shape[0] > 1000


# --------------------------------------------------------------------------------------------- held out


@pytest.fixture
def offline_speakers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every engine with all its voices, without running a synthesiser: the plans are pure Python then."""
    monkeypatch.setattr(synthetic, "available_speakers", lambda accents: (list(accents), list(engines.VARIANTS)))
    for name, engine in synthetic.RECORDED_ENGINES.items():
        speakers = [synthetic.Speaker(name, voice, "", person) for voice, person in engine.voices.items()]
        monkeypatch.setattr(engine, "speakers", lambda speakers=speakers: speakers)


@pytest.mark.usefixtures("offline_speakers")
@pytest.mark.parametrize("seed", range(6))
def test_held_out_people_are_held_out_from_every_engine(seed: int) -> None:
    engines = tuple(reversed(synthetic.ENGINE_NAMES))  # any order: the corpus is the same
    utterances, speakers = synthetic.plan_asr(Path("/corpus"), seed, {"train": 300, "dev": 60, "test": 60}, 2, 6,
                                              engines=engines)
    assert utterances == synthetic.plan_asr(Path("/corpus"), seed, {"train": 300, "dev": 60, "test": 60}, 2, 6,
                                            engines=synthetic.ENGINE_NAMES)[0]
    people = {split: {s["person"] for s in speakers.values() if s["split"] == split} for split in synthetic.ASR_SPLITS}
    assert not people["train"] & people["dev"] and not people["train"] & people["test"]
    assert not people["dev"] & people["test"]
    recorded = {person for engine in synthetic.RECORDED_ENGINES.values() for person in engine.voices.values()}
    assert len(people["dev"] & recorded) == len(people["test"] & recorded) == synthetic.HELD_OUT_PERSONS
    # The utterances say the same: no dev/test utterance is spoken by a training person, in any engine.
    person_of = {(s["engine"], s["voice"], s["variant"]): s["person"] for s in speakers.values()}
    heard = {split: {person_of[(u.engine, u.voice, u.variant)] for u in utterances if f"/{split}/" in u.path}
             for split in synthetic.ASR_SPLITS}
    assert not heard["train"] & (heard["dev"] | heard["test"])
    assert {u.engine for u in utterances if "/train/" in u.path} == set(synthetic.ENGINE_NAMES)


@pytest.mark.usefixtures("offline_speakers")
def test_engines_share_the_training_utterances_evenly() -> None:
    utterances, _ = synthetic.plan_asr(Path("/corpus"), 0, {"train": 900, "dev": 10, "test": 10}, 2, 6,
                                       engines=synthetic.ENGINE_NAMES)
    counts = {name: sum(u.engine == name for u in utterances if "/train/" in u.path) for name in synthetic.ENGINE_NAMES}
    even = 900 / len(synthetic.ENGINE_NAMES)
    assert all(abs(count - even) < 0.2 * even for count in counts.values()), counts  # 3.5 standard deviations


def test_too_few_people_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    two = [synthetic.Speaker("flite", "kal", "", "kal"), synthetic.Speaker("flite", "awb", "", "awb")]
    monkeypatch.setattr(synthetic.RECORDED_ENGINES["flite"], "speakers", lambda: two)
    with pytest.raises(synthetic.PrepError, match="only 2 people"):
        synthetic.engine_groups(0, synthetic.ASR_ACCENTS, ("flite",))
    with pytest.raises(synthetic.PrepError, match="unknown engines"):
        synthetic.canonical_engines(["espeak", "mbrola"])


# --------------------------------------------------------------------------------------------- the default corpus

# Fingerprints of the default ASR plan, computed from data_prep/synthetic.py as committed before the
# engines were added (db269aa), in the same way as below: the full VARIANTS table standing in for the
# installed espeak-ng (so they do not depend on its version) and output under /corpus. A change here means
# `make demo` would train on another corpus than the one its published numbers were measured on.
PLAN_SHA256 = "81b1760173e73e4d892af96b677d3b8fc279bb00a31461d96412a09bc449a20c"
SPEAKERS_SHA256 = "68bd08c63869f5ffcba5f439e66bc525c09a837ab2055bc8ad8710b0222b6dc3"
CORPUS_JSON_SHA256 = "ef6848c91e101849aea9712a3cc7acd31f6c027f14d8417d42a6b02cb2139b80"  # espeak-ng "test-version"
# The Utterance fields of that version, in its order (later fields must not change what these mean).
ORIGINAL_FIELDS = ("path", "text", "voice", "variant", "rate", "pitch", "peak", "snr_db", "noise_seed",
                   "clip_offset", "leading_pause", "trailing_pause")


def sha256_json(value: object, **kwargs) -> str:
    return hashlib.sha256(json.dumps(value, **kwargs).encode()).hexdigest()


@pytest.mark.usefixtures("offline_speakers")
def test_default_plan_is_unchanged() -> None:
    assert [field.name for field in dataclasses.fields(synthetic.Utterance)][: len(ORIGINAL_FIELDS)] == list(
        ORIGINAL_FIELDS
    )
    utterances, speakers = synthetic.plan_asr(Path("/corpus"), 0, DEFAULT_SIZES, 2, 6)
    assert utterances == synthetic.plan_asr(Path("/corpus"), 0, DEFAULT_SIZES, 2, 6, engines=("espeak",))[0]
    assert {u.engine for u in utterances} == {"espeak"}
    assert all(record.keys() == {"voice", "variant", "split"} for record in speakers.values())
    rows = [[getattr(u, field) for field in ORIGINAL_FIELDS] for u in utterances]
    assert sha256_json(rows) == PLAN_SHA256
    assert sha256_json(speakers, sort_keys=True) == SPEAKERS_SHA256


@pytest.mark.usefixtures("offline_speakers")
def test_default_corpus_json_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "espeak_version", lambda: "test-version")
    for name in ("render_all", "write_transcripts"):  # only the record is compared: no synthesis
        monkeypatch.setattr(synthetic, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(synthetic.librispeech, "convert_split", lambda *args, **kwargs: 0)
    synthetic.generate_asr(tmp_path)
    record = json.loads((tmp_path / synthetic.CORPUS_FILE).read_text())
    assert record.keys() == {"settings", "espeak_ng", "speakers"}
    assert "engines" not in record["settings"]
    assert hashlib.sha256((tmp_path / synthetic.CORPUS_FILE).read_bytes()).hexdigest() == CORPUS_JSON_SHA256
