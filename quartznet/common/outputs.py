"""Outputs that survive interruptions: checked before work starts, streamed, replaced atomically.

* `check_writable(path)` fails at once when a result could not be written later (missing or read-only
  folder), before any work is done.
* `atomic_write_text(path, text)` writes a temporary file beside `path`, syncs it, then renames it over
  `path`: a reader, a crash or a full disk never sees half a file, and the old file stays until the
  new one is complete.
* `JsonLinesOutput` streams rows to `<path>.partial` as they are ready (one flushed JSON line each) and
  renames it onto `path` when the work is done. Interrupted, it leaves `<path>.partial` with every
  finished row and `path` as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from quartznet.common.errors import UserError


def check_writable(path: str | os.PathLike) -> Path:
    """`path` as a Path, after checking that its folder exists (created if its parent does) and takes
    new files; a UserError naming the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name for the output")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as error:
        raise UserError(f"{path}: cannot write here ({error.strerror or error}); choose another output path") from None
    return path


def set_default_permissions(path: str | os.PathLike) -> None:
    """Give a file made by `tempfile.mkstemp` (0600) the permissions `open()` would have given it
    (0666 less the umask), before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` all at once: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        set_default_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class JsonLinesOutput:
    """Rows streamed to `<path>.partial`, one flushed JSON line each, renamed onto `path` by `commit()`.

    As a context manager it commits on success and, on any error or Ctrl-C, keeps the partial file
    (every row finished so far) and leaves `path` untouched.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_writable(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.rows = 0
        self._handle = self.partial.open("w", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        try:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._handle.flush()
        except OSError as error:  # a full disk, a vanished folder: say where, and that `path` is intact
            raise self._write_error(error) from error
        self.rows += 1

    def commit(self) -> Path:
        """Close and move the finished file into place (atomic on one file system)."""
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(self.partial, self.path)
        except OSError as error:
            raise self._write_error(error) from error
        return self.path

    def discard(self) -> None:
        """Close and delete the partial file (nothing worth keeping); `path` stays as it was."""
        self.keep_partial()
        self.partial.unlink(missing_ok=True)

    def _write_error(self, error: OSError) -> UserError:
        old = f"; {self.path} was left as it was" if self.path.exists() else ""
        return UserError(
            f"{self.partial}: writing failed after {self.rows} rows ({error.strerror or error}){old}; "
            "free some space or choose another output path"
        )

    def keep_partial(self) -> Path:
        """Close without replacing `path`; the rows written so far stay in `self.partial`."""
        if not self._handle.closed:
            try:
                self._handle.close()
            except OSError:  # flushing the last bytes failed (full disk): what was flushed before stays
                pass
        return self.partial

    def __enter__(self) -> JsonLinesOutput:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.keep_partial()
