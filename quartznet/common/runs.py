"""What a job owns in its output folder: a lock that keeps a second run out, and the log file.

A folder written by two training runs at once ends with neither's model (their checkpoints, CSV logs
and results mix), so train.py holds `RunLock(run_dir)` while it works: a second run into the same
folder stops at once with one line naming the folder and the run that holds it. The lock is an
advisory `flock` on `<run_dir>/.lock`, which the kernel releases when the process ends however it
ends (a crash, `kill -9`), so `resume=last` after a killed run is never refused. Only the launch's
first process takes it: under DDP every rank runs train.py, and all of them work in one folder.

Hydra writes nothing into the folder (conf/hydra/job_logging/console.yaml): `log_to_file` adds the
file handler once the folder was checked, one file per process (`train.log`, `train.rank3.log`, ...),
for as long as the job runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from quartznet.common.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's, as on the console
# What launchers set in every process they start: a rank across the whole launch (torchrun's RANK,
# SLURM srun's SLURM_PROCID), or the node and the process on it (Lightning's own DDP launcher).
GLOBAL_RANK_VARIABLES = ("RANK", "SLURM_PROCID")
NODE_RANK_VARIABLES = ("NODE_RANK", "LOCAL_RANK")


def _environment_rank(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def launch_label() -> str:
    """"" in the launch's first process (or when nothing was launched), else a name for this process that
    no other process of the launch has: `rank<N>`, or `node<N>.local<M>` under Lightning's own launcher.
    Read from the launchers' environment, before any process group exists."""
    for name in GLOBAL_RANK_VARIABLES:
        rank = _environment_rank(name)
        if rank is not None:
            return f"rank{rank}" if rank else ""
    node, local = (_environment_rank(name) or 0 for name in NODE_RANK_VARIABLES)
    return f"node{node}.local{local}" if node or local else ""


def first_process() -> bool:
    """Whether this is the launch's first process: the one that writes what a run writes once."""
    return launch_label() == ""


class RunLock:
    """Holds `<folder>/.lock` (an exclusive flock) from `__enter__` to `__exit__` in the launch's first
    process; a UserError naming `key`, the folder and the holder when another run holds it. On a file
    system without locks (some network mounts) it warns and goes on unlocked."""

    def __init__(self, folder: str | os.PathLike, key: str):
        self.folder, self.key = Path(folder), key
        self._handle = None

    def __enter__(self) -> RunLock:
        if not first_process():
            return self
        path = self.folder / LOCK_NAME
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not said who it is"
            handle.close()
            raise UserError(
                f"{self.key}={self.folder}: another run is writing into this folder ({holder}); wait for it to end "
                f"or give another {self.key}"
            ) from None
        except OSError as error:
            handle.close()
            log.warning("%s: cannot lock the folder (%s); make sure no other run writes into it",
                        self.folder, error.strerror or error)
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def log_to_file(folder: str | os.PathLike, name: str) -> Iterator[Path]:
    """While the block runs, this process's log records (the root logger's, as on the console) go to
    `<folder>/<name>.log` too, `<name>.<launch label>.log` in the other processes of a launch (no two of
    them share a file, on a shared file system either); yields the file."""
    label = launch_label()
    path = Path(folder) / (f"{name}.{label}.log" if label else f"{name}.log")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
