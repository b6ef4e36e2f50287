"""One error path for every entry point: a user's mistake ends as one line, not a traceback.

Each command-line program wraps its work in `user_errors(debug)`: an error caused by what the user gave
(a file, a path, a config value) prints `error: <what is wrong, which file or field, what to do>` on
stderr and exits 1; Ctrl-C prints how to find what was finished and exits 130. `--debug` (or
HYDRA_FULL_ERROR=1 for the Hydra scripts) re-raises with the full traceback instead.

Only errors that are known to be the user's get the one-line treatment:
- `UserError` and its kinds (`ConfigError` for a config value or option), raised where the code has
  diagnosed the problem and can name the file, field or key;
- OmegaConf's errors (a config key that does not exist, a value of the wrong type), whose messages
  name the key;
- an OSError that carries a file name (permission denied, no such file, a full disk while writing a
  named file): what is wrong lies outside the program and the message says where.
Anything else (a ValueError, a TypeError, an OSError without a file) is a bug in quartznet or in a
library: it keeps its traceback, so that it can be reported and fixed instead of being mistaken for a
user's mistake.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from omegaconf.errors import OmegaConfBaseException

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class UserError(Exception):
    """Something the user gave is wrong; the message says what, where, and what to do."""


class ConfigError(UserError, ValueError):
    """A config value, option or model config section that cannot be used; the message names the key."""


class InputError(UserError, ValueError):
    """A file, folder or piece of data the user gave that cannot be used; the message names it."""


class MissingInputError(UserError, FileNotFoundError):
    """A file the user named does not exist; the message names it."""


USER_ERRORS = (UserError, OmegaConfBaseException)


def is_user_error(error: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    """True for the errors `user_errors` reports in one line (see the module docstring)."""
    if isinstance(error, (*USER_ERRORS, *also)):
        return True
    return isinstance(error, OSError) and error.filename is not None


def hydra_debug() -> bool:
    """HYDRA_FULL_ERROR=1 asks the Hydra scripts for full tracebacks, as Hydra itself does."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UserError) else f"{text} ({type(error).__name__})"


@contextlib.contextmanager
def user_errors(
    debug: bool = False,
    interrupted: str | Callable[[], str] = "interrupted",
    also: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """Turn user errors into one stderr line + exit 1, and Ctrl-C into `interrupted` + exit 130.

    `interrupted` may be a function, called at the moment of the interruption, so the line can say how
    far the work got. `also` adds exception types a caller's layer defines (e.g. AudioError) to the ones
    treated as user errors. With `debug`, and for every error that is not a user error (a bug),
    errors propagate unchanged (full traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        if debug:
            raise
        message = interrupted() if callable(interrupted) else interrupted
        print(f"\n{message}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as error:
        if debug or not is_user_error(error, also):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


def config_int(value: object, key: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """`value` of config key `key` as an int (>= `minimum`), or a UserError naming the key."""
    if value is None and allow_none:
        return None
    at_least = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ConfigError(f"{key}={value!r}: must be a whole number{at_least}; set e.g. {key}={max(minimum or 0, 1)}")
    return value


def config_fraction(value: object, key: str) -> float:
    """`value` of config key `key` as a float in [0, 1], or a UserError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{key}={value!r}: must be a number from 0 to 1; set e.g. {key}=0.5")
    return float(value)
