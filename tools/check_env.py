"""End-of-set-up check: does this environment load everything quartznet needs, as locked?

Run by `make setup` (and `make check`). Each step is fast (a few seconds in all) and the first
failure stops the check with one message: what failed, the versions installed, what to do. A broken
environment is then found here, not as a wall of pytest collection errors.

    python tools/check_env.py [--lock requirements.lock]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import pkgutil
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

FIX = "Run `make clean setup` to rebuild .venv from requirements.lock (docs/quickstart.md, 'Set-up problems')."


class CheckFailed(Exception):
    """One failed step: `what` names it, `why` is the underlying error in one line."""


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions_line() -> str:
    names = ("torch", "torchaudio", "soundfile", "flashlight-text", "pytorch-lightning")
    found = ", ".join(f"{name} {_installed(name)}" for name in names)
    return f"Python {platform.python_version()} ({sys.executable}); {found}"


def check_torch() -> str:
    import torch

    torch.zeros(2).add_(1)
    return f"torch {torch.__version__}"


def check_torchaudio() -> str:
    import torch
    import torchaudio
    import torchaudio.functional as F

    # forced_align runs in torchaudio's compiled extension (libtorchaudio); a torch/torchaudio ABI
    # mismatch fails here with "undefined symbol", not at `import torchaudio`.
    log_probs = torch.zeros(1, 3, 2).log_softmax(-1)
    F.forced_align(log_probs, torch.tensor([[1]], dtype=torch.int32), blank=0)
    return f"torchaudio {torchaudio.__version__} (compiled extension loaded)"


def check_soundfile() -> str:
    import io

    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(160, dtype=np.float32), 16000, format="WAV")
    buffer.seek(0)
    samples, rate = soundfile.read(buffer)
    if rate != 16000 or len(samples) != 160:
        raise CheckFailed(f"soundfile round trip gave {len(samples)} samples at {rate} Hz")
    return f"soundfile {soundfile.__version__} ({soundfile.__libsndfile_version__})"


def check_flashlight() -> str:
    from flashlight.lib.text.decoder import LexiconFreeDecoder  # noqa: F401
    from torchaudio.models.decoder import ctc_decoder  # noqa: F401  (needs flashlight-text)

    return f"flashlight-text {_installed('flashlight-text')}"


def check_package_modules() -> str:
    count = 0
    for package_name in ("quartznet", "data_prep"):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            importlib.import_module(info.name)
            count += 1
    return f"{count} quartznet/data_prep modules import"


def check_pip() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        first = (result.stdout + result.stderr).strip().splitlines()[0]
        raise CheckFailed(f"pip check: {first}")
    return "pip check: no broken requirements"


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_pins(lock: Path) -> dict[str, str]:
    """Name -> version for every pin of `lock` whose environment marker holds here."""
    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    pins = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def check_lock(lock: Path) -> str:
    from packaging.utils import canonicalize_name

    pins = locked_pins(lock)
    if not pins:
        raise CheckFailed(f"{lock}: no `name==version` pins found")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = [
        f"{name} {installed.get(name, 'missing')} (lock: {version})"
        for name, version in sorted(pins.items())
        if installed.get(name) != version
    ]
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise CheckFailed(f"the environment differs from {lock.name}: {shown}")
    return f"{len(pins)} packages match {lock.name}"


def run_checks(lock: Path | None) -> int:
    steps: list[tuple[str, Callable[[], str]]] = [
        ("torch", check_torch),
        ("torchaudio", check_torchaudio),
        ("soundfile", check_soundfile),
        ("flashlight-text", check_flashlight),
        ("quartznet modules", check_package_modules),
        ("pip check", check_pip),
    ]
    if lock is not None:
        steps.append(("lock", lambda: check_lock(lock)))
    for what, step in steps:
        try:
            print(f"  ok  {step()}", flush=True)
        except Exception as error:  # any failure of a step is reported the same way, in one block
            why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(
                f"error: set-up check failed at {what}: {type(error).__name__}: {why}\n"
                f"       installed: {versions_line()}\n"
                f"       {FIX}",
                file=sys.stderr,
            )
            return 1
    print("==> environment OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, help="also check that installed versions equal this lock file")
    args = parser.parse_args(argv)
    if args.lock is not None and not args.lock.is_file():
        print(f"error: {args.lock}: lock file not found; run from the repository root", file=sys.stderr)
        return 2
    return run_checks(args.lock)


if __name__ == "__main__":
    sys.exit(main())
