"""One error path for every entry point: a user's mistake ends as one line, not a traceback.

Each command-line program wraps its work in `user_errors(debug)`: an error caused by what the user gave
(a file, a path, a config value) prints `error: <what is wrong, which file or field, what to do>` on
stderr and exits 1; Ctrl-C prints how to find what was finished and exits 130. `--debug` (or
HYDRA_FULL_ERROR=1 for the Hydra scripts) re-raises with the full traceback instead.

Code raises `UserError` for problems it diagnoses itself. ValueError, OSError and the config and
archive errors of the libraries we use are treated the same way, since their messages name the
value or file; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tarfile
from collections.abc import Iterator

import yaml
from omegaconf.errors import OmegaConfBaseException

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class UserError(Exception):
    """Something the user gave is wrong; the message says what, where, and what to do."""


USER_ERRORS = (UserError, ValueError, OSError, tarfile.TarError, yaml.YAMLError, OmegaConfBaseException)


def hydra_debug() -> bool:
    """HYDRA_FULL_ERROR=1 asks the Hydra scripts for full tracebacks, as Hydra itself does."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UserError) else f"{text} ({type(error).__name__})"


@contextlib.contextmanager
def user_errors(debug: bool = False, interrupted: str = "interrupted") -> Iterator[None]:
    """Turn user errors into one stderr line + exit 1, and Ctrl-C into `interrupted` + exit 130.
    With `debug`, errors propagate unchanged (full traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{interrupted}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
