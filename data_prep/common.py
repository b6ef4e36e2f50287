"""Shared helpers of the data-preparation scripts: resumable downloads, safe streaming tar extraction,
progress bars, manifest rows and a uniform CLI error exit.

Every step is restartable: a download grows `<name>.partial` and is renamed only after its size (and
checksum) check passed, an extracted file is renamed into place only when complete, and an archive
that was extracted in full leaves a marker so a rerun skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from quartznet.common.checkpoint import UnsafeArchiveError, checked_member_path
from quartznet.common.cli import at_least
from quartznet.common.errors import user_errors
from quartznet.data.audio import AudioError
from quartznet.data.manifest import ManifestError, write_manifest

CHUNK = 1 << 20


class PrepError(RuntimeError):
    """A data-preparation step that cannot go on; the message names the file and what to do."""


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar with the scripts' common settings (set TQDM_DISABLE=1 to silence them all)."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(iterable, **kwargs)


# --------------------------------------------------------------------------------------------- download


def md5sum(path: str | os.PathLike) -> str:
    path = Path(path)
    digest = hashlib.md5()
    with (
        open(path, "rb") as source,
        progress(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"md5 {path.name}", leave=False) as bar,
    ):
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def check_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise PrepError if the file's MD5 differs from `expected` (hex, any case)."""
    actual = md5sum(path)
    if actual != expected.lower():
        raise PrepError(
            f"{path}: MD5 {actual} does not match the expected {expected.lower()}; the file is corrupt or not "
            "the archive you meant - delete it and download it again"
        )


def _range_total(content_range: str | None) -> int | None:
    """The total size from a `Content-Range: bytes a-b/total` (or `bytes */total`) header."""
    match = re.search(r"/(\d+)\s*$", content_range or "")
    return int(match.group(1)) if match else None


def _fetch(url: str, partial: Path, timeout: float, label: str) -> None:
    """One HTTP request that appends the rest of `url` to `partial` (or restarts it); raises on a short read."""
    start = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "quartznet-data-prep"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing left past `start`: the partial file may already be whole
            if _range_total(error.headers.get("Content-Range")) == start:
                return
            partial.unlink()
            raise ConnectionError(f"server refused to resume at byte {start}; starting over") from error
        raise
    with response:
        total = None
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != start:
                partial.unlink()
                raise ConnectionError(f"server resumed at the wrong offset (asked for byte {start}); starting over")
            total, mode = _range_total(response.headers.get("Content-Range")), "ab"
        else:  # 200: the server ignores ranges, so the body is the whole file again
            start, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        with (
            open(partial, mode) as sink,
            progress(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar,
        ):
            while chunk := response.read(CHUNK):
                sink.write(chunk)
                bar.update(len(chunk))
    size = partial.stat().st_size
    if total is not None and size < total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        partial.unlink()
        raise PrepError(f"{url}: got {size} bytes but the server announced {total}; deleted {partial}, rerun to retry")


def download(
    url: str,
    destination: str | os.PathLike,
    *,
    md5: str | None = None,
    retries: int = 5,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `destination`, resuming `<destination>.partial` with HTTP range requests.

    The size is checked against the server's Content-Length / Content-Range and, if given, the MD5
    against `md5`; only then is the file renamed to `destination`, so an existing `destination` is a
    finished download and is returned as is. Dropped connections are resumed up to `retries` times.
    """
    destination = Path(destination)
    if destination.is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    for attempt in range(retries + 1):
        try:
            _fetch(url, partial, timeout, destination.name)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500:  # 404, 403, ...: retrying will not help
                raise PrepError(f"{url}: HTTP {error.code} {error.reason}; check the URL") from error
            reason = error
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
            reason = error
        kept = partial.stat().st_size if partial.exists() else 0
        if attempt == retries:
            raise PrepError(
                f"{url}: download failed after {retries} retries ({reason}); {kept} bytes are kept in {partial} - "
                "rerun the same command to resume"
            )
        print(f"{url}: {reason}; resuming at byte {kept} (retry {attempt + 1}/{retries})", file=sys.stderr)
        time.sleep(retry_wait * 2**attempt)
    if md5 is not None and (actual := md5sum(partial)) != md5.lower():
        partial.unlink()
        raise PrepError(
            f"{url}: the download's MD5 {actual} does not match the expected {md5.lower()}; the corrupt file was "
            "deleted - rerun to download it again"
        )
    partial.replace(destination)
    return destination


# --------------------------------------------------------------------------------------------- archives


class _CountingReader:
    """A file wrapper that moves a progress bar by the compressed bytes the tar stream consumes."""

    def __init__(self, source: BinaryIO, bar: tqdm):
        self.source, self.bar = source, bar

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.bar.update(len(data))
        return data


def extraction_marker(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """The file whose presence says `archive` was extracted into `destination` in full."""
    return Path(destination) / f".{Path(archive).name}.extracted"


def extract_tar(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Stream a (gzip) tar into `destination`, checking every member before writing it.

    Streaming reads the archive once, front to back, so tens of GB with 100k members need no index in
    memory. Members are checked as they come: a hostile member stops extraction with
    UnsafeArchiveError, nothing is ever written outside `destination`. A rerun skips files that are
    already complete and the whole archive once its marker exists.
    """
    archive, destination = Path(archive), Path(destination)
    marker = extraction_marker(archive, destination)
    if marker.exists():
        return destination
    if not archive.is_file():
        raise PrepError(f"archive not found: {archive}")
    destination.mkdir(parents=True, exist_ok=True)
    with (
        open(archive, "rb") as raw,
        progress(
            total=archive.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {archive.name}"
        ) as bar,
    ):
        try:
            with tarfile.open(fileobj=_CountingReader(raw, bar), mode="r|*") as tar:
                for member in tar:
                    relative = checked_member_path(archive, member)
                    if relative is None:
                        continue
                    target = destination.joinpath(*relative.parts)
                    if target.is_file() and target.stat().st_size == member.size:
                        continue  # written by an interrupted earlier run (files only appear when complete)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_name(target.name + ".partial")
                    with tar.extractfile(member) as source, open(partial, "wb") as sink:
                        shutil.copyfileobj(source, sink, CHUNK)
                    partial.replace(target)
        except (tarfile.TarError, EOFError) as error:
            raise PrepError(
                f"{archive}: not a readable tar archive or truncated ({error}); delete it and download it again"
            ) from error
    marker.touch()
    return destination


# --------------------------------------------------------------------------------------------- manifests


def manifest_audio_path(audio: str | os.PathLike, folder: str | os.PathLike) -> str:
    """`audio` relative to the manifest's folder when it lies under it (readers resolve it there), else absolute."""
    audio, folder = Path(os.path.abspath(audio)), Path(os.path.abspath(folder))
    try:
        return audio.relative_to(folder).as_posix()
    except ValueError:
        return str(audio)


def save_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write NeMo manifest rows atomically; each row's `audio_filepath` (a path) is made relative when it can be."""
    path = Path(path)
    folder = path.parent
    return write_manifest(
        path, ({**row, "audio_filepath": manifest_audio_path(row["audio_filepath"], folder)} for row in rows)
    )


# --------------------------------------------------------------------------------------------- CLI


RESUME_HINT = "interrupted; rerun the same command to resume where it stopped"


def add_preparer_options(parser: argparse.ArgumentParser, archives: str) -> None:
    """The options the dataset preparers (librispeech, speech_commands) share, spelled one way:
    `--delete-archives` (also accepted as `--delete-archive`), `--jobs`, `--force`."""
    parser.add_argument("--delete-archives", "--delete-archive", dest="delete_archives", action="store_true",
                        help=f"delete {archives} once the manifests are written")
    parser.add_argument("--jobs", type=at_least(1), default=8, help="threads reading audio headers (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite manifests that already exist")


def parse_args_with_debug(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser`'s arguments plus `--debug` (show the full traceback of an error)."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser.parse_args(argv)


@contextlib.contextmanager
def prep_errors(debug: bool, as_program: bool) -> Iterator[None]:
    """The error path of every data_prep program (quartznet.common.errors.user_errors): one `error:` line
    and exit 1, Ctrl-C says how to resume. As a program, this project's expected failures (PrepError,
    unsafe archives, unreadable audio, bad manifests) are user errors too; called with explicit
    arguments (tests, other scripts), they reach the caller as they are."""
    also = (PrepError, UnsafeArchiveError, AudioError, ManifestError) if as_program else ()
    with user_errors(debug, interrupted=RESUME_HINT, also=also):
        yield


def run_main(main: Callable[[Sequence[str] | None], Any]) -> None:
    """Run a script's `main` as a program: its return value (if any) is the exit code."""
    sys.exit(main(None) or 0)
