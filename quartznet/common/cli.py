"""What every command line shares: argparse types that check a number's range (argparse then names the
option in its usage error), and the one parser of device names (`--device`, `device=`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from quartznet.common.errors import ConfigError

DEVICE_HELP = "auto (cuda if available), cpu, cuda, cuda:1, mps"


def at_least(minimum: float, kind: type = int, strictly: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number >= minimum (> minimum when `strictly`); argparse names the option."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None
        if value < minimum or (strictly and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strictly else '>='} {minimum}, got {text}")
        return value
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def resolve_device(name: Any, option: str = "--device") -> torch.device:
    """The torch device `name` stands for, checked to exist here (`auto`: cuda if available, else cpu); a
    ConfigError naming `option` (`--device`, `device`) otherwise, so a bad name fails before any work."""
    where = f"{option} {name}" if option.startswith("-") else f"{option}={name!r}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{where}: not a device name; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: CUDA is not available on this machine; use cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{where}: there are {torch.cuda.device_count()} CUDA devices "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{where}: MPS is not available on this machine; use cpu (or auto)")
    elif device.type != "cpu":
        raise ConfigError(f"{where}: {device.type} devices are not supported; use {DEVICE_HELP}")
    return device
