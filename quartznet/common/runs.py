"""What a job owns in its output folder: a lock that keeps a second run out, its config and its log.

A folder written by two training runs at once ends with neither's model (their checkpoints, CSV logs
and results mix), so train.py holds `RunLock(run_dir)` while it works: a second run into the same
folder stops at once with one line naming the folder and the run that holds it. The lock is a POSIX
record lock (`lockf`) on `<run_dir>/.lock`: the kernel releases it when the holding process ends,
however it ends (a crash, `kill -9`), and forked DataLoader workers do not inherit it, so `resume=last`
after a killed run is never refused; NFS (through its lock manager) and Lustre mounted with `flock`
carry it across machines. Only the launch's first process takes it: under DDP every rank runs train.py,
and all of them work in one folder.

Hydra writes nothing into the folder (conf/hydra/job_logging/console.yaml): the scripts write their
config (with the command line) and add a log file once the folder was checked, one log per process
(`train.log`, `train.rank3.local1.log`, ...), for as long as the job runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from quartznet.common.errors import UserError
from quartznet.common.outputs import atomic_write_text

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's, as on the console
# What launchers set in every process they start, and the label each gives a process: torchrun's rank
# across the launch (RANK), SLURM srun's task (SLURM_PROCID), Lightning's own DDP launcher's node and
# process on it (NODE_RANK, LOCAL_RANK). A child of Lightning's launcher inside an srun allocation
# inherits SLURM_PROCID=0, so every variable present counts.
RANK_VARIABLES = {"RANK": "rank", "SLURM_PROCID": "task", "NODE_RANK": "node", "LOCAL_RANK": "local"}
# The run folder the first process resolved (`${now}` in paths.run_dir gives a child another second):
# conf/paths/default.yaml reads it, so the processes Lightning starts work in the same folder.
RUN_DIR_VARIABLE = "QUARTZNET_RUN_DIR"


def launch_label() -> str:
    """"" in the launch's first process (or when nothing was launched), else a name for this process that
    no other process of the launch has (`rank9.local1`, `task0.local1`, `node1.local0`). Read from the
    launchers' environment, before any process group exists."""
    present = {label: int(os.environ[name]) for name, label in RANK_VARIABLES.items()
               if os.environ.get(name, "").isdigit()}
    if not any(present.values()):
        return ""
    return ".".join(f"{label}{rank}" for label, rank in present.items())


def first_process() -> bool:
    """Whether this is the launch's first process: the one that writes what a run writes once."""
    return launch_label() == ""


@contextlib.contextmanager
def shared_run_folder(folder: str | os.PathLike) -> Iterator[None]:
    """While the block runs, the processes this one starts resolve paths.run_dir to `folder`."""
    before = os.environ.get(RUN_DIR_VARIABLE)
    os.environ[RUN_DIR_VARIABLE] = str(Path(folder).absolute())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RUN_DIR_VARIABLE, None)
        else:
            os.environ[RUN_DIR_VARIABLE] = before


class RunLock:
    """Holds a lock on `<folder>/.lock` from `__enter__` to `__exit__` in the launch's first process; a
    UserError naming `key`, the folder and the holder when another run holds it. On a file system without
    locks it warns and goes on unlocked; some mounts (NFS with `nolock`, Lustre with `localflock`) grant
    it on every machine, which keeps out only a second run on the same machine."""

    def __init__(self, folder: str | os.PathLike, key: str):
        self.folder, self.key = Path(folder), key
        self._handle = None

    def __enter__(self) -> RunLock:
        if not first_process():
            return self
        # One handle for the whole hold: closing any other handle of this process to the file would
        # release a POSIX lock.
        handle = open(self.folder / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # held elsewhere (EAGAIN or EACCES, by system)
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
            fcntl.lockf(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def write_config(path: str | os.PathLike, config_yaml: str) -> Path:
    """The job's record at `path`: the command line that started it (as a comment), then its resolved
    config; written atomically by the launch's first process only."""
    path = Path(path)
    if first_process():
        command = " ".join(shlex.quote(argument) for argument in [Path(sys.argv[0]).name, *sys.argv[1:]])
        atomic_write_text(path, f"# {command.replace(chr(10), chr(92) + 'n')}\n{config_yaml}")  # one comment line
    return path


def log_name(name: str) -> str:
    """This process's log file name for job `name`: `<name>.log`, `<name>.<launch label>.log` in the other
    processes of a launch (no two of them share a file, on a shared file system either)."""
    label = launch_label()
    return f"{name}.{label}.log" if label else f"{name}.log"


@contextlib.contextmanager
def log_to_file(folder: str | os.PathLike, name: str) -> Iterator[Path]:
    """While the block runs, this process's log records (the root logger's, as on the console) go to
    `<folder>/<log_name(name)>` too; yields the file."""
    path = Path(folder) / log_name(name)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
