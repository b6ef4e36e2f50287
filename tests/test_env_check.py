"""The end-of-set-up check (tools/check_env.py): a broken install stops with one clear message."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / "tools" / "check_env.py"


def load_check_module():
    spec = importlib.util.spec_from_file_location("check_env", CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if pythonpath is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, env=env, timeout=300)


def test_torchaudio_extension_that_cannot_load_gives_one_clear_message(tmp_path):
    # A torchaudio whose compiled library fails as a torch/torchaudio ABI mismatch does, shadowing the real one.
    fake = tmp_path / "torchaudio"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise OSError('Could not load this library: /x/torchaudio/lib/libtorchaudio.so: "
        "undefined symbol: torch_exception_get_what_without_backtrace')\n"
    )
    result = run_check(pythonpath=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "set-up check failed at torchaudio" in result.stderr
    assert "undefined symbol" in result.stderr
    assert "installed: Python" in result.stderr and "torch 2." in result.stderr
    assert "make clean setup" in result.stderr
    assert "ok  torch" in result.stdout  # the steps before it ran and passed
    assert "environment OK" not in result.stdout


def test_a_module_of_the_package_that_does_not_import_is_named(tmp_path):
    fake = tmp_path / "soundfile.py"
    fake.write_text("raise ImportError('libsndfile.so.1: cannot open shared object file')\n")
    result = run_check(pythonpath=tmp_path)
    assert result.returncode == 1
    assert "set-up check failed at soundfile" in result.stderr
    assert "libsndfile" in result.stderr
    assert "Traceback" not in result.stderr


LOCK = """\
# header comment
alpha==1.2.3 \\
    --hash=sha256:aaaa
beta==2.0 ; python_full_version < '3.0' \\
    --hash=sha256:bbbb
beta==3.0 ; python_full_version >= '3.0' \\
    --hash=sha256:cccc
    # via alpha
Gamma_Pkg==0.1 ; sys_platform == 'no-such-platform'
"""


def test_lock_pins_follow_markers_and_normalise_names(tmp_path):
    check = load_check_module()
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK)
    assert check.locked_pins(lock) == {"alpha": "1.2.3", "beta": "3.0"}


def test_an_environment_that_differs_from_the_lock_is_reported(tmp_path):
    check = load_check_module()
    lock = tmp_path / "requirements.lock"
    import torch

    lock.write_text(f"torch=={torch.__version__.split('+')[0]}.post99 \\\n    --hash=sha256:aaaa\n")
    with pytest.raises(check.CheckFailed, match=r"differs from requirements.lock: torch .* \(lock: .*post99\)"):
        check.check_lock(lock)


def test_the_committed_lock_matches_this_environment():
    check = load_check_module()
    assert "installed packages" not in check.check_lock(REPO / "requirements.lock")
    pins = check.locked_pins(REPO / "requirements.lock")
    assert pins["torch"] == "2.11.0" and pins["torchaudio"] == "2.11.0"
