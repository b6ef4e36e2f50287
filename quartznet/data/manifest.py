"""NeMo manifests: JSON lines with `audio_filepath`, `duration` and `text` (ASR) or `label` (classification).

Relative audio paths are resolved against the manifest's folder, several manifests may be joined
(a comma-separated string or a list), and a malformed line is an error naming `file:line`, the field and
what it must be, before any training starts. `manifest_rows` and the `*_field` readers are the one way
every command reads a manifest (training, evaluation, transcription, data preparation).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quartznet.common.errors import InputError, MissingInputError, UserError
from quartznet.common.outputs import replaced_atomically


class ManifestError(UserError, ValueError):
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
        with open(path, encoding="utf-8-sig", errors="replace") as lines:
            if not any(line.strip() for line in lines):
                raise UserError(f"{key}: manifest {path} is empty (no rows); give a manifest with utterances")
    return paths


def text_lines(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """("file:line", line) for every line of a UTF-8 text file, read a line at a time (a byte-order mark
    at the start, as Windows editors write it, is accepted). Bytes that are not UTF-8 are an InputError
    naming `file:line` and the byte; a file that cannot be opened is a MissingInputError naming it."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise MissingInputError(f"{path}: cannot read it ({error.strerror or error}); check the path") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield where, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{where}: not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                    "save the file as UTF-8"
                ) from None


def manifest_rows(manifest: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """("file:line", row) for every non-blank line of a JSON-lines manifest (text_lines: UTF-8, a
    byte-order mark accepted). A line that is not JSON or not a JSON object is a ManifestError naming
    `file:line`; a missing manifest is a ManifestError too."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest not found; check the path")
    for where, line in text_lines(manifest):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
        except (ValueError, RecursionError) as error:  # an integer of over 4,300 digits; nesting too deep
            raise ManifestError(f"{where}: not a usable JSON line ({type(error).__name__}: "
                                f"{str(error)[:80] or 'nested too deep'})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row


def _shown(value: Any) -> str:
    """A field's value as it is written in the manifest (NaN, null, "text"), cut to 40 characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def audio_path_field(row: Mapping[str, Any], where: str, manifest: Path) -> Path:
    """The row's `audio_filepath` as an absolute path (relative ones are relative to the manifest's folder)."""
    value = row.get("audio_filepath")
    if "audio_filepath" not in row:
        raise ManifestError(f"{where}: missing field 'audio_filepath' (the audio file of this row)")
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: field 'audio_filepath' must be a non-empty string (a file path), got "
                            f"{_shown(value)}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else manifest.parent / path


def seconds_field(row: Mapping[str, Any], key: str, where: str, required: bool = False,
                  positive: bool = False) -> float | None:
    """The row's `key` as a finite number of seconds >= 0 (> 0 when `positive`), None when absent (or null)
    and not `required`. A number written as a string ("1.5") is accepted, as NeMo's tools write some."""
    value = row.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{where}: missing field {key!r} (seconds of audio)")
        return None
    number: float | None = None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError, OverflowError):  # "long"; an integer of 400 digits
            number = float(value)
    bound = "> 0" if positive else ">= 0"
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ManifestError(f"{where}: field {key!r} must be a finite number of seconds {bound}, got {_shown(value)}")
    return number


def text_field(row: Mapping[str, Any], key: str, where: str) -> str:
    """The row's `key` (`text` or `label`) as a string."""
    if key not in row:
        raise ManifestError(f"{where}: missing field {key!r}")
    if not isinstance(row[key], str):
        raise ManifestError(f"{where}: field {key!r} must be a string, got {_shown(row[key])}")
    return row[key]


def manifest_audio_paths(manifests: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Every row's audio file (what a command must never write over), read with the usual row checks."""
    return [audio_path_field(row, where, manifest) for manifest in manifest_paths(manifests)
            for where, row in manifest_rows(manifest)]


def _entry(row: Mapping[str, Any], manifest: Path, where: str, field: str) -> ManifestEntry:
    audio = audio_path_field(row, where, manifest)
    duration = seconds_field(row, "duration", where, required=True)
    offset = seconds_field(row, "offset", where)
    value = text_field(row, field, where)
    return ManifestEntry(
        audio_filepath=audio,
        duration=duration,
        text=value if field == "text" else None,
        label=value if field == "label" else None,
        offset=offset or 0.0,
        source=where,
        offset_given=offset is not None,
    )


def read_manifests(
    manifests: str | os.PathLike | Sequence[str | os.PathLike],
    field: str = "text",
    min_duration: float | None = None,
    max_duration: float | None = None,
) -> list[ManifestEntry]:
    """Read and validate every line of every manifest; keep entries within the duration bounds.

    `field` is "text" (ASR) or "label" (classification). Raises ManifestError on the first bad line
    (`file:line`, the field and what it must be) and for a missing manifest.
    """
    if field not in ("text", "label"):
        raise ValueError(f"field must be 'text' or 'label', got {field!r}")
    entries = []
    for manifest in manifest_paths(manifests):
        for where, row in manifest_rows(manifest):
            entry = _entry(row, manifest, where, field)
            if min_duration is not None and entry.duration < min_duration:
                continue
            if max_duration is not None and entry.duration > max_duration:
                continue
            entries.append(entry)
    return entries


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write JSON lines atomically (replaced_atomically); returns the path."""
    with replaced_atomically(path) as temporary, open(temporary, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
    return Path(path)
