"""What the machine computes fast: the one home of hardware detection (training precision `auto`).

bf16 autocast pays on CPUs with native bf16 instructions (AMX or AVX512-BF16: Intel Sapphire Rapids
and later, AMD Zen 4 and later). Elsewhere PyTorch emulates bf16 and a training step gets several
times slower than fp32 (docs/benchmarks.md, "GPU", measured 5-9x), so `auto` keeps fp32 there.
"""

from __future__ import annotations

from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flags of native bf16 arithmetic (Linux kernel names).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
AUTO = "auto"


def cpu_flags(cpuinfo: Path | None = None) -> set[str]:
    """The instruction-set flags the kernel reports for the first CPU; empty where there is no cpuinfo."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def native_bf16_flags(cpuinfo: Path | None = None) -> list[str]:
    """The native-bf16 flags this CPU reports (sorted); empty where bf16 would be emulated."""
    return sorted(cpu_flags(cpuinfo) & set(CPU_BF16_FLAGS))


def auto_precision(accelerator: str, cpuinfo: Path | None = None) -> tuple[str, str]:
    """(Lightning precision, why) for `accelerator` ("cpu", "gpu", "cuda" or "auto").

    GPUs: bf16-mixed where CUDA supports bf16 (Ampere and later), fp16 AMP with a grad scaler before.
    CPUs: bf16-mixed with native bf16, else fp32.
    """
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available())
    if on_gpu:
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "the GPU supports bf16"
        return "16-mixed", "the GPU has no bf16; fp16 with a grad scaler"
    native = native_bf16_flags(cpuinfo)
    if native:
        return "bf16-mixed", f"the CPU has native bf16 ({', '.join(native)})"
    return "32-true", f"the CPU has no native bf16 ({' or '.join(CPU_BF16_FLAGS)}); emulated bf16 would be slower"
