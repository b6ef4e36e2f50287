"""WebDataset tar shards: written from any manifest, read with a fixed number of batches per rank.

Layout written by `write_shards` (and `data_prep/make_shards.py`) into one folder:
- `shard-000000.tar`, ... (or `bucket00-shard-000000.tar`, ... when split into duration buckets):
  per utterance `<key>.<flac|wav|ogg|...>` (the audio file's bytes as stored) and `<key>.json`
  (`text` or `label`, `duration`, `audio_filepath` of the source);
- `index.json`: the shards with their utterance counts, durations and buckets, the text characters
  or label counts, and what was skipped while writing. Readers take their total counts from it.

`ShardDataset` reads shards (local paths, brace patterns such as `shard-{000000..000009}.tar`, or any
URL webdataset opens, `pipe:curl -s ...` included), spreads them over ranks and DataLoader workers,
shuffles through a buffer and yields ready batches. Every rank yields the same, fixed number of
batches every epoch, computed from the index, whatever the shard count (NeMo's tarred datasets hang
or skip validation when the shard count does not divide the world size). A rank with fewer
utterances than the busiest one fills its extra batches by wrapping around its own shards; the
repeats are logged at construction.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import webdataset
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from quartznet.common.errors import ConfigError, InputError, MissingInputError
from quartznet.common.outputs import atomic_write_text, check_not_an_input, remove_temporaries, replaced_atomically
from quartznet.data.audio import AudioError, load_audio
from quartznet.data.datasets import (
    ASRBatch,
    ASRItem,
    LabelBatch,
    LabelItem,
    Skipped,
    WaveformTransform,
    check_length,
    collate_asr,
    collate_labels,
)
from quartznet.data.manifest import ManifestEntry, manifest_paths, read_manifests
from quartznet.data.sampler import distributed_rank_and_world
from quartznet.data.text import CharTokenizer

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "quartznet-shards-1"
PROGRESS_NAME = ".make_shards_progress.json"
# Extensions stored as they are; soundfile recognises each from its content when reading bytes.
AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "opus", "mp3")


# ----------------------------------------------------------------------------------------- writing


def _sample_key(position: int, path: Path) -> str:
    # webdataset splits "key.ext" at the first dot of the file name, so keys must not contain dots.
    return f"{position:08d}-{re.sub(r'[^A-Za-z0-9_-]', '_', path.stem)}"


def _audio_sample(entry: ManifestEntry, info: Any) -> tuple[str, bytes, float]:
    """(extension, bytes, duration) to store for one entry; `info` is its `soundfile.info`."""
    if entry.offset > 0:
        # A slice of a longer recording: store only the slice (as float WAV, exactly the samples
        # load_audio reads) so shards do not carry the whole recording once per segment.
        audio = load_audio(entry.audio_filepath, info.samplerate, offset=entry.offset, duration=entry.duration)
        buffer = io.BytesIO()
        soundfile.write(buffer, audio.numpy(), info.samplerate, format="WAV", subtype="FLOAT")
        return "wav", buffer.getvalue(), audio.shape[0] / info.samplerate
    extension = entry.audio_filepath.suffix.lower().lstrip(".")
    if extension not in AUDIO_EXTENSIONS:
        extension = info.format.lower()
    return extension, entry.audio_filepath.read_bytes(), entry.duration


def _fingerprint(entries: Sequence[ManifestEntry], options: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for entry in entries:
        digest.update(json.dumps([str(entry.audio_filepath), entry.duration, entry.text, entry.label, entry.offset]).encode())
    return digest.hexdigest()


def _write_shard(path: Path, members: list[tuple[int, ManifestEntry, Any]], field: str, bucket: int) -> dict[str, Any]:
    """Write one shard atomically; returns its index record, byte size, text/label counts and skipped entries."""
    total, count, values, skipped = 0.0, 0, Counter(), []
    with (
        replaced_atomically(path) as temporary,
        open(temporary, "wb") as stream,
        webdataset.TarWriter(stream, encoder=False, mtime=0.0) as tar,
    ):
        for position, entry, info in members:
            try:
                extension, audio, duration = _audio_sample(entry, info)
            except AudioError as error:  # a slice that cannot be cut (past the end, broken file)
                skipped.append([error.path, error.reason])
                continue
            value = getattr(entry, field)
            meta = {field: value, "duration": duration, "audio_filepath": str(entry.audio_filepath)}
            tar.write({"__key__": _sample_key(position, entry.audio_filepath), extension: audio,
                       "json": json.dumps(meta, ensure_ascii=False).encode()})
            total += duration
            count += 1
            values.update(value if field == "text" else [value])
    record = {"name": path.name, "bucket": bucket, "count": count, "duration": round(total, 3)}
    return {"record": record, "bytes": path.stat().st_size, "values": values, "skipped": skipped}


def write_shards(
    manifest: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    field: str = "text",
    shard_size: int = 512,
    num_buckets: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    min_duration: float | None = None,
    max_duration: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `manifest`'s utterances into tar shards under `out_dir`; returns the index (also in index.json).

    Shards hold about `shard_size` utterances (evenly split). With `num_buckets` > 1 the utterances
    are first sorted into that many equal-count duration buckets, one shard set each. Utterances are
    shuffled (from `seed`) before being cut into shards, so a shard mixes speakers. A missing file
    or one without a readable audio header is skipped and listed in the index's `skipped`; files
    that are broken further in are found by the reader, which skips and reports them.

    Idempotent and resumable: output is byte-for-byte determined by the manifest and options; a
    rerun keeps the shards an interrupted run finished and returns at once when all are done.
    """
    if shard_size < 1 or num_buckets < 1:
        raise ConfigError(f"shard_size ({shard_size}) and num_buckets ({num_buckets}) must be >= 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: is a file; give a folder for the shards")
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [str(path) for path in manifest_paths(manifest)]
    for name in (INDEX_NAME, PROGRESS_NAME):  # never over a manifest (the shards' names: below)
        check_not_an_input(out_dir / name, sources)
    entries = read_manifests(manifest, field=field, min_duration=min_duration, max_duration=max_duration)
    options = {"sources": sources, "field": field, "shard_size": shard_size, "num_buckets": num_buckets,
               "shuffle": shuffle, "seed": seed, "min_duration": min_duration, "max_duration": max_duration}
    fingerprint = _fingerprint(entries, options)
    index_path = out_dir / INDEX_NAME
    index = _saved_json(index_path)
    if index.get("fingerprint") == fingerprint and all((out_dir / s["name"]).is_file() for s in index["shards"]):
        log.info("%s is up to date", index_path)
        return index

    usable, skipped = _readable_entries(entries, progress)
    if not usable:
        raise InputError(f"no usable audio in {', '.join(sources)} ({len(skipped)} files skipped, e.g. {skipped[:3]})")
    usable.sort(key=lambda item: item[1].duration)  # ties keep manifest order, so the split is stable
    buckets, plan = _plan_shards(len(usable), num_buckets, shard_size, shuffle, seed)
    for name, _, _ in plan:
        check_not_an_input(out_dir / name, sources)
    done = _write_planned_shards(out_dir, plan, usable, field, fingerprint, progress)

    shards = [done[name]["record"] for name, _, _ in plan]
    values: Counter[str] = Counter()
    for name, _, _ in plan:
        values.update(done[name]["values"])
        skipped.extend(done[name]["skipped"])
    bucket_records = []
    for bucket_id, members in enumerate(buckets):
        durations = [usable[m][1].duration for m in members]
        bucket_records.append({"bucket": bucket_id, "count": sum(s["count"] for s in shards if s["bucket"] == bucket_id),
                               "min_duration": min(durations), "max_duration": max(durations),
                               "shards": sum(s["bucket"] == bucket_id for s in shards)})
    index = {
        "format": INDEX_FORMAT,
        "fingerprint": fingerprint,
        "field": field,
        "count": sum(s["count"] for s in shards),
        "duration": round(sum(s["duration"] for s in shards), 3),
        "shards": shards,
        "buckets": bucket_records,
        "characters" if field == "text" else "labels": dict(values.most_common()),
        "skipped": skipped,
        "options": options,
    }
    atomic_write_text(index_path, json.dumps(index, indent=1, ensure_ascii=False))
    (out_dir / PROGRESS_NAME).unlink(missing_ok=True)
    if skipped:
        log.warning("%d utterances skipped while writing shards, e.g. %s", len(skipped), skipped[:3])
    return index


def _readable_entries(entries: Sequence[ManifestEntry], progress: bool) -> tuple[list[tuple[int, ManifestEntry, Any]], list[list[str]]]:
    """(manifest position, entry, soundfile info) of every entry whose audio header reads, and
    [path, reason] of the others."""
    usable, skipped = [], []
    for position, entry in enumerate(tqdm(entries, desc="checking audio", unit="utt", disable=not progress)):
        try:
            info = soundfile.info(str(entry.audio_filepath))
        except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
            reason = "file not found" if not entry.audio_filepath.is_file() else f"unreadable audio header ({error})"
            skipped.append([str(entry.audio_filepath), reason])
            continue
        usable.append((position, entry, info))
    return usable, skipped


def _plan_shards(
    count: int, num_buckets: int, shard_size: int, shuffle: bool, seed: int
) -> tuple[list[list[int]], list[tuple[str, int, list[int]]]]:
    """Equal-count duration buckets over `count` utterances sorted shortest first, and the shards cut
    from each: (buckets as index lists, [(shard name, bucket, indices)])."""
    buckets = [list(bucket) for bucket in np.array_split(np.arange(count), min(num_buckets, count))]
    rng = np.random.default_rng(seed)
    plan = []
    for bucket_id, members in enumerate(buckets):
        if shuffle:
            members = [members[i] for i in rng.permutation(len(members))]
        prefix = f"bucket{bucket_id:02d}-shard" if len(buckets) > 1 else "shard"
        for shard_id, chunk in enumerate(np.array_split(np.asarray(members), math.ceil(len(members) / shard_size))):
            plan.append((f"{prefix}-{shard_id:06d}.tar", bucket_id, chunk.tolist()))
    return buckets, plan


def _write_planned_shards(
    out_dir: Path, plan: list[tuple[str, int, list[int]]], usable: list[tuple[int, ManifestEntry, Any]],
    field: str, fingerprint: str, progress: bool,
) -> dict[str, Any]:
    """Write every planned shard not already finished by an earlier run with the same fingerprint
    (tracked in the progress file after each shard); returns shard name -> its write record."""
    progress_path = out_dir / PROGRESS_NAME
    saved = _saved_json(progress_path)
    done: dict[str, Any] = saved["done"] if saved.get("fingerprint") == fingerprint else {}
    with tqdm(total=len(usable), desc=f"writing {len(plan)} shards", unit="utt", disable=not progress) as bar:
        for name, bucket_id, members in plan:
            path = out_dir / name
            if not (name in done and path.is_file() and path.stat().st_size == done[name]["bytes"]):
                remove_temporaries(path)  # a killed earlier run's unfinished copy of this shard
                done[name] = _write_shard(path, [usable[member] for member in members], field, bucket_id)
                atomic_write_text(progress_path, json.dumps({"fingerprint": fingerprint, "done": done}))
            bar.update(len(members))
    return done


def _saved_json(path: Path) -> dict[str, Any]:
    """A JSON object this writer saved earlier (index, progress), or {} when there is none or it cannot be
    read: the work it describes is then done again."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


# ----------------------------------------------------------------------------------------- reading


def shard_name(url: str) -> str:
    """The shard's file name in a path or URL: 'pipe:curl -s https://h/d/shard-000001.tar' -> 'shard-000001.tar'."""
    if url.startswith("pipe:"):
        url = url[len("pipe:"):].split()[-1]
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _read_index(index: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], Path | None, str]:
    """(index, its folder or None, a name for messages)."""
    if isinstance(index, Mapping):
        return dict(index), None, "the given index"
    path = Path(index)
    if path.is_dir():
        path = path / INDEX_NAME
    if not path.is_file():
        raise MissingInputError(f"shard index not found: {path} (make_shards.py writes it next to the shards)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read the shard index ({error.strerror or error})") from None
    except ValueError:  # not JSON, not UTF-8
        raise InputError(f"{path}: not a quartznet shard index (not JSON); give the index.json that "
                         "python -m data_prep.make_shards wrote, or run it again") from None
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != INDEX_FORMAT:
        raise InputError(f"{path}: not a quartznet shard index (format {found!r}, expected {INDEX_FORMAT!r})")
    return data, path.parent, str(path)


def _buffer_shuffle(samples: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Shuffle a stream through a buffer of `size` items (undecoded, so memory is size x file size)."""
    buffer: list[Any] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        slot = int(rng.integers(size))
        yield buffer[slot]
        buffer[slot] = sample
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


class ShardDataset(IterableDataset):
    """Batches from WebDataset shards: ASRBatch when the index holds `text`, LabelBatch for `label`.

    `urls`: a brace pattern ("/data/shard-{000000..000009}.tar"), a list of paths/URLs, or None for
    every shard in the index (resolved next to it). `index`: index.json (or its folder, or the loaded
    dict); when None, the index.json beside the first local shard. `bucket` keeps one duration bucket.
    `sort_window`: after the shuffle buffer, every `sort_window` batches' worth of utterances are
    sorted by duration, cut into batches and those batches emitted in random order: bucketing on
    the fly, which cuts padding as DurationBucketSampler does (0 turns it off).

    Use with `DataLoader(dataset, batch_size=None, num_workers=dataset.num_workers)` (or
    `dataset.loader()`): batching happens here, per stream, so the batch count per rank is fixed at
    `len(dataset)` (each worker's last batch of its own utterances may be partial; a rank short of
    utterances adds full batches of repeats). `num_workers` must equal the DataLoader's. Under DDP all
    ranks must use the same `seed`, `batch_size` and `num_workers`. Call `set_epoch(epoch)` on the main
    process's dataset before each epoch (e.g. in `on_train_epoch_start`); without it each new
    iteration advances by itself. `rank`/`world_size` default to torch.distributed or RANK/WORLD_SIZE.
    """

    def __init__(
        self,
        urls: str | Sequence[str] | None,
        labels: Sequence[str],
        batch_size: int,
        index: str | os.PathLike | Mapping[str, Any] | None = None,
        bucket: int | None = None,
        sample_rate: int = 16000,
        shuffle: bool = True,
        shuffle_buffer: int = 512,
        sort_window: int = 16,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        min_duration: float | None = None,
        max_duration: float | None = None,
        waveform_transform: WaveformTransform | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        index_name = self._select_shards(urls, index, bucket)
        self.field = self.index["field"]
        self.labels = list(labels)
        self._check_vocabulary(index_name)
        self.batch_size, self.sample_rate = batch_size, sample_rate
        self.shuffle, self.shuffle_buffer, self.sort_window, self.seed = shuffle, shuffle_buffer, sort_window, seed
        self.rank, self.world_size = distributed_rank_and_world(rank, world_size)
        self.num_workers = num_workers
        self.min_duration, self.max_duration = min_duration, max_duration
        self.waveform_transform = waveform_transform
        self.batches_per_rank = self._count_batches()
        self._next_epoch = 0

    def _select_shards(
        self, urls: str | Sequence[str] | None, index: str | os.PathLike | Mapping[str, Any] | None, bucket: int | None
    ) -> str:
        """Read the index and keep the (url, utterance count) of each selected shard in `self.shards`;
        returns the index's name for messages."""
        if isinstance(urls, str):
            urls = webdataset.shardlists.expand_urls(urls)
        if index is None:
            if not urls or not Path(urls[0]).is_file():
                raise ConfigError("pass index= (the index.json written with the shards) when shards are URLs or pipes")
            index = Path(urls[0]).parent / INDEX_NAME
        self.index, folder, index_name = _read_index(index)
        records = {shard["name"]: shard for shard in self.index["shards"]}
        if urls is None:
            if folder is None:
                raise ConfigError("pass urls= when the index is given as a dict")
            urls = [str(folder / name) for name in records]
        self.shards = []
        for url in urls:
            record = records.get(shard_name(url))
            if record is None:
                raise InputError(f"shard {url} is not listed in {index_name}; pass the index written with these shards")
            if bucket is None or record["bucket"] == bucket:
                self.shards.append((url, int(record["count"])))
        if not any(count for _, count in self.shards):
            raise InputError(f"no utterances in the selected shards of {index_name} (bucket={bucket})")
        return index_name

    def _count_batches(self) -> int:
        """Batches per rank per epoch. The same on every rank and in every epoch: the plan's loads depend
        only on the sorted utterance counts of the shard parts, not on which shard lands where."""
        streams, quotas = self._plan(0)
        batches_per_rank = sum(quotas[: self._workers])
        total = sum(count for _, count in self.shards)
        own_batches = sum(math.ceil(sum(unit[3] for unit in stream) / self.batch_size) for stream in streams)
        repeats = (sum(quotas) - own_batches) * self.batch_size
        log.info(
            "%d shards, %d utterances over %d ranks x %d workers: %d batches of up to %d per rank per epoch, "
            "%d utterances repeated to fill them", len(self.shards), total, self.world_size, self._workers,
            batches_per_rank, self.batch_size, repeats,
        )
        return batches_per_rank

    @property
    def _workers(self) -> int:
        return max(1, self.num_workers)

    def _check_vocabulary(self, index_name: str) -> None:
        if self.field == "text":
            self.tokenizer = CharTokenizer(self.labels)
            # Report dropped characters once, from the index's character counts, as the map-style
            # dataset does from the manifest; the workers' own counts never reach the main process.
            self.dropped_characters = Counter(
                {char: count for char, count in self.index["characters"].items()
                 if not char.isspace() and not self.tokenizer.normalize(char)}
            )
            self.tokenizer.dropped.clear()
            if self.dropped_characters:
                total = sum(self.dropped_characters.values())
                log.warning("%s: %d characters outside the alphabet dropped: %s",
                            index_name, total, dict(self.dropped_characters.most_common()))
        else:
            unknown = sorted(set(self.index["labels"]) - set(self.labels))
            if unknown:
                raise InputError(f"{index_name}: labels {unknown} are not among the model's labels {self.labels}")
            self.label_index = {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return self.batches_per_rank

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def loader(self, **kwargs: Any) -> DataLoader:
        """A DataLoader over this dataset with the matching worker count (kwargs: pin_memory, ...)."""
        # Persistent workers keep their dataset copy, whose epoch then advances per iteration.
        kwargs.setdefault("persistent_workers", self.num_workers > 0)
        return DataLoader(self, batch_size=None, num_workers=self.num_workers, **kwargs)

    def _assign(self, epoch: int) -> list[list[tuple[str, int, int, int]]]:
        """Shard parts (url, part, parts, utterances) of each (rank, worker) stream, index rank * workers + worker.

        With fewer shards than streams each shard is read as `parts` interleaved parts (every
        parts-th sample), so no stream is left empty. Parts go to ranks, largest first, each to the
        rank with the fewest utterances so far (LPT: ranks end within one part of each other), then
        the same way to the rank's workers. Ties and the final rank/worker order are shuffled per epoch.
        """
        workers = self._workers
        parts = max(1, math.ceil(self.world_size * workers / len(self.shards)))
        units = [(url, part, parts, len(range(part, count, parts)))
                 for url, count in self.shards for part in range(parts)]
        units = [unit for unit in units if unit[3] > 0]
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle:
            units = [units[i] for i in rng.permutation(len(units))]
        units.sort(key=lambda unit: -unit[3])  # stable: equal counts keep the shuffled order

        def spread(items: list[tuple[str, int, int, int]], bins: int) -> list[list[tuple[str, int, int, int]]]:
            out: list[list[tuple[str, int, int, int]]] = [[] for _ in range(bins)]
            loads = [0] * bins
            for item in items:
                target = loads.index(min(loads))
                out[target].append(item)
                loads[target] += item[3]
            return [out[i] for i in rng.permutation(bins)] if self.shuffle else out

        return [stream for rank_units in spread(units, self.world_size) for stream in spread(rank_units, workers)]

    def _plan(self, epoch: int) -> tuple[list[list[tuple[str, int, int, int]]], list[int]]:
        """Each stream's shard parts and its batch quota.

        A stream's own utterances make ceil(utterances / batch_size) batches (the last may be
        partial). A rank with fewer batches than the busiest rank gets the difference as extra full
        batches, given to its workers with utterances in turn and filled by wrapping around.
        """
        streams = self._assign(epoch)
        workers = self._workers
        quotas = [math.ceil(sum(unit[3] for unit in stream) / self.batch_size) for stream in streams]
        per_rank = [quotas[rank * workers : (rank + 1) * workers] for rank in range(self.world_size)]
        target = max(sum(rank_quotas) for rank_quotas in per_rank)
        for rank in range(self.world_size):
            busy = [rank * workers + w for w in range(workers) if streams[rank * workers + w]]
            for extra in range(target - sum(per_rank[rank])):
                quotas[busy[extra % len(busy)]] += 1
        return streams, quotas

    def _read(self, url: str, part: int, parts: int, errors: list[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
        def on_error(error: Exception) -> bool:
            # A missing or corrupt shard is reported like a bad file and the stream goes on.
            errors.append((url, f"unreadable shard ({type(error).__name__}: {error.args[0] if error.args else ''})"))
            return True

        samples = webdataset.tariterators.tarfile_samples([{"url": url}], handler=on_error)
        for position, sample in enumerate(samples):
            if position % parts == part:
                yield url, sample

    def _cycle(self, units: list[tuple[str, int, int]], rng: np.random.Generator,
               errors: list[tuple[str, str]]) -> Iterator[tuple[str, dict]]:
        """The stream's samples, pass after pass (the caller takes exactly what the quota needs)."""
        while True:
            order = rng.permutation(len(units)) if self.shuffle else range(len(units))
            count = 0
            for i in order:
                for sample in self._read(*units[i], errors):
                    count += 1
                    yield sample
            if count == 0:
                raise InputError(f"shards {[unit[0] for unit in units]} gave no samples: {errors[:3]}")

    def _batches(self, samples: Iterator[tuple[str, dict]], rng: np.random.Generator) -> Iterator[list[tuple[str, dict]]]:
        """Cut the stream into batches; with a sort window, each window is sorted by duration first."""
        def duration(item: tuple[str, dict]) -> float:
            try:
                return float(json.loads(item[1]["json"])["duration"])
            except (KeyError, ValueError, TypeError):
                return 0.0  # _decode reports the bad metadata

        window_size = max(1, self.sort_window) * self.batch_size
        while window := list(itertools.islice(samples, window_size)):
            if self.sort_window > 0:
                window.sort(key=duration)
            batches = [window[start : start + self.batch_size] for start in range(0, len(window), self.batch_size)]
            order = rng.permutation(len(batches)) if self.shuffle and self.sort_window > 0 else range(len(batches))
            for i in order:
                yield batches[i]

    def _decode(self, url: str, sample: dict) -> ASRItem | LabelItem | Skipped:
        name = f"{url}#{sample['__key__']}"
        try:
            meta = json.loads(sample["json"])
            value, duration = meta[self.field], float(meta["duration"])
        except (KeyError, ValueError, TypeError) as error:
            return Skipped(name, f"missing or invalid json metadata ({error})")
        if (self.min_duration is not None and duration < self.min_duration) or (
            self.max_duration is not None and duration > self.max_duration
        ):
            return Skipped(name, f"duration outside [{self.min_duration}, {self.max_duration}] s ({duration:.2f} s)")
        audio_key = next((key for key in AUDIO_EXTENSIONS if key in sample), None)
        if audio_key is None:
            return Skipped(name, "no audio in the shard sample")
        if self.field == "text":
            tokens = self.tokenizer.encode(value)
            if not tokens:
                return Skipped(name, "empty transcript after dropping unknown characters")
        elif value not in self.label_index:
            return Skipped(name, f"label {value!r} is not among the model's labels")
        try:
            audio = load_audio(sample[audio_key], self.sample_rate, name=name)
            check_length(audio, self.sample_rate, duration, name)
        except AudioError as error:
            return Skipped(error.path, error.reason)
        if self.waveform_transform is not None:
            audio = self.waveform_transform(audio)
        if self.field == "text":
            return ASRItem(audio, torch.tensor(tokens, dtype=torch.long), name)
        return LabelItem(audio, self.label_index[value])

    def __iter__(self) -> Iterator[ASRBatch | LabelBatch]:
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if workers != self._workers:
            raise ConfigError(
                f"ShardDataset was built with num_workers={self.num_workers} but runs in a DataLoader with "
                f"{workers} workers; pass the same number to both (or use dataset.loader())"
            )
        stream = self.rank * workers + worker
        plan, quotas = self._plan(epoch)
        if quotas[stream] == 0:
            return
        rng = np.random.default_rng([self.seed, epoch, stream])
        errors: list[tuple[str, str]] = []
        # Exactly the stream's own utterances, then whole extra batches by wrapping around, so the
        # stream cuts into exactly quotas[stream] batches (only the last of its own may be partial).
        units = plan[stream]
        own = sum(unit[3] for unit in units)
        length = own + (quotas[stream] - math.ceil(own / self.batch_size)) * self.batch_size
        samples = itertools.islice(self._cycle([unit[:3] for unit in units], rng, errors), length)
        if self.shuffle:
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        collate = collate_asr if self.field == "text" else collate_labels
        for raw in self._batches(iter(samples), rng):
            batch = collate([self._decode(url, sample) for url, sample in raw])
            batch.skipped.extend(errors)
            errors.clear()
            yield batch
