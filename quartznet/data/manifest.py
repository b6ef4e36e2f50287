"""NeMo manifests: JSON lines with `audio_filepath`, `duration` and `text` (ASR) or `label` (classification).

Relative audio paths are resolved against the manifest's folder, several manifests may be joined
(a comma-separated string or a list), and a malformed line is an error naming `file:line` before any
training starts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quartznet.common.errors import UserError


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names `file:line` and what to fix."""


@dataclass(frozen=True)
class ManifestEntry:
    audio_filepath: Path  # absolute
    duration: float
    text: str | None = None
    label: str | None = None
    offset: float = 0.0
    source: str = ""  # "manifest.json:12", for error reports
    # The row gave an `offset`: it is a slice of a longer recording and exactly `duration` seconds are
    # read from `offset`. Without one, `duration` describes the whole file (see datasets.check_entries).
    offset_given: bool = False


def manifest_paths(manifests: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """`"a.json,b.json"`, a path or a list of them -> list of paths."""
    if isinstance(manifests, (str, os.PathLike)):
        manifests = [part for part in str(manifests).split(",") if part.strip()]
    return [Path(str(path).strip()).expanduser() for path in manifests]


def check_manifest_files(manifests: str | os.PathLike | Sequence[str | os.PathLike], key: str) -> list[Path]:
    """Before any work: every manifest of `manifests` exists and has a row. A UserError naming the
    config key `key` and the file otherwise (an empty manifest has nothing to train or score on)."""
    paths = manifest_paths(manifests)
    if not paths:
        raise UserError(f"{key} is empty; give a manifest file")
    for path in paths:
        if not path.is_file():
            raise UserError(f"{key}: manifest {path} does not exist; give an existing manifest file")
        with open(path, encoding="utf-8", errors="replace") as lines:
            if not any(line.strip() for line in lines):
                raise UserError(f"{key}: manifest {path} is empty (no rows); give a manifest with utterances")
    return paths


def _entry(row: Any, manifest: Path, line_number: int, field: str) -> ManifestEntry:
    where = f"{manifest}:{line_number}"
    if not isinstance(row, Mapping):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("audio_filepath", "duration", field):
        if key not in row:
            raise ManifestError(f"{where}: missing field {key!r} (each line needs audio_filepath, duration, {field})")
    try:
        duration = float(row["duration"])
        offset = float(row.get("offset") or 0.0)
    except (TypeError, ValueError) as error:
        raise ManifestError(f"{where}: `duration`/`offset` must be numbers ({error})") from error
    if duration < 0 or offset < 0:
        raise ManifestError(f"{where}: `duration` and `offset` must be >= 0")
    if not isinstance(row[field], str):
        raise ManifestError(f"{where}: field {field!r} must be a string, got {row[field]!r}")
    audio = Path(str(row["audio_filepath"])).expanduser()
    if not audio.is_absolute():
        audio = manifest.parent / audio
    return ManifestEntry(
        audio_filepath=audio,
        duration=duration,
        text=row[field] if field == "text" else None,
        label=row[field] if field == "label" else None,
        offset=offset,
        source=where,
        offset_given=row.get("offset") is not None,
    )


def read_manifests(
    manifests: str | os.PathLike | Sequence[str | os.PathLike],
    field: str = "text",
    min_duration: float | None = None,
    max_duration: float | None = None,
) -> list[ManifestEntry]:
    """Read and validate every line of every manifest; keep entries within the duration bounds.

    `field` is "text" (ASR) or "label" (classification). Raises ManifestError on the first bad line,
    FileNotFoundError for a missing manifest.
    """
    if field not in ("text", "label"):
        raise ValueError(f"field must be 'text' or 'label', got {field!r}")
    entries = []
    for manifest in manifest_paths(manifests):
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest}")
        with open(manifest, encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{manifest}:{line_number}: not valid JSON ({error.msg})") from error
                entry = _entry(row, manifest, line_number, field)
                if min_duration is not None and entry.duration < min_duration:
                    continue
                if max_duration is not None and entry.duration > max_duration:
                    continue
                entries.append(entry)
    return entries


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write JSON lines atomically (a temp file renamed into place); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
