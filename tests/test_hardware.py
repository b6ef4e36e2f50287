"""Training precision `auto`: native bf16 detected from the CPU flags, fp32 without them."""

import logging
from pathlib import Path

import pytest

from conftest import compose
from quartznet.common import hardware
from quartznet.training.setup import build_trainer

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n"
ZEN_3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert hardware.native_bf16_flags(cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    assert hardware.auto_precision("cpu", cpuinfo(tmp_path, SAPPHIRE_RAPIDS))[0] == "bf16-mixed"
    assert not hardware.native_bf16_flags(cpuinfo(tmp_path, ZEN_3))
    precision, why = hardware.auto_precision("cpu", cpuinfo(tmp_path, ZEN_3))
    assert precision == "32-true" and "no native bf16" in why
    assert hardware.cpu_flags(tmp_path / "missing") == set()  # no /proc (macOS): fp32, no error
    assert hardware.auto_precision("cpu", tmp_path / "missing")[0] == "32-true"


def test_gpu_without_cuda_asks_for_fp16_amp_and_never_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    assert hardware.auto_precision("gpu", cpuinfo(tmp_path, SAPPHIRE_RAPIDS))[0] == "16-mixed"
    assert hardware.auto_precision("auto", cpuinfo(tmp_path, ZEN_3))[0] == "32-true"


@pytest.mark.parametrize("native", [True, False])
def test_trainer_precision_auto_resolves_and_says_why(native, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo(tmp_path, SAPPHIRE_RAPIDS if native else ZEN_3))
    cfg = compose(["trainer=cpu", "trainer.precision=auto", f"paths.run_dir={tmp_path}", "~logger"])
    with caplog.at_level(logging.INFO, logger="quartznet.training.setup"):
        trainer = build_trainer(cfg)
    expected = "bf16-mixed" if native else "32-true"
    assert trainer.precision == expected
    assert f"trainer.precision=auto -> {expected}" in caplog.text
