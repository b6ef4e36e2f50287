"""What CTC and classification models share: building modules from a NeMo-style model config,
`.nemo` save/restore, and the mapping between NeMo's class paths and ours.

A model config is the `model:` section of a NeMo YAML: `preprocessor`, `encoder`, `decoder` sections
with `_target_` (or NeMo 1.0's `cls` + `params`, read but never written), plus anything else (`train_ds`, `optim`, ...), which
is kept as it is and written back on save. `_target_`s may name NeMo's classes or ours; saved configs
always name NeMo's, so NeMo can restore what we write.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from quartznet.common.checkpoint import (
    CKPT_CONFIG_KEY,
    CheckpointError,
    load_checkpoint,
    save_nemo,
)
from quartznet.common.errors import ConfigError
from quartznet.network.encoder import ConvASREncoder, nemo_encoder_section
from quartznet.network.features import (
    AudioToMelSpectrogramPreprocessor,
    AudioToMFCCPreprocessor,
)
from quartznet.network.heads import ConvASRDecoder, ConvASRDecoderClassification
from quartznet.network.spec_augment import SpectrogramAugmentation, VocalTractLengthPerturbation
from quartznet.network.wave_augment import BatchWaveformAugmentation
from quartznet.optim.novograd import NovoGrad
from quartznet.optim.schedulers import build_scheduler

NEMO_MODULES_PATH = "nemo.collections.asr.modules"
MODULES: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        AudioToMelSpectrogramPreprocessor,
        AudioToMFCCPreprocessor,
        ConvASREncoder,
        ConvASRDecoder,
        ConvASRDecoderClassification,
        SpectrogramAugmentation,
    )
}
# NeMo's `optim.name` values -> optimiser classes.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "novograd": NovoGrad,
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
# NeMo >= 2.4 (mid-2025) computes log-mels with the "current" variant; every earlier release, and so
# every NGC QuartzNet checkpoint, with the "classic" one (docs/nemo_compatibility.md §2). A config's own
# `mel_variant` wins.
CURRENT_MEL_SINCE = (2, 4)


def as_plain_config(config: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A resolved plain dict of the model config, every module section in `_target_` form.

    A whole NeMo YAML (with `model:`) is narrowed to its model section; NeMo 1.0's `cls` + `params`
    sections are flattened to `_target_` + keys.
    """
    if not isinstance(config, DictConfig):
        config = OmegaConf.create(dict(config))
    container = OmegaConf.to_container(config, resolve=True)
    if "model" in container and "encoder" not in container:
        container = container["model"]
    container = copy.deepcopy(container)
    for hydra_key in ("_target_", "_recursive_"):  # the model class itself, when Hydra composed the config
        container.pop(hydra_key, None)
    for key, section in container.items():
        if isinstance(section, dict) and "cls" in section:
            params = section.pop("params", None) or {}
            container[key] = {"_target_": section.pop("cls")} | params | section
    return container


def split_target(section: Mapping[str, Any], where: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """A config section -> (our module class, constructor kwargs)."""
    kwargs = dict(section)
    target = kwargs.pop("_target_", None)
    if target is None:
        raise ConfigError(f"model config: `{where}` needs a `_target_` naming its module")
    name = str(target).rsplit(".", 1)[-1]
    if name not in MODULES:
        raise ConfigError(
            f"model config: {where}._target_={target!r} is not a module quartznet provides "
            f"(supported: {', '.join(sorted(MODULES))})"
        )
    return MODULES[name], kwargs


def nemo_version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(version))[:3])


def resolve_mel_variant(config: Mapping[str, Any]) -> str:
    if config.get("mel_variant"):
        return str(config["mel_variant"])
    version = config.get("nemo_version")
    if version and nemo_version_tuple(version) >= CURRENT_MEL_SINCE:
        return "current"
    return "classic"


def to_nemo_targets(config: dict[str, Any]) -> dict[str, Any]:
    """Point every module section's `_target_` at NeMo's class, in place; returns `config`."""
    for section in config.values():
        if isinstance(section, dict) and str(section.get("_target_", "")).rsplit(".", 1)[-1] in MODULES:
            section["_target_"] = f"{NEMO_MODULES_PATH}.{section['_target_'].rsplit('.', 1)[-1]}"
    return config


def full_lengths(x: torch.Tensor) -> torch.Tensor:
    """(B,) lengths saying every row of a (B, ..., T) batch is valid to its end."""
    return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)


def config_section_of(weight: str) -> str:
    """The model config section that sets a state-dict key's shape: `encoder.jasper[i]` for the i-th
    encoder block (`encoder.encoder.i...`), else the key's top-level section."""
    parts = weight.split(".")
    if parts[:2] == ["encoder", "encoder"] and len(parts) > 2 and parts[2].isdigit():
        return f"encoder.jasper[{parts[2]}]"
    return parts[0]


class QuartzNetModel(pl.LightningModule):
    """Base for CTCModel and ClassificationModel: config, `.nemo` I/O and NeMo-named helpers."""

    nemo_target: ClassVar[str]  # NeMo's model class, written as `target:` in saved configs
    EVAL_METRICS: ClassVar[tuple[str, ...]]  # what validation and test log per set (`val_<metric>`)
    TRAIN_METRICS: ClassVar[tuple[str, ...]]  # what training steps log (`train_<metric>`)

    def __init__(self, cfg: Mapping[str, Any] | DictConfig):
        super().__init__()
        self.cfg = OmegaConf.create(as_plain_config(cfg))
        self.frozen_batchnorm = False
        self._eval_totals: dict[str, dict[int, torch.Tensor]] = {}

    def build_preprocessor(self) -> nn.Module:
        """The `preprocessor` section; a log-mel one gets the mel variant the config implies (written
        back as top-level `mel_variant`, so a saved model says which it uses)."""
        if self.section("preprocessor")[0] is not AudioToMelSpectrogramPreprocessor:
            return self.build("preprocessor")
        self.cfg.mel_variant = resolve_mel_variant(self.cfg)
        return self.build("preprocessor", variant=self.cfg.mel_variant)

    def features(
        self,
        input_signal: torch.Tensor | None,
        input_signal_length: torch.Tensor | None,
        processed_signal: torch.Tensor | None,
        processed_signal_length: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(features (B, F, T), frame lengths, audio lengths or None) from audio or from given features."""
        if processed_signal is not None:
            if processed_signal_length is None:
                processed_signal_length = full_lengths(processed_signal)
            return processed_signal, processed_signal_length, None
        if input_signal is None:
            raise ValueError("give input_signal (audio) or processed_signal (features)")
        if input_signal_length is None:
            input_signal_length = full_lengths(input_signal)
        if self.training and self.waveform_augmentation is not None:
            input_signal, input_signal_length = self.waveform_augmentation(input_signal, input_signal_length)
        features, lengths = self.preprocessor(input_signal=input_signal, length=input_signal_length)
        return features, lengths, input_signal_length

    def build_spec_augmentation(self) -> None:
        """`spec_augment` section -> self.spec_augmentation (train-time only), or None when absent;
        `waveform_augment` (ours: BatchWaveformAugmentation options, no `_target_`) -> speaker, room,
        noise and channel simulation on the padded batch before the features; `vtlp` (ours:
        VocalTractLengthPerturbation options) -> mel-axis warping before SpecAugment. All draw from the
        global RNG, as dither does."""
        self.spec_augmentation = self.build("spec_augment") if self.cfg.get("spec_augment") else None
        options = OmegaConf.to_container(self.cfg.waveform_augment) if self.cfg.get("waveform_augment") else None
        self.waveform_augmentation = None
        if options:
            rate = self.preprocessor.sample_rate  # the audio's rate is the front end's: an 8 kHz model's is 8 kHz
            if options.setdefault("sample_rate", rate) != rate:
                raise ConfigError(f"model config: waveform_augment.sample_rate={options['sample_rate']} but the "
                                  f"preprocessor's sample_rate is {rate}; leave it out (it follows the preprocessor)")
            self.waveform_augmentation = BatchWaveformAugmentation(**options)
        self.vtlp = None
        if self.cfg.get("vtlp"):
            if not hasattr(self.preprocessor, "mel_centre_frequencies"):
                raise ConfigError("model config: `vtlp` warps mel features; this preprocessor has no mel filterbank")
            self.vtlp = VocalTractLengthPerturbation(
                self.preprocessor.mel_centre_frequencies(), self.preprocessor.sample_rate,
                **OmegaConf.to_container(self.cfg.vtlp),
            )

    def augment(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training and self.vtlp is not None:
            features = self.vtlp(features)
        if self.training and self.spec_augmentation is not None:
            return self.spec_augmentation(input_spec=features, length=lengths)
        return features

    def section(self, key: str) -> tuple[type[nn.Module], dict[str, Any]]:
        """The module class and kwargs of config section `key` (NeMo or quartznet `_target_`)."""
        if key not in self.cfg or self.cfg[key] is None:
            raise ConfigError(f"model config: missing `{key}` section")
        return split_target(OmegaConf.to_container(self.cfg[key]), key)

    def build(self, key: str, **extra: Any) -> nn.Module:
        """Instantiate the config section `key`."""
        cls, kwargs = self.section(key)
        try:
            inspect.signature(cls).bind(**kwargs, **extra)  # an unknown or missing key, before any work
            return cls(**kwargs, **extra)
        except (TypeError, ConfigError) as error:
            raise ConfigError(f"model config `{key}` ({cls.__name__}): {error}") from error

    def fill_decoder_input(self) -> None:
        """As NeMo: a missing `decoder.feat_in` is the encoder's output width; a wrong one is an error."""
        feat_in = (self.cfg.get("decoder") or {}).get("feat_in")
        if not feat_in:
            self.cfg.decoder.feat_in = self.encoder.feat_out
        elif feat_in != self.encoder.feat_out:
            raise ConfigError(
                f"model config: decoder.feat_in={feat_in} but the encoder outputs {self.encoder.feat_out} channels"
            )

    @property
    def num_weights(self) -> int:
        """Trainable parameters (NeMo's name)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def nemo_config(self) -> dict[str, Any]:
        """The config as written into a `.nemo`: NeMo `_target_`s and our own settings made explicit."""
        config = to_nemo_targets(OmegaConf.to_container(self.cfg))
        config["encoder"] = nemo_encoder_section(config["encoder"])
        config["target"] = self.nemo_target
        return config

    # --- training -------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        """NeMo's `optim` section: name, lr, betas, weight_decay, ... and `sched` (per-step schedule)."""
        if not self.cfg.get("optim"):
            raise ConfigError("model config: `optim` section needed to train (name, lr, ...)")
        optim = OmegaConf.to_container(self.cfg.optim)
        name = optim.pop("name")
        schedule = optim.pop("sched", None)
        if name not in OPTIMIZERS:
            raise ConfigError(f"model config: optim.name={name!r}; choose one of {sorted(OPTIMIZERS)}")
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = OPTIMIZERS[name](parameters, **optim)
        if not schedule:
            return {"optimizer": optimizer}
        schedule = dict(schedule)
        max_steps = schedule.pop("max_steps", None) or self.trainer.estimated_stepping_batches
        scheduler = build_scheduler(optimizer, schedule.pop("name"), int(max_steps), **schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def freeze_encoder(self) -> None:
        """Train only the head (fine-tuning on little data)."""
        self.encoder.requires_grad_(False)

    def freeze_batchnorm(self) -> None:
        """Keep every BatchNorm in eval mode (running statistics and affine weights fixed) while training."""
        self.frozen_batchnorm = True
        for module in self.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> QuartzNetModel:
        super().train(mode)
        if mode and self.frozen_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm1d):
                    module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    # --- evaluation bookkeeping shared by validation and test ----------------------------------------
    # Each step adds counts (never rates) per dataloader; at epoch end they are summed over DDP ranks, so
    # every rank logs the same corpus-level metrics.

    def add_eval_counts(self, stage: str, dataloader_idx: int, counts: list[float]) -> None:
        totals = self._eval_totals.setdefault(stage, {})
        update = torch.tensor(counts, dtype=torch.float64)
        totals[dataloader_idx] = totals[dataloader_idx] + update if dataloader_idx in totals else update

    def eval_metrics(self, totals: torch.Tensor) -> dict[str, float]:
        """Metric name (one of EVAL_METRICS, without stage prefix) -> value, from summed counts."""
        raise NotImplementedError

    @staticmethod
    def metric_key(stage: str, metric: str, index: int, name: str) -> str:
        """The logged name of an evaluation metric: `val_wer` for the first set, `val_wer_<name>` after."""
        return f"{stage}_{metric}" if index == 0 else f"{stage}_{metric}_{name}"

    def logged_metrics(self, validation_names: Sequence[str]) -> list[str]:
        """Every metric training logs with these validation sets: what a checkpoint may monitor."""
        validation = [self.metric_key("val", metric, index, name) for index, name in enumerate(validation_names)
                      for metric in self.EVAL_METRICS]
        return [*validation, *(f"train_{metric}" for metric in self.TRAIN_METRICS), "train_skipped", "lr"]

    def log_eval_metrics(self, stage: str) -> dict[str, dict[str, float]]:
        """Reduce, log and return `{dataloader name: {metric: value}}`; the first dataloader has no suffix."""
        names = list(getattr(self.trainer.datamodule, f"{stage}_names", None) or []) if self._trainer else []
        results = {}
        for index, totals in sorted(self._eval_totals.pop(stage, {}).items()):
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
            name = names[index] if index < len(names) else f"{stage}_{index}"
            metrics = self.eval_metrics(totals)
            for metric, value in metrics.items():
                # Already summed over ranks: sync_dist only averages equal values (and keeps Lightning quiet).
                self.log(self.metric_key(stage, metric, index, name), value, prog_bar=index == 0 and metric != "loss",
                         sync_dist=True)
            results[name] = metrics
        return results

    def on_validation_epoch_start(self) -> None:
        self._eval_totals.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self.log_eval_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._eval_totals.pop("test", None)

    def on_test_epoch_end(self) -> None:
        self.last_test_metrics = self.log_eval_metrics("test")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | dict[str, Any]:
        """The loss; with rows the loss had to leave out, {"loss", "skipped": [(path, reason)]}, which
        train.py's SkippedItemsReport counts with the items the data loader skipped."""
        if batch.audio.shape[0] == 0:  # every file of the batch was unusable: a no-op step keeps DDP in step
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        loss, metrics, skipped = self.training_loss(batch)
        used = batch.audio.shape[0] - len(skipped)
        if used:
            for name, value in {"loss": loss, **metrics}.items():
                self.log(f"train_{name}", value, prog_bar=True, batch_size=used)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True)
        return {"loss": loss, "skipped": skipped} if skipped else loss

    def training_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, str]]]:
        """The batch's loss, other training metrics to log, and (path, reason) of the rows the loss left out."""
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch.audio.shape[0]:
            self.add_eval_counts("val", dataloader_idx, self.evaluation_counts(batch))

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch.audio.shape[0]:
            self.add_eval_counts("test", dataloader_idx, self.evaluation_counts(batch))

    def evaluation_counts(self, batch: Any) -> list[float]:
        """Summable counts of one evaluation batch, turned into metrics by `eval_metrics`."""
        raise NotImplementedError

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CKPT_CONFIG_KEY] = self.nemo_config()

    def save_to(self, save_path: str | os.PathLike) -> Path:
        """Write a `.nemo` with NeMo's member names and state-dict keys."""
        return save_nemo(save_path, self.nemo_config(), self.state_dict())

    @classmethod
    def from_checkpoint_data(
        cls, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike, strict: bool = True
    ) -> QuartzNetModel:
        """The model `config` describes, with `state_dict` loaded (`source` names the file in errors), once
        `check_checkpoint_data` has passed them."""
        cls.check_checkpoint_data(config, state_dict, source, strict)
        model = cls(config)
        model.load_state_dict(state_dict, strict=False)
        return model

    @classmethod
    def check_checkpoint_data(
        cls, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike, strict: bool = True
    ) -> None:
        """Refuse, with a CheckpointError naming `source`, before any model is allocated: a config the model
        cannot be built from, a weight whose shape differs from what the config asks for (the first such
        key, its config section and both shapes), a weight holding NaN or Inf (the first such tensor),
        and, when `strict`, missing or unexpected keys. The config is built on the meta device (shapes
        only), so a config asking for a huge model costs nothing unless its weights are there."""
        try:
            with torch.device("meta"):
                skeleton = cls(config)
        except (ValueError, TypeError, KeyError, OmegaConfBaseException) as error:
            raise CheckpointError(f"{source}: {' '.join(str(error).split())}") from error
        expected = {key: tuple(tensor.shape) for key, tensor in skeleton.state_dict().items()}
        for key, tensor in state_dict.items():
            if key in expected and tuple(tensor.shape) != expected[key]:
                raise CheckpointError(
                    f"{source}: weight {key} has shape {tuple(tensor.shape)} in the checkpoint, but its config "
                    f"(`{config_section_of(key)}`) asks for {expected[key]}; the config and the weights do not "
                    "belong together"
                )
        for key, tensor in state_dict.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise CheckpointError(
                    f"{source}: weight {key} holds {bad} NaN/Inf values of {tensor.numel()}; the checkpoint is "
                    "broken (did training diverge?); use an earlier checkpoint"
                )
        missing, unexpected = skeleton.load_state_dict(state_dict, strict=False, assign=True)  # torch's rules, no copy
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"{source}: weights do not fit the model its config describes: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )

    @classmethod
    def restore_from(
        cls, restore_path: str | os.PathLike, map_location: str | None = None, strict: bool = True
    ) -> QuartzNetModel:
        """Load a `.nemo` written by NeMo (any version) or by quartznet, or a `.ckpt` from train.py."""
        config, state_dict = load_checkpoint(restore_path)
        written_for = str(config.get("target", "")).rsplit(".", 1)[-1]
        expected = cls.nemo_target.rsplit(".", 1)[-1]
        if written_for and written_for != expected:
            raise CheckpointError(
                f"{restore_path}: holds a {written_for}, which {cls.__name__} cannot load "
                f"(it loads {expected} checkpoints)"
            )
        model = cls.from_checkpoint_data(config, state_dict, restore_path, strict)
        if map_location is not None:
            model = model.to(map_location)
        return model
