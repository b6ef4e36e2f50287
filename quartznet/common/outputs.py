"""Outputs that survive interruptions and never destroy an input: checked before work starts, streamed,
replaced atomically.

* `check_writable(path, inputs)` fails at once when a result could not be written later (a folder in
  the way, a read-only place) or when it would overwrite one of the command's inputs, before any work is
  done. Missing folders on the way are created, with their parents, as `mkdir -p` does.
* `replaced_atomically(path)` hands out a temporary file beside `path` and renames it onto `path` once
  the block has written it and it is synced: a reader, a crash or a full disk never sees half a file,
  and the old file stays until the new one is complete. `atomic_write_text` / `atomic_write_json`
  write a string that way.
* `JsonLinesOutput` streams rows to `<path>.partial` as they are ready (one JSON line each, written
  straight to the file) and renames it onto `path` when the work is done. Interrupted, it leaves
  `<path>.partial` with every finished row and `path` as it was; a write that fails (a full disk) is
  cut back to the last complete row. `StdoutRows` is the same interface for rows printed to stdout.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from quartznet.common.errors import UserError

# Errors of writing a file that say something about the place, not about the program.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
PathLike = str | os.PathLike


def check_distinct(outputs: dict[str, PathLike]) -> None:
    """A UserError naming both when two of a command's outputs ({option: path}) are one file: the second
    written would replace the first."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        resolved = Path(path).resolve()
        if resolved in seen:
            raise UserError(f"{option} {path} and {seen[resolved]} are the same file; give them different paths")
        seen[resolved] = f"{option} {path}"


def check_not_an_input(path: PathLike, inputs: Iterable[PathLike | None]) -> None:
    """A UserError when the output `path` is one of the files `inputs` (the same inode, whatever the path
    says: links, `..`): writing it would destroy that input. Nothing is checked while `path` does not
    exist, as writing it then destroys nothing; None in `inputs` (an option not given) is passed over."""
    try:
        target = os.stat(path)
    except OSError:
        return
    for source in inputs:
        try:
            found = os.stat(source) if source is not None else None
        except OSError:
            continue
        if found is not None and (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
            also = "" if str(source) == str(path) else f" ({source})"
            raise UserError(f"{path}: is an input of this command{also}; writing the output there would destroy it; "
                            "choose another output path")


def check_writable(path: PathLike, inputs: Iterable[PathLike | None] = ()) -> Path:
    """`path` as a Path, after checking that it is none of `inputs`, that it is not a folder, and that its
    folder (created with any missing parents) takes new files; a UserError naming the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name for the output")
    check_not_an_input(path, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as error:
        raise UserError(f"{path}: cannot write here ({error.strerror or error}); choose another output path") from None
    return path


def set_default_permissions(path: PathLike) -> None:
    """Give a file made by `tempfile.mkstemp` (0600) the permissions `open()` would have given it
    (0666 less the umask), before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_error(path: Path, error: OSError) -> UserError:
    """The one-line error of a failed write of `path`: which file, why, and that the old one is intact."""
    kept = f"; {path} was left as it was" if path.exists() else ""
    return UserError(f"{path}: writing failed ({error.strerror or error}){kept}; free some space or choose another "
                     "output path")


@contextlib.contextmanager
def replaced_atomically(path: PathLike) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write (by any means: open, savefig, torch.onnx);
    synced and renamed onto `path` when the block ends without error, removed otherwise. A write that
    fails for a reason of the place (full disk, read-only, permissions) is a UserError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise write_error(path, error) from error
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        set_default_permissions(temporary)
        os.replace(temporary, path)
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        raise write_error(path, error) from error
    finally:
        temporary.unlink(missing_ok=True)


def remove_temporaries(path: PathLike) -> None:
    """Delete what replaced_atomically left beside `path` when a process writing it was killed; only for
    an output that no other process is writing at the same time (a rerun of a resumable job)."""
    path = Path(path)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        leftover.unlink(missing_ok=True)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` all at once (replaced_atomically)."""
    with replaced_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def partial_path(path: PathLike) -> Path:
    """Where JsonLinesOutput streams the rows of `path` until the work is done."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def check_rows_output(path: PathLike, inputs: Iterable[PathLike | None]) -> Path:
    """check_writable for a JsonLinesOutput: neither `path` nor its partial file may be one of `inputs`."""
    inputs = list(inputs)
    check_not_an_input(partial_path(path), inputs)
    return check_writable(path, inputs)


class StdoutRows:
    """JsonLinesOutput's interface for rows printed to stdout, one flushed JSON line each: a printed row
    is already where it goes, so committing, keeping and discarding change nothing."""

    where, written_note = "stdout (printed above)", ""

    def __init__(self) -> None:
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        self.rows += 1

    def commit(self) -> None:
        pass

    def keep_partial(self) -> None:
        pass

    def discard(self) -> None:
        pass


class JsonLinesOutput:
    """Rows streamed to `<path>.partial`, one JSON line each, renamed onto `path` by `commit()`.

    As a context manager it commits on success and, on any error or Ctrl-C, keeps the partial file
    (every row finished so far) and leaves `path` untouched. Check `path` against the command's inputs
    before any work with `check_rows_output`.
    """

    def __init__(self, path: PathLike):
        self.path = check_writable(path)
        self.partial = partial_path(self.path)
        self.rows = 0
        self._complete = 0  # bytes of complete rows in the partial file
        self._handle = open(self.partial, "wb", buffering=0)  # unbuffered: a row is on disk when write returns

    def write(self, row: dict[str, Any]) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[self._handle.write(rest):]
        except OSError as error:  # a full disk, a vanished folder: cut the torn row, say where, `path` is intact
            with contextlib.suppress(OSError):
                os.ftruncate(self._handle.fileno(), self._complete)
            raise self._write_error(error) from error
        self._complete += len(line)
        self.rows += 1

    def commit(self) -> Path:
        """Close and move the finished file into place (atomic on one file system)."""
        try:
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
        with contextlib.suppress(OSError):
            self._handle.close()
        return self.partial

    @property
    def where(self) -> str:
        """Where the finished rows are while the work goes on (for an interruption's message)."""
        return str(self.partial)

    @property
    def written_note(self) -> str:
        return f"; wrote {self.path}"

    def __enter__(self) -> JsonLinesOutput:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.keep_partial()
