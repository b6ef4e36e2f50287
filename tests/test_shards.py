"""WebDataset shards: writing, round trip across simulated ranks and real DataLoader workers, fixed
batch counts per rank, pipes and brace patterns, buckets, bad samples and resumable writing."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

from data_prep import make_shards
from quartznet.data import shards as shards_module
from quartznet.data.audio import load_audio
from quartznet.data.datasets import SkipReport
from quartznet.data.shards import INDEX_NAME, ShardDataset, shard_name, write_shards
from quartznet.network.heads import LABELS

RATE = 16000
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def corpus(folder: Path, count: int, field: str = "text") -> Path:
    """`count` distinct utterances (FLAC and WAV, 0.1-0.4 s) and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        seconds = 0.1 + 0.3 * i / count
        wave = (0.1 * np.random.default_rng(i).standard_normal(int(seconds * RATE))).astype(np.float32)
        name = f"utt{i:03d}.{'flac' if i % 2 else 'wav'}"
        soundfile.write(folder / name, wave, RATE)
        value = f"{WORDS[i % 8]} {WORDS[i // 8]}" if field == "text" else WORDS[i % 3]
        rows.append({"audio_filepath": name, "duration": len(wave) / RATE, field: value})
    manifest = folder / "manifest.json"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def texts_of(batch) -> list[str]:
    return ["".join(LABELS[t] for t in batch.tokens[row, : batch.tokens_len[row]]) for row in range(batch.size)]


def epoch_over_ranks(world: int, epoch: int = 0, **kwargs) -> dict[int, list]:
    """Each simulated rank's batches for one epoch, read through a real DataLoader."""
    out = {}
    for rank in range(world):
        dataset = ShardDataset(rank=rank, world_size=world, **kwargs)
        dataset.set_epoch(epoch)
        out[rank] = list(dataset.loader())
        assert len(out[rank]) == len(dataset)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shards")
    manifest = corpus(root / "audio", 24)
    index = write_shards(manifest, root / "out", shard_size=6, progress=False)
    return {"manifest": manifest, "out": root / "out", "index": index}


def test_round_trip_every_utterance_once_per_epoch_over_2_ranks_x_2_workers(written):
    assert [s["count"] for s in written["index"]["shards"]] == [6, 6, 6, 6] and written["index"]["count"] == 24
    rows = [json.loads(line) for line in written["manifest"].read_text().splitlines()]
    expected = {row["text"]: load_audio(written["manifest"].parent / row["audio_filepath"]) for row in rows}
    orders = []
    for epoch in range(2):
        per_rank = epoch_over_ranks(2, epoch, urls=None, labels=LABELS, batch_size=3, index=written["out"], num_workers=2)
        assert [len(batches) for batches in per_rank.values()] == [4, 4]
        seen = []
        for batches in per_rank.values():
            for batch in batches:
                assert not batch.skipped and batch.size == 3
                for row, text in enumerate(texts_of(batch)):
                    seen.append(text)
                    torch.testing.assert_close(batch.audio[row, : batch.audio_len[row]], expected[text], rtol=0, atol=0)
        assert sorted(seen) == sorted(expected)  # each exactly once
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_shards_store_the_audio_bytes_as_they_are(written):
    audio_dir = written["manifest"].parent
    stored = {}
    for shard in written["index"]["shards"]:
        with tarfile.open(written["out"] / shard["name"]) as tar:
            for member in tar.getmembers():
                stored[member.name] = tar.extractfile(member).read()
    metas = {name: json.loads(data) for name, data in stored.items() if name.endswith(".json")}
    assert len(metas) == 24
    for name, meta in metas.items():
        source = Path(meta["audio_filepath"])
        audio_name = name[: -len("json")] + source.suffix.lstrip(".")
        assert stored[audio_name] == (audio_dir / source.name).read_bytes()


def test_three_shards_over_two_ranks_give_equal_batch_counts(tmp_path):
    manifest = corpus(tmp_path / "audio", 24)
    write_shards(manifest, tmp_path / "out", shard_size=8, progress=False)  # 3 shards of 8
    # 1 worker: ranks hold 2 and 1 shards (16 and 8 utterances), so both take 16 / 4 = 4 batches and the
    # second repeats 8 utterances. 2 workers: 4 streams, so each shard is read as 2 parts of 4 and
    # every rank gets 3 parts (12 utterances, 3 batches): nothing repeats.
    for workers, batches_per_rank, repeats in ((0, 4, 8), (2, 3, 0)):
        per_rank = epoch_over_ranks(2, urls=None, labels=LABELS, batch_size=4, index=tmp_path / "out", num_workers=workers)
        assert [len(batches) for batches in per_rank.values()] == [batches_per_rank] * 2
        seen = Counter(text for batches in per_rank.values() for batch in batches for text in texts_of(batch))
        assert len(seen) == 24  # nothing lost
        assert sum(seen.values()) == 24 + repeats


@pytest.mark.parametrize("world, workers", [(1, 0), (2, 1), (3, 2), (4, 3), (8, 2)])
def test_plan_gives_every_rank_the_same_batch_count(world, workers):
    """The plan alone (no files): 7 shards of uneven sizes, any world size and worker count."""
    counts = [int(c) for c in np.random.default_rng(world).integers(1, 40, size=7)]
    index = {"format": "quartznet-shards-1", "field": "text", "characters": {},
             "shards": [{"name": f"shard-{i:06d}.tar", "bucket": 0, "count": c} for i, c in enumerate(counts)]}
    urls = [shard["name"] for shard in index["shards"]]
    ranks = [ShardDataset(urls, LABELS, batch_size=4, index=index, rank=r, world_size=world, num_workers=workers)
             for r in range(world)]
    assert len({len(dataset) for dataset in ranks}) == 1
    stride = max(workers, 1)
    for epoch in range(3):
        streams, quotas = ranks[0]._plan(epoch)
        assert all(dataset._plan(epoch) == (streams, quotas) for dataset in ranks)  # every rank computes the same plan
        assert [sum(quotas[r * stride : (r + 1) * stride]) for r in range(world)] == [len(ranks[0])] * world
        for stream, quota in zip(streams, quotas):
            assert quota * 4 >= sum(unit[3] for unit in stream)  # room for every own utterance
        parts = [unit[:3] for stream in streams for unit in stream]
        per_shard = parts[0][2]
        assert sorted(parts) == sorted((url, p, per_shard) for url, c in zip(urls, counts) for p in range(per_shard) if p < c)


def test_pipe_urls_and_brace_patterns(written):
    pattern = f"pipe:cat {written['out']}/shard-{{000000..000003}}.tar"
    dataset = ShardDataset(pattern, LABELS, batch_size=4, index=written["out"] / INDEX_NAME, shuffle=False)
    assert len(dataset.shards) == 4 and shard_name(dataset.shards[2][0]) == "shard-000002.tar"
    texts = [text for batch in dataset for text in texts_of(batch)]
    assert len(texts) == len(set(texts)) == 24
    local = ShardDataset(f"{written['out']}/shard-{{000000..000001}}.tar", LABELS, batch_size=4)  # index found beside
    assert len(local) == 3
    with pytest.raises(ValueError, match="pass index="):
        ShardDataset(pattern, LABELS, batch_size=4)


def test_bad_samples_and_a_corrupt_shard_are_skipped_and_reported(tmp_path):
    manifest = corpus(tmp_path / "audio", 12)
    audio = tmp_path / "audio"
    full = audio / "utt001.flac"
    (audio / "truncated.flac").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    (audio / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    extra = [
        {"audio_filepath": "truncated.flac", "duration": 0.2, "text": "truncated"},
        {"audio_filepath": "garbage.wav", "duration": 0.2, "text": "garbage"},
        {"audio_filepath": "missing.wav", "duration": 0.2, "text": "missing"},
        {"audio_filepath": "utt002.wav", "duration": 0.2, "text": "?!"},
    ]
    with open(manifest, "a") as out:
        out.writelines(json.dumps(row) + "\n" for row in extra)
    index = write_shards(manifest, tmp_path / "out", shard_size=7, progress=False, shuffle=False)
    assert sorted(Path(path).name for path, _ in index["skipped"]) == ["garbage.wav", "missing.wav"]
    assert index["count"] == 14 and index["characters"]["?"] == 1

    dataset = ShardDataset(None, LABELS, batch_size=7, index=tmp_path / "out", shuffle=False)
    report, texts = SkipReport(), []
    for batch in dataset:
        report.add(batch.skipped)
        texts += texts_of(batch)
    assert len(texts) == 12 and report.count == 2
    assert set(report.by_reason) == {"unreadable audio", "empty transcript after dropping unknown characters"}

    # A shard cut in the middle: its readable samples arrive, the error is reported, the count holds.
    shard = tmp_path / "out" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:9000])
    report.reset()
    batches = list(dataset)
    assert len(batches) == len(dataset) == 2
    for batch in batches:
        report.add(batch.skipped)
    assert any(reason.startswith("unreadable shard") for _, reason in report.examples)


def test_sliced_entries_store_only_their_slice(tmp_path):
    wave = (0.1 * np.random.default_rng(0).standard_normal(2 * RATE)).astype(np.float32)
    soundfile.write(tmp_path / "long.flac", wave, RATE)
    rows = [{"audio_filepath": "long.flac", "offset": 0.5, "duration": 0.25, "text": "first slice"},
            {"audio_filepath": "long.flac", "offset": 1.5, "duration": 0.5, "text": "last slice"},
            {"audio_filepath": "long.flac", "offset": 3.0, "duration": 0.5, "text": "past the end"}]
    (tmp_path / "m.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    index = write_shards(tmp_path / "m.json", tmp_path / "out", progress=False)
    assert index["count"] == 2 and index["skipped"][0][1].startswith("offset 3.0 s is past the end")
    batch = next(iter(ShardDataset(None, LABELS, batch_size=2, index=tmp_path / "out", shuffle=False, sort_window=0)))
    for row, text in enumerate(texts_of(batch)):
        offset, duration = (0.5, 0.25) if text == "first slice" else (1.5, 0.5)
        expected = load_audio(tmp_path / "long.flac", offset=offset, duration=duration)
        torch.testing.assert_close(batch.audio[row, : batch.audio_len[row]], expected, rtol=0, atol=0)


def test_duration_buckets_and_classification(tmp_path):
    manifest = corpus(tmp_path / "audio", 20, field="label")
    index = write_shards(manifest, tmp_path / "out", field="label", shard_size=4, num_buckets=2, progress=False)
    low, high = index["buckets"]
    assert low["count"] == high["count"] == 10 and low["max_duration"] < high["min_duration"]
    assert {shard["name"].split("-")[0] for shard in index["shards"]} == {"bucket00", "bucket01"}
    assert index["labels"] == {"alpha": 7, "bravo": 7, "charlie": 6}

    labels = ["charlie", "bravo", "alpha"]
    dataset = ShardDataset(None, labels, batch_size=5, index=tmp_path / "out", bucket=1)
    batches = list(dataset)
    assert len(batches) == 2 and all(batch.labels.shape == (5,) for batch in batches)
    assert min(int(batch.audio_len.min()) for batch in batches) >= high["min_duration"] * RATE - 1
    with pytest.raises(ValueError, match=r"labels \['charlie'\] are not among the model's labels"):
        ShardDataset(None, ["alpha", "bravo"], batch_size=5, index=tmp_path / "out")


def test_sort_window_batches_similar_durations(tmp_path):
    manifest = corpus(tmp_path / "audio", 64)
    write_shards(manifest, tmp_path / "out", shard_size=16, progress=False)

    def padding(sort_window: int) -> float:
        dataset = ShardDataset(None, LABELS, batch_size=4, index=tmp_path / "out", sort_window=sort_window, seed=1)
        batches = list(dataset)
        assert len(batches) == 16
        return sum(b.size * b.audio_len.max() - b.audio_len.sum() for b in batches) / sum(b.size * b.audio_len.max() for b in batches)

    assert padding(8) < 0.1 < 0.2 < padding(0)


def test_worker_count_must_match_the_dataloader(written, monkeypatch):
    dataset = ShardDataset(None, LABELS, batch_size=4, index=written["out"], num_workers=0)
    # As seen from inside worker 0 of a 2-worker DataLoader (a real one takes 10 s to shut down after the error).
    monkeypatch.setattr(shards_module, "get_worker_info", lambda: SimpleNamespace(num_workers=2, id=0))
    with pytest.raises(ValueError, match="num_workers=0 but runs in a DataLoader with 2 workers"):
        next(iter(dataset))


def test_writing_is_deterministic_and_resumes(tmp_path, monkeypatch):
    manifest = corpus(tmp_path / "audio", 12)
    clean = write_shards(manifest, tmp_path / "clean", shard_size=3, progress=False)

    class Interrupted(Exception):
        pass

    calls = {"n": 0}
    original = shards_module._audio_sample

    def failing(entry, info):
        calls["n"] += 1
        if calls["n"] == 8:
            raise Interrupted  # as if killed while writing the third shard
        return original(entry, info)

    monkeypatch.setattr(shards_module, "_audio_sample", failing)
    with pytest.raises(Interrupted):
        write_shards(manifest, tmp_path / "resumed", shard_size=3, progress=False)
    monkeypatch.setattr(shards_module, "_audio_sample", original)
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "resumed").glob("shard-*.tar")}
    assert len(finished) == 2 and not (tmp_path / "resumed" / INDEX_NAME).exists()
    leftover = tmp_path / "resumed" / ".shard-000002.tar.x1y2z3.tmp"  # what kill -9 in the third shard leaves
    leftover.write_bytes(b"half a shard")

    resumed = write_shards(manifest, tmp_path / "resumed", shard_size=3, progress=False)
    assert {n: (tmp_path / "resumed" / n).stat().st_mtime_ns for n in finished} == finished  # kept, not rewritten
    assert not leftover.exists() and not list((tmp_path / "resumed").glob(".*.tmp"))
    assert resumed["shards"] == clean["shards"]
    for shard in clean["shards"]:
        assert (tmp_path / "resumed" / shard["name"]).read_bytes() == (tmp_path / "clean" / shard["name"]).read_bytes()
    assert write_shards(manifest, tmp_path / "resumed", shard_size=3, progress=False) == resumed  # up to date
    (tmp_path / "resumed" / INDEX_NAME).write_text('{"torn')  # a damaged index is written again, not a crash
    assert write_shards(manifest, tmp_path / "resumed", shard_size=3, progress=False) == resumed


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_shards.main(["--help"])
    assert exit_info.value.code == 0 and "--num-buckets" in capsys.readouterr().out
    manifest = corpus(tmp_path / "audio", 6)
    assert make_shards.main(["--manifest", str(manifest), "--out", str(tmp_path / "out"), "--shard-size", "4", "--quiet"]) == 0
    assert "6 utterances" in capsys.readouterr().out
    assert make_shards.main(["--manifest", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")]) == 1
    assert "manifest not found" in capsys.readouterr().err
