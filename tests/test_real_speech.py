"""data_prep/real_speech.py: the real-speech dev set from pocketsphinx-testdata, on a small look-alike of the
package built here (its file layout and transcript formats), and on the package itself when installed."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from data_prep import real_speech
from data_prep.common import PrepError, run_main

RATE = 16000


def tone(frames: int, seed: int) -> np.ndarray:
    """int16 samples with some energy, different for every seed."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-0.4, 0.4, frames) * 32767).astype(np.int16)


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def package(tmp_path: Path) -> dict:
    """A pocketsphinx-testdata look-alike: what real_speech should use, leave out and refuse."""
    root = tmp_path / "usr/share/pocketsphinx/test/data"
    cards = root / "cards"
    cards.mkdir(parents=True)
    # 001 is already 16 kHz 16-bit mono (copied as is); 002 is 8 kHz stereo float (converted).
    soundfile.write(str(cards / "001.wav"), tone(8000, 1), RATE, subtype="PCM_16")
    stereo = np.stack([tone(4000, 2), tone(4000, 3)], axis=1).astype(np.float32) / 32768
    soundfile.write(str(cards / "002.wav"), stereo, 8000, subtype="FLOAT")
    (cards / "cards.transcription").write_text("<s> ten of CLUBS  </s> (001)\n<s> four queen of clubs  </s> (002)\n")
    (cards / "cards.hyp").write_text("tin of clubs (001 -3466)\nfour queens of clubs (002 -3714)\n")  # decoder output
    (cards / "cards.fileids").write_text("001\n002\n")

    # Headerless 16 kHz 16-bit little-endian PCM; numbers.raw has no transcript, as in the package.
    raw = {"goforward": tone(12345, 4), "numbers": tone(2000, 5)}
    for name, samples in raw.items():
        samples.astype("<i2").tofile(root / f"{name}.raw")

    tidigits = root / "tidigits"
    tidigits.mkdir()
    # dhd.2934z has no transcript but a TIDIGITS name; "calibration" has neither.
    digits = {"woman.ak.3z3z9a": tone(7000, 6), "man.ah.6o838a": tone(9001, 7), "dhd.2934z": tone(3000, 8),
              "calibration": tone(3000, 3)}
    for name, samples in digits.items():
        samples.astype("<i2").tofile(tidigits / f"{name}.raw")
    (tidigits / "man.ah.111a.mfc").write_bytes(b"\0" * 64)  # features only, no audio
    (tidigits / "tidigits.lsn").write_text(
        "one one one (man.ah.111a)\n3 0 3 0 9 (woman.ak.3z3z9a)\nsix 0 eight 3 8 (man.ah.6o838a)\n"
    )
    # decoder output, never a reference (it misheard the last digit)
    (tidigits / "test-tidigits-simple.match").write_text("two nine three four oh (dhd.2934z -29271)\n")

    librivox = root / "librivox"
    librivox.mkdir()
    soundfile.write(str(librivox / "secret-0001.wav"), tone(16000, 9), RATE, subtype="PCM_16")
    (librivox / "transcription").write_text("<s> the secret sentence </s> (secret-0001)\n")
    (librivox / "fileids").write_text("secret-0001\n")
    return {"root": root, "raw": raw, "digits": digits}


def test_manifest_conversions_and_texts(package: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    real_speech.main(["--out", str(out), "--root", str(package["root"])])
    rows = {Path(row["audio_filepath"]).stem: row for row in read_manifest(out / real_speech.MANIFEST)}
    assert rows.keys() == {"001", "002", "woman.ak.3z3z9a", "man.ah.6o838a", "goforward", "dhd.2934z"}
    assert rows["001"]["text"] == "ten of clubs"  # the reference, not the decoder's cards.hyp
    assert rows["002"]["text"] == "four queen of clubs"
    assert rows["woman.ak.3z3z9a"]["text"] == "three zero three zero nine"
    assert rows["man.ah.6o838a"]["text"] == "six zero eight three eight"
    assert rows["goforward"]["text"] == "go forward ten meters"  # pocketsphinx's own tests expect it
    assert rows["dhd.2934z"]["text"] == "two nine three four zero"  # from its TIDIGITS name, not the .match

    for row in rows.values():
        audio = out / row["audio_filepath"]  # relative to the manifest's folder
        assert not Path(row["audio_filepath"]).is_absolute() and audio.suffix == ".wav"
        info = soundfile.info(str(audio))
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
        assert row["duration"] == info.frames / RATE
    for name, samples in package["digits"].items():
        if name in rows:  # a .raw becomes a WAV of exactly its samples
            written, _ = soundfile.read(str(out / rows[name]["audio_filepath"]), dtype="int16")
            np.testing.assert_array_equal(written, samples)
            assert rows[name]["duration"] == samples.size / RATE
    copied = out / rows["001"]["audio_filepath"]
    assert copied.read_bytes() == (package["root"] / "cards/001.wav").read_bytes()
    assert rows["002"]["duration"] == pytest.approx(4000 / 8000, abs=1 / RATE)  # 8 kHz stereo -> 16 kHz mono

    summary = capsys.readouterr().out
    assert re.search(r"^6 files, \d+\.\d\d minutes, 26 words -> ", summary, re.MULTILINE)
    for reason in ("numbers.raw: no transcript", "tidigits/calibration.raw: no transcript",
                   "tidigits/tidigits.lsn: 1 transcribed utterances have no audio (1 of them only MFCC features"):
        assert f"left out: {reason}" in summary
    assert "librivox" not in summary and "secret" not in (out / real_speech.MANIFEST).read_text()
    assert not any("librivox" in path.as_posix() or "secret" in path.name for path in out.rglob("*"))


def test_librivox_is_refused(package: dict, tmp_path: Path) -> None:
    librivox = package["root"] / "librivox"
    with pytest.raises(PrepError, match="reserved"):
        real_speech.build(tmp_path / "out", librivox)
    with pytest.raises(PrepError, match="reserved"):
        real_speech.build(tmp_path / "out", librivox / ".." / "librivox")
    # A way in through an allowed folder is refused too, not followed.
    (package["root"] / "cards" / "003.wav").symlink_to(librivox / "secret-0001.wav")
    with pytest.raises(PrepError, match="reserved"):
        real_speech.build(tmp_path / "out", package["root"])
    assert all("librivox" not in source.folder for source in real_speech.SOURCES)


def test_missing_package_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(PrepError, match=re.escape("apt-get install pocketsphinx-testdata")):
        real_speech.build(tmp_path / "out", missing)
    monkeypatch.setattr(sys, "argv", ["real_speech", "--out", str(tmp_path / "out"), "--root", str(missing)])
    with pytest.raises(SystemExit) as exit_info:
        run_main(real_speech.main)
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pocketsphinx-testdata is not installed" in error
    assert real_speech.DEFAULT_ROOT == Path("/usr/share/pocketsphinx/test/data")


def test_spell_digits_and_transcript_lines(tmp_path: Path) -> None:
    assert real_speech.spell_digits("2934z") == "two nine three four zero"
    assert real_speech.spell_digits("6o838 and 0 zoo") == "six oh eight three eight and zero zoo"
    transcript = tmp_path / "x.transcription"
    transcript.write_text("<s> go <sil> forward </s> (dir/u1)\n\nbad line without id\n")
    with pytest.raises(PrepError, match=r"x\.transcription:3"):
        real_speech.parse_transcript(transcript)
    transcript.write_text("<s> go <sil> forward </s> (dir/u1)\n")
    assert real_speech.parse_transcript(transcript) == {"u1": "go forward"}


@pytest.mark.skipif(not real_speech.DEFAULT_ROOT.is_dir(), reason="pocketsphinx-testdata is not installed "
                    "(sudo apt-get install pocketsphinx-testdata)")
def test_the_installed_package(tmp_path: Path) -> None:
    rows = read_manifest(real_speech.build(tmp_path))
    assert [Path(row["audio_filepath"]).parent.name for row in rows] == ["cards"] * 5 + ["audio", "tidigits"]
    assert rows[0]["text"] == "ten of clubs"
    assert [row["text"] for row in rows[5:]] == ["go forward ten meters", "two nine three four zero"]
    assert all(re.fullmatch(r"[a-z' ]+", row["text"]) and row["duration"] > 0.5 for row in rows)
