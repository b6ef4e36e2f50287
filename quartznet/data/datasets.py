"""Map-style manifest datasets (ASR and classification), padding collates and the skip report.

Bad data never kills an epoch and is never silent:
- an audio file that cannot be used (missing, unreadable, truncated, empty, NaN/inf) makes
  `__getitem__` return a `Skipped(path, reason)` marker instead of raising;
- a transcript that is empty once characters outside the alphabet are dropped is skipped the same
  way (without reading the audio);
- the collates drop markers from the batch but list them in `batch.skipped`, so the counts travel
  back from DataLoader worker processes; `SkipReport` adds them up over an epoch.
Manifest problems (bad JSON, missing fields, an unknown class label) raise `ManifestError` naming
`file:line` at construction, before any training step.

At construction the rows are also checked against the audio files (`check_entries`, a header read per
file): a `duration` that differs from the file's by more than `duration_tolerance` (0.25 s) is warned
about, naming the files, and counted (`duration_mismatches`). A row without `offset` describes the
whole file, so when the file is longer than its `duration` says, the whole file is used (its real
duration replaces the manifest's, for the duration filter and batching too); a row with `offset` is a
slice and exactly `duration` seconds are read from it. A file shorter than its row says is read as it
is and skipped as truncated when clearly short (`check_length`). Rows repeating an earlier row (same
audio_filepath, offset and duration) are kept, each used every time, and warned about once
(`duplicate_rows`).

A batch whose items were all skipped is still returned, with B = 0 (`batch.size == 0`): the training
step should not compute a loss on it. On one device, return None from `training_step` (Lightning
then skips the optimizer step). Under DDP every rank must still take part in the gradient all-reduce,
so return a zero loss that touches every parameter instead, e.g.
`sum(p.sum() for p in self.parameters()) * 0.0`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info

from quartznet.data.audio import AudioError, audio_duration, load_audio
from quartznet.data.manifest import ManifestEntry, ManifestError, read_manifests
from quartznet.data.text import CharTokenizer

log = logging.getLogger(__name__)

WaveformTransform = Callable[[torch.Tensor], torch.Tensor]  # (L,) -> (L,)
ManifestSource = str | os.PathLike | Sequence[str | os.PathLike]


@dataclass(frozen=True)
class Skipped:
    """An item that could not be used; the collates move it to `batch.skipped`."""

    path: str
    reason: str


@dataclass(frozen=True)
class ASRItem:
    audio: torch.Tensor  # (L,) float32
    tokens: torch.Tensor  # (U,) int64
    path: str = ""  # where it came from, for reports about the item (a file, or shard#key)


@dataclass(frozen=True)
class LabelItem:
    audio: torch.Tensor  # (L,) float32
    label: int


@dataclass
class ASRBatch:
    audio: torch.Tensor  # (B, L_max) float32, zero padded
    audio_len: torch.Tensor  # (B,) int64
    tokens: torch.Tensor  # (B, U_max) int64, padded with 0 (only tokens_len is meaningful)
    tokens_len: torch.Tensor  # (B,) int64
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of dropped items
    paths: list[str] = field(default_factory=list)  # (B,) where each kept item came from

    @property
    def size(self) -> int:
        return self.audio.shape[0]


@dataclass
class LabelBatch:
    audio: torch.Tensor  # (B, L_max) float32, zero padded
    audio_len: torch.Tensor  # (B,) int64
    labels: torch.Tensor  # (B,) int64
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.audio.shape[0]


def pad_audio(waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(L_i,)] -> (B, L_max) zero-padded float32 and (B,) int64 lengths; B = 0 gives (0, 0)."""
    lengths = torch.tensor([wave.shape[0] for wave in waves], dtype=torch.long)
    audio = torch.empty(len(waves), int(lengths.max()) if len(waves) else 0, dtype=torch.float32)
    if get_worker_info() is not None:
        # In a DataLoader worker, build the batch (up to 32 x 16.7 s = 34 MB) in shared memory
        # directly: it then reaches the trainer without one more copy (~18% less CPU per audio second,
        # docs/experiments/collate-shared-memory.md).
        audio.share_memory_()
    for row, wave in enumerate(waves):
        audio[row, : wave.shape[0]] = wave
        audio[row, wave.shape[0] :] = 0
    return audio, lengths


def collate_asr(items: Sequence[ASRItem | Skipped]) -> ASRBatch:
    kept = [item for item in items if not isinstance(item, Skipped)]
    audio, audio_len = pad_audio([item.audio for item in kept])
    tokens_len = torch.tensor([item.tokens.shape[0] for item in kept], dtype=torch.long)
    tokens = torch.zeros(len(kept), int(tokens_len.max()) if kept else 0, dtype=torch.long)
    for row, item in enumerate(kept):
        tokens[row, : item.tokens.shape[0]] = item.tokens
    skipped = [(item.path, item.reason) for item in items if isinstance(item, Skipped)]
    return ASRBatch(audio, audio_len, tokens, tokens_len, skipped, [item.path for item in kept])


def collate_labels(items: Sequence[LabelItem | Skipped]) -> LabelBatch:
    kept = [item for item in items if not isinstance(item, Skipped)]
    audio, audio_len = pad_audio([item.audio for item in kept])
    labels = torch.tensor([item.label for item in kept], dtype=torch.long)
    skipped = [(item.path, item.reason) for item in items if isinstance(item, Skipped)]
    return LabelBatch(audio, audio_len, labels, skipped)


def _reason_kind(reason: str) -> str:
    # AudioError reasons carry details in parentheses ("unreadable audio (Format not recognised)");
    # counting by the part before them groups files that failed the same way.
    return reason.split(" (", 1)[0]


class SkipReport:
    """Adds up skipped items over an epoch: counts per reason and the first `max_examples` (path, reason).

    Call `add(batch.skipped)` for every batch, `summary()` / `as_dict()` at epoch end, then `reset()`.
    Under DDP, gather each rank's `as_dict()` (e.g. `all_gather_object`) and `merge` them.
    """

    def __init__(self, max_examples: int = 20):
        self.max_examples = max_examples
        self.reset()

    def reset(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.examples: list[tuple[str, str]] = []

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def __len__(self) -> int:
        return self.count

    def add(self, skipped: Iterable[tuple[str, str]]) -> None:
        for path, reason in skipped:
            self.by_reason[_reason_kind(reason)] += 1
            if len(self.examples) < self.max_examples:
                self.examples.append((path, reason))

    def merge(self, other: SkipReport | Mapping[str, Any]) -> None:
        """Add another report (or its `as_dict()`, e.g. from another rank) into this one."""
        other = other.as_dict() if isinstance(other, SkipReport) else other
        self.by_reason.update(other["by_reason"])
        room = self.max_examples - len(self.examples)
        self.examples.extend(tuple(example) for example in other["examples"][: max(room, 0)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_reason": dict(self.by_reason.most_common()),
            "examples": [list(example) for example in self.examples],
        }

    def summary(self, max_paths: int = 5) -> str:
        """One line per reason, then up to `max_paths` example paths; '' when nothing was skipped."""
        if not self.count:
            return ""
        lines = [f"{self.count} items skipped:"]
        lines += [f"  {count} x {reason}" for reason, count in self.by_reason.most_common()]
        lines += [f"  e.g. {path}: {reason}" for path, reason in self.examples[:max_paths]]
        return "\n".join(lines)


def _filter_durations(
    entries: list[ManifestEntry], min_duration: float | None, max_duration: float | None, name: str
) -> tuple[list[ManifestEntry], dict[str, int]]:
    kept, filtered = [], {"shorter_than_min_duration": 0, "longer_than_max_duration": 0}
    for entry in entries:
        if min_duration is not None and entry.duration < min_duration:
            filtered["shorter_than_min_duration"] += 1
        elif max_duration is not None and entry.duration > max_duration:
            filtered["longer_than_max_duration"] += 1
        else:
            kept.append(entry)
    if any(filtered.values()):
        log.info(
            "%s: %d utterances kept, %d shorter than min_duration=%s s, %d longer than max_duration=%s s",
            name, len(kept), filtered["shorter_than_min_duration"], min_duration,
            filtered["longer_than_max_duration"], max_duration,
        )
    return kept, filtered


DURATION_TOLERANCE = 0.25  # seconds a manifest `duration` may differ from its audio file's without a warning


def _real_duration(path: str) -> float | None:
    try:
        return audio_duration(path)
    except AudioError:  # missing or unreadable: skipped (with the reason) when the item is loaded
        return None


@dataclass
class EntryCheck:
    """What `check_entries` found: the rows to use and the counts it warned about."""

    entries: list[ManifestEntry]
    duration_mismatches: int = 0
    duplicate_rows: int = 0


def check_entries(
    entries: list[ManifestEntry], name: str, tolerance: float | None = DURATION_TOLERANCE, max_paths: int = 5
) -> EntryCheck:
    """Warn (once per kind, naming files) about rows whose `duration` disagrees with the audio file's
    header by more than `tolerance` seconds, and about repeated rows; extend rows without `offset`
    whose file is longer than their `duration` to the whole file. `tolerance=None`: no file is read."""
    keys = Counter((str(e.audio_filepath), e.offset_given, e.offset, e.duration) for e in entries)
    duplicates = sum(count - 1 for count in keys.values())
    if duplicates:
        example = next(key[0] for key, count in keys.items() if count > 1)
        log.warning(
            "%s: %d rows repeat an earlier row (same audio_filepath, offset and duration), e.g. %s; "
            "they are kept and each is used (scored) every time it appears", name, duplicates, example,
        )
    if tolerance is None or not entries:
        return EntryCheck(list(entries), 0, duplicates)
    paths = sorted({str(e.audio_filepath) for e in entries})
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:  # header reads wait on I/O
        real = dict(zip(paths, pool.map(_real_duration, paths, chunksize=64)))
    checked, mismatched = [], []
    for entry in entries:
        seconds = real[str(entry.audio_filepath)]
        if seconds is not None:
            wanted = entry.offset + entry.duration if entry.offset_given else entry.duration
            if wanted > seconds + tolerance or (not entry.offset_given and seconds > entry.duration + tolerance):
                mismatched.append(f"{entry.source} {entry.audio_filepath}: manifest {wanted:.2f} s, file {seconds:.2f} s")
            if not entry.offset_given and seconds > entry.duration + tolerance:
                entry = dataclasses.replace(entry, duration=seconds)  # a length hint: use the whole file
        checked.append(entry)
    if mismatched:
        log.warning(
            "%s: %d rows have a `duration` that differs from their audio file by more than %.2f s; rows "
            "without `offset` use the whole file, a file shorter than its row is skipped when clearly "
            "truncated: %s%s", name, len(mismatched), tolerance, "; ".join(mismatched[:max_paths]),
            " ..." if len(mismatched) > max_paths else "",
        )
    return EntryCheck(checked, len(mismatched), duplicates)


def check_length(audio: torch.Tensor, sample_rate: int, expected_seconds: float, name: str) -> None:
    """AudioError when `audio` (L,) is clearly shorter than the manifest says (by > 10% and > 0.1 s).

    libsndfile reads a truncated WAV without complaint (it clamps the length to the bytes present),
    so the manifest duration is the only sign; the margin absorbs rounded manifest durations.
    """
    seconds = audio.shape[0] / sample_rate
    if seconds < expected_seconds - max(0.1, 0.1 * expected_seconds):
        raise AudioError(name, f"truncated audio ({seconds:.2f} s, but the manifest says {expected_seconds:.2f} s)")


def _load(entry: ManifestEntry, sample_rate: int, transform: WaveformTransform | None) -> torch.Tensor | Skipped:
    try:
        # NeMo reads `duration` seconds from `offset` for every entry; so do we, so that sliced
        # manifests (several utterances per long recording) work. Duration 0 reads nothing -> skipped.
        audio = load_audio(entry.audio_filepath, sample_rate, offset=entry.offset, duration=entry.duration)
        check_length(audio, sample_rate, entry.duration, str(entry.audio_filepath))
    except AudioError as error:
        return Skipped(error.path, error.reason)
    return transform(audio) if transform is not None else audio


class SeededItems(Dataset):
    """`dataset` read by (epoch, index) keys (`EpochKeyedBatches` makes them): item `index`, augmented by
    `augmentation` (the dataset's own waveform transform, with a `seeded(*key)` context) seeded with
    (seed, epoch, index): a function of those three numbers only, not of which DataLoader worker loads the
    item or of what it loaded before, so a run resumed mid-epoch (with any number of workers) augments
    every remaining item as the uninterrupted run does."""

    def __init__(self, dataset: Dataset, augmentation: Any, seed: int):
        self.dataset, self.augmentation, self.seed = dataset, augmentation, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with self.augmentation.seeded(self.seed, epoch, index):
            return self.dataset[index]


class ManifestDataset(Dataset):
    """What both manifest datasets share: `entries` (ManifestEntry, after the duration filter) and their
    manifest `durations`, which DurationBucketSampler batches on."""

    entries: list[ManifestEntry]
    duration_mismatches: int = 0  # rows whose duration disagrees with their file (check_entries)
    duplicate_rows: int = 0  # rows repeating an earlier row

    def _check(self, entries: list[ManifestEntry], manifests: ManifestSource, tolerance: float | None) -> list[ManifestEntry]:
        found = check_entries(entries, str(manifests), tolerance)
        self.duration_mismatches, self.duplicate_rows = found.duration_mismatches, found.duplicate_rows
        return found.entries

    @property
    def durations(self) -> list[float]:
        return [entry.duration for entry in self.entries]

    def __len__(self) -> int:
        return len(self.entries)


class AudioToCharDataset(ManifestDataset):
    """ASR manifest dataset: item i is ASRItem(audio (L,), tokens (U,)) or Skipped(path, reason).

    Texts are tokenized once here, so characters outside `labels` are counted and logged once
    (`dropped_characters`) and empty transcripts are known up front (`empty_transcripts`). Training
    skips them; evaluation (`keep_empty_transcripts`) scores them like any row: the words the model
    outputs there are insertions, and the reference word count is unchanged. Entries
    outside [min_duration, max_duration] are left out and counted in `filtered`. `durations` lists
    the kept entries' manifest durations, for `DurationBucketSampler`.
    """

    def __init__(
        self,
        manifest_filepath: ManifestSource,
        labels: Sequence[str],
        sample_rate: int = 16000,
        min_duration: float | None = None,
        max_duration: float | None = 16.7,
        waveform_transform: WaveformTransform | None = None,
        duration_tolerance: float | None = DURATION_TOLERANCE,
        keep_empty_transcripts: bool = False,
    ):
        self.sample_rate = sample_rate
        self.waveform_transform = waveform_transform
        self.keep_empty_transcripts = keep_empty_transcripts
        self.tokenizer = CharTokenizer(labels)
        entries = self._check(read_manifests(manifest_filepath, field="text"), manifest_filepath, duration_tolerance)
        self.entries, self.filtered = _filter_durations(entries, min_duration, max_duration, str(manifest_filepath))
        self.tokens = [torch.tensor(self.tokenizer.encode(entry.text), dtype=torch.long) for entry in self.entries]
        self.dropped_characters = Counter(self.tokenizer.dropped)
        self.empty_transcripts = sum(1 for tokens in self.tokens if tokens.numel() == 0)
        if self.dropped_characters:
            log.warning("%s: %s", manifest_filepath, self.tokenizer.dropped_summary())
        if self.empty_transcripts:
            log.warning(
                "%s: %d transcripts are empty (or empty after dropping characters outside the alphabet); %s",
                manifest_filepath, self.empty_transcripts,
                "they are scored: every word the model outputs for them is an insertion" if keep_empty_transcripts
                else "they are skipped (and reported per epoch)",
            )

    def __getitem__(self, index: int) -> ASRItem | Skipped:
        entry, tokens = self.entries[index], self.tokens[index]
        if tokens.numel() == 0 and not self.keep_empty_transcripts:
            return Skipped(str(entry.audio_filepath), f"empty transcript after dropping unknown characters ({entry.source})")
        audio = _load(entry, self.sample_rate, self.waveform_transform)
        return audio if isinstance(audio, Skipped) else ASRItem(audio, tokens, str(entry.audio_filepath))


class AudioToLabelDataset(ManifestDataset):
    """Classification manifest dataset: item i is LabelItem(audio (L,), label index) or Skipped.

    A manifest label not in `labels` is a ManifestError naming `file:line`, raised here.
    """

    def __init__(
        self,
        manifest_filepath: ManifestSource,
        labels: Sequence[str],
        sample_rate: int = 16000,
        min_duration: float | None = None,
        max_duration: float | None = None,
        waveform_transform: WaveformTransform | None = None,
        duration_tolerance: float | None = DURATION_TOLERANCE,
    ):
        self.sample_rate = sample_rate
        self.waveform_transform = waveform_transform
        self.labels = list(labels)
        index = {label: i for i, label in enumerate(self.labels)}
        entries = read_manifests(manifest_filepath, field="label")
        for entry in entries:
            if entry.label not in index:
                raise ManifestError(
                    f"{entry.source}: label {entry.label!r} is not one of the model's {len(index)} labels "
                    f"{self.labels}; fix the manifest or the model's labels"
                )
        entries = self._check(entries, manifest_filepath, duration_tolerance)
        self.entries, self.filtered = _filter_durations(entries, min_duration, max_duration, str(manifest_filepath))
        self.label_ids = [index[entry.label] for entry in self.entries]

    def __getitem__(self, index: int) -> LabelItem | Skipped:
        audio = _load(self.entries[index], self.sample_rate, self.waveform_transform)
        return audio if isinstance(audio, Skipped) else LabelItem(audio, self.label_ids[index])
