"""Manifest datasets under bad input: each bad row has its documented outcome and every good row arrives."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from quartznet.data.audio import AudioError, load_audio, stream_audio
from quartznet.data.datasets import (
    ASRItem,
    AudioToCharDataset,
    AudioToLabelDataset,
    LabelItem,
    Skipped,
    SkipReport,
    collate_asr,
    collate_labels,
)
from quartznet.data.manifest import ManifestError
from quartznet.data.sampler import DurationBucketSampler
from quartznet.data.text import CharTokenizer
from quartznet.network.heads import LABELS

RATE = 16000


def tone(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Seeded noise, (L,) or (L, channels)."""
    wave = (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))).astype(np.float32)
    return wave[:, 0] if channels == 1 else wave


def write_manifest(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n" for row in rows))
    return path


@pytest.fixture()
def battery(tmp_path: Path) -> dict:
    """Good rows and one of each bad row, as audio files plus an ASR manifest."""
    audio = tmp_path / "audio"
    audio.mkdir()
    good = {}
    for i, seconds in enumerate([0.5, 0.7, 0.9, 1.1]):
        name = f"good{i}.flac" if i % 2 else f"good{i}.wav"
        soundfile.write(audio / name, tone(seconds, seed=i), RATE)
        good[name] = (seconds, f"good row {'abcd'[i]}")
    soundfile.write(audio / "stereo44.wav", tone(0.6, 44100, channels=2), 44100)
    soundfile.write(audio / "narrow8k.wav", tone(0.8, 8000), 8000)
    soundfile.write(audio / "unknown_chars.wav", tone(0.4), RATE)
    good["stereo44.wav"] = (0.6, "stereo forty four")
    good["narrow8k.wav"] = (0.8, "eight kilohertz")
    good["unknown_chars.wav"] = (0.4, "Héllo, Wörld!")
    soundfile.write(audio / "long60.wav", tone(60.0, 8000), 8000)
    soundfile.write(audio / "empty_text.wav", tone(0.3), RATE)
    (audio / "zero_bytes.wav").write_bytes(b"")
    (audio / "garbage.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    soundfile.write(audio / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    nan = tone(0.5)
    nan[100:110] = np.nan
    soundfile.write(audio / "nan.wav", nan, RATE, subtype="FLOAT")
    soundfile.write(audio / "full.flac", tone(1.0), RATE)
    (audio / "truncated.flac").write_bytes((audio / "full.flac").read_bytes()[:6000])
    soundfile.write(audio / "full.wav", tone(1.0), RATE)
    (audio / "truncated.wav").write_bytes((audio / "full.wav").read_bytes()[:12000])

    rows = [{"audio_filepath": f"audio/{name}", "duration": seconds, "text": text}
            for name, (seconds, text) in good.items()]
    bad = {  # file -> the reason the item is skipped with
        "missing.wav": "file not found",
        "zero_bytes.wav": "unreadable audio",
        "garbage.wav": "unreadable audio",
        "empty.wav": "no audio samples",
        "nan.wav": "audio contains NaN or infinite samples",
        "truncated.flac": "unreadable audio",
        "truncated.wav": "truncated audio",
        "empty_text.wav": "empty transcript after dropping unknown characters",
    }
    durations = {"empty.wav": 0.0, "truncated.flac": 1.0, "truncated.wav": 1.0}
    for name in bad:
        text = "?!" if name == "empty_text.wav" else "bad row"
        rows.append({"audio_filepath": f"audio/{name}", "duration": durations.get(name, 0.5), "text": text})
    rows.append({"audio_filepath": str(audio / "long60.wav"), "duration": 60.0, "text": "too long"})
    manifest = write_manifest(tmp_path / "train.json", rows)
    return {"manifest": manifest, "good": good, "bad": bad, "audio": audio}


def test_tokenizer_lowercases_drops_and_counts():
    tokenizer = CharTokenizer(LABELS)
    ids = tokenizer.encode("  Héllo,\tWörld -- it's  ")
    assert tokenizer.decode(ids) == "hllo wrld it's"
    assert tokenizer.dropped == {"é": 1, "ö": 1, ",": 1, "-": 2}
    assert tokenizer.dropped_summary().startswith("5 characters outside the alphabet dropped: {'-': 2")
    assert tokenizer.encode("a b'") == [1, 0, 2, 27] and tokenizer.blank_id == 28
    with pytest.raises(ValueError, match="token id 28"):
        tokenizer.decode([28])


def test_bad_input_battery_through_dataloader_workers(battery, caplog):
    with caplog.at_level(logging.INFO):
        dataset = AudioToCharDataset(battery["manifest"], LABELS, max_duration=16.7)
    # The 60 s clip never enters the dataset; it is counted.
    assert dataset.filtered == {"shorter_than_min_duration": 0, "longer_than_max_duration": 1}
    assert len(dataset) == len(battery["good"]) + len(battery["bad"])
    # Unknown characters: dropped, counted and logged once at construction.
    assert dataset.dropped_characters == {"é": 1, "ö": 1, ",": 1, "!": 2, "?": 1}
    assert "6 characters outside the alphabet dropped" in caplog.text
    assert dataset.empty_transcripts == 1

    sampler = DurationBucketSampler(dataset.durations, batch_size=3, num_buckets=2, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2, collate_fn=collate_asr)
    report, arrived = SkipReport(), {}
    for batch in loader:
        assert batch.audio.dtype == torch.float32 and batch.audio.shape[0] == batch.size
        report.add(batch.skipped)
        for row in range(batch.size):
            length = int(batch.audio_len[row])
            assert not batch.audio[row, length:].any()  # zero padding past each length
            text = dataset.tokenizer.decode(batch.tokens[row, : batch.tokens_len[row]])
            arrived[text] = length

    expected_texts = {CharTokenizer(LABELS).normalize(text): seconds for seconds, text in battery["good"].values()}
    assert set(arrived) == set(expected_texts)  # every good row, once
    for text, seconds in expected_texts.items():
        assert abs(arrived[text] - seconds * RATE) <= 2  # stereo 44.1 kHz and 8 kHz resampled to 16 kHz
    assert arrived["hllo wrld"] == int(0.4 * RATE)

    skipped = {Path(path).name: reason for path, reason in report.examples}
    assert set(skipped) == set(battery["bad"])
    for name, reason in battery["bad"].items():
        assert skipped[name].startswith(reason), (name, skipped[name])
    assert report.count == len(battery["bad"])
    summary = report.summary()
    assert f"{len(battery['bad'])} items skipped" in summary and "3 x unreadable audio" in summary


def test_stereo_is_downmixed_and_resampled(tmp_path):
    # A 440 Hz sine at 0.4 on the left and 0.2 on the right: the mono mix is the same sine at 0.3.
    t = np.arange(int(0.5 * 44100)) / 44100
    sine = np.sin(2 * np.pi * 440 * t)
    soundfile.write(tmp_path / "stereo.wav", np.stack([0.4 * sine, 0.2 * sine], axis=1), 44100, subtype="FLOAT")
    manifest = write_manifest(tmp_path / "m.json", [{"audio_filepath": "stereo.wav", "duration": 0.5, "text": "x"}])
    item = AudioToCharDataset(manifest, LABELS)[0]
    assert isinstance(item, ASRItem) and item.audio.shape == (8000,)
    expected = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / RATE)
    np.testing.assert_allclose(item.audio[200:-200].numpy(), expected[200:-200], atol=2e-3)


def test_malformed_json_line_fails_before_anything_runs(tmp_path):
    soundfile.write(tmp_path / "a.wav", tone(0.2), RATE)
    manifest = write_manifest(
        tmp_path / "broken.json",
        [{"audio_filepath": "a.wav", "duration": 0.2, "text": "fine"}, '{"audio_filepath": "a.wav", "duration": 0.2,'],
    )
    with pytest.raises(ManifestError, match=r"broken\.json:2: not valid JSON"):
        AudioToCharDataset(manifest, LABELS)
    labels_manifest = write_manifest(tmp_path / "kws.json", [{"audio_filepath": "a.wav", "duration": 0.2}])
    with pytest.raises(ManifestError, match=r"kws\.json:1: missing field 'label'"):
        AudioToLabelDataset(labels_manifest, ["yes", "no"])


def test_waveform_transform_applies_per_item(battery):
    dataset = AudioToCharDataset(battery["manifest"], LABELS, waveform_transform=lambda wave: wave[: wave.shape[0] // 2])
    item = dataset[0]
    assert item.audio.shape[0] == int(0.5 * RATE) // 2


def test_classification_dataset_labels_and_unknown_label(tmp_path):
    for i, word in enumerate(["yes", "no", "yes"]):
        soundfile.write(tmp_path / f"{word}{i}.wav", tone(1.0, seed=i), RATE)
    rows = [{"audio_filepath": f"{word}{i}.wav", "duration": 1.0, "label": word} for i, word in enumerate(["yes", "no", "yes"])]
    rows.append({"audio_filepath": "missing.wav", "duration": 1.0, "label": "no"})
    manifest = write_manifest(tmp_path / "kws.json", rows)
    dataset = AudioToLabelDataset(manifest, ["no", "yes"])
    items = [dataset[i] for i in range(len(dataset))]
    assert [item.label for item in items[:3]] == [1, 0, 1] and isinstance(items[0], LabelItem)
    assert items[3] == Skipped(str(tmp_path / "missing.wav"), "file not found")
    batch = collate_labels(items)
    assert batch.audio.shape == (3, RATE) and batch.labels.tolist() == [1, 0, 1]
    assert batch.skipped == [(str(tmp_path / "missing.wav"), "file not found")]

    unknown = write_manifest(tmp_path / "unknown.json", [*rows[:2], {"audio_filepath": "yes0.wav", "duration": 1.0, "label": "maybe"}])
    with pytest.raises(ManifestError, match=r"unknown\.json:3: label 'maybe' is not one of the model's 2 labels"):
        AudioToLabelDataset(unknown, ["no", "yes"])


def test_all_skipped_batch_is_empty_not_an_error():
    batch = collate_asr([Skipped("a.wav", "file not found"), Skipped("b.wav", "unreadable audio (x)")])
    assert batch.size == 0 and batch.audio.shape == (0, 0) and batch.tokens.shape == (0, 0)
    assert batch.audio_len.shape == (0,) and batch.tokens_len.shape == (0,)
    assert len(batch.skipped) == 2
    labels = collate_labels([Skipped("c.wav", "file not found")])
    assert labels.size == 0 and labels.labels.shape == (0,)


def test_skip_report_merges_and_resets():
    first, second = SkipReport(max_examples=2), SkipReport()
    first.add([("a.wav", "file not found"), ("b.wav", "unreadable audio (Format not recognised)")])
    second.add([("c.wav", "unreadable audio (flac decoder lost sync)")])
    first.merge(second.as_dict())  # e.g. gathered from another rank
    assert first.as_dict() == {
        "count": 3,
        "by_reason": {"unreadable audio": 2, "file not found": 1},
        "examples": [["a.wav", "file not found"], ["b.wav", "unreadable audio (Format not recognised)"]],
    }
    assert first.summary().splitlines()[:3] == ["3 items skipped:", "  2 x unreadable audio", "  1 x file not found"]
    first.reset()
    assert first.count == 0 and first.summary() == "" and len(first) == 0


@pytest.mark.parametrize("rate", [16000, 8000, 44100, 22050, 11025])
def test_streamed_audio_is_the_loaded_audio(tmp_path, rate):
    """Blocks of stream_audio, resampled one by one, concatenate to exactly load_audio's waveform."""
    stereo = np.random.default_rng(rate).standard_normal((int(7.3 * rate), 2)).astype(np.float32) * 0.1
    path = tmp_path / "long.wav"
    soundfile.write(path, stereo, rate, subtype="FLOAT")
    for offset, duration in ((0.0, None), (1.25, 3.1), (6.9, None)):
        whole = load_audio(path, 16000, offset, duration)
        for block_seconds in (0.7, 2.0, 60.0):
            blocks = list(stream_audio(path, 16000, offset, duration, block_seconds=block_seconds))
            assert len(blocks) >= min(3, int((whole.shape[0] / 16000) / block_seconds))
            torch.testing.assert_close(torch.cat(blocks), whole, atol=1e-6, rtol=0)


def test_streamed_audio_reports_bad_files_like_load_audio(tmp_path):
    missing, empty, broken = tmp_path / "missing.wav", tmp_path / "empty.wav", tmp_path / "broken.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    broken.write_bytes(b"RIFF not really a wave file")
    nan = tmp_path / "nan.wav"  # fine for the first blocks, NaN near the end
    samples = np.zeros(5 * 16000, dtype=np.float32)
    samples[-10] = np.nan
    soundfile.write(nan, samples, 16000, subtype="FLOAT")
    for path, reason in ((missing, "file not found"), (empty, "no audio samples"), (broken, "unreadable audio"),
                         (nan, "NaN")):
        with pytest.raises(AudioError, match=reason):
            list(stream_audio(path, 16000, block_seconds=1.0))


def test_manifest_duration_is_checked_against_the_file(tmp_path, caplog):
    """Without `offset` a row's duration is a length hint: a longer file is used whole (and warned about);
    with `offset` the row is a slice and exactly `duration` seconds are read; repeated rows are kept."""
    soundfile.write(tmp_path / "two.wav", tone(2.0), RATE)
    soundfile.write(tmp_path / "half.wav", tone(0.5), RATE)
    rows = [
        {"audio_filepath": "two.wav", "duration": 1.0, "text": "hint"},  # file is 2 s: whole file
        {"audio_filepath": "two.wav", "duration": 1.0, "offset": 0.0, "text": "first slice"},
        {"audio_filepath": "two.wav", "duration": 0.5, "offset": 1.8, "text": "past the end"},
        {"audio_filepath": "half.wav", "duration": 0.6, "text": "close enough"},  # within 0.25 s
        {"audio_filepath": "half.wav", "duration": 0.6, "text": "close enough"},  # a repeated row
    ]
    with caplog.at_level(logging.WARNING):
        dataset = AudioToCharDataset(write_manifest(tmp_path / "m.json", rows), LABELS)
    assert dataset.duration_mismatches == 2 and dataset.duplicate_rows == 1
    assert "two.wav: manifest 1.00 s, file 2.00 s" in caplog.text and "manifest 2.30 s, file 2.00 s" in caplog.text
    assert "1 rows repeat an earlier row" in caplog.text
    assert dataset.durations == [2.0, 1.0, 0.5, 0.6, 0.6]
    lengths = [dataset[i].audio.shape[0] if isinstance(dataset[i], ASRItem) else dataset[i] for i in range(5)]
    assert lengths[:2] == [2 * RATE, RATE] and lengths[3] == lengths[4] == RATE // 2
    assert isinstance(lengths[2], Skipped) and lengths[2].reason.startswith("truncated audio")

    quiet = AudioToCharDataset(tmp_path / "m.json", LABELS, duration_tolerance=None)  # no header reads
    assert quiet.duration_mismatches == 0 and quiet.durations == [1.0, 1.0, 0.5, 0.6, 0.6]
