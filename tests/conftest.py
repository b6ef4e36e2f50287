"""Shared test helpers: the NeMo fixtures, model configs and tiny models."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NEMO_CTC = FIXTURES / "qn_small_ctc.nemo"


def compose(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config train.py would see for these command-line overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=False)


def model_config(name: str, data: str | None = None) -> dict:
    """conf/model/<name>.yaml as a resolved plain dict; keyword models take their labels from `data`
    (Speech Commands v1 unless given)."""
    if data is None:
        data = "speech_commands_v1" if "ClassificationModel" in (ROOT / "conf" / "model" / f"{name}.yaml").read_text() else "synthetic_asr"
    return OmegaConf.to_container(compose([f"model={name}", f"data={data}"]).model, resolve=True)


def tiny_ctc_config(se: bool = False, variant: str = "current") -> dict:
    """A QuartzNet 15x5 shrunk to a few thousand parameters, keeping every block kind (stride, dilation, SE)."""
    config = model_config("quartznet_5x5")
    config["mel_variant"] = variant
    jasper = config["encoder"]["jasper"]
    for block in jasper:
        block["filters"] = 16 if block["filters"] < 1024 else 32
        block["repeat"] = min(block["repeat"], 2)
        block["kernel"] = [min(block["kernel"][0], 11)]
        block["se"] = se
    config["decoder"]["feat_in"] = 32
    return config


def tiny_classifier_config(se: bool = False) -> dict:
    config = copy.deepcopy(model_config("matchboxnet_3x1x64"))
    for block in config["encoder"]["jasper"]:
        block["se"] = se
    return config


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics, so eval-mode BN is no near-identity that hides bugs."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)


@pytest.fixture(scope="session")
def nemo_io() -> dict:
    return torch.load(FIXTURES / "qn_small_ctc_io.pt", weights_only=True)
