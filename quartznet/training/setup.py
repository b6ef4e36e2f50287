"""What train.py does, as functions: build the model (fresh, or initialised from a checkpoint with
key filters, new vocabulary or labels), the data, the trainer; resume; write the results."""

from __future__ import annotations

import logging
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from quartznet.common.checkpoint import load_checkpoint
from quartznet.common.errors import ConfigError, MissingInputError, UserError, config_fraction, config_int
from quartznet.common.hardware import AUTO, auto_precision
from quartznet.common.outputs import check_distinct, check_writable
from quartznet.common.runs import log_name
from quartznet.data.manifest import check_manifest_files, manifest_paths
from quartznet.models import QuartzNetModel
from quartznet.tasks import TASKS, task_of
from quartznet.training.callbacks import SkippedItemsReport
from quartznet.training.rng import StepSeeding

log = logging.getLogger(__name__)


def _manifest_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else [value]


def validate_config(cfg: DictConfig) -> None:
    """Check the values train.py depends on before any work (model, data, trainer): numbers and their
    ranges, the manifests (present, not empty), resume and init_from files, writable outputs. A
    UserError names the key and what to do."""
    select = lambda key: OmegaConf.select(cfg, key, default=None)  # noqa: E731
    config_int(select("seed"), "seed", allow_none=True)
    config_int(select("data.batch_size"), "data.batch_size", minimum=1)
    config_int(select("data.eval_batch_size"), "data.eval_batch_size", minimum=1, allow_none=True)
    config_int(select("data.num_workers"), "data.num_workers", minimum=0, allow_none=True)
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        if config_int(select(key), key, minimum=-1, allow_none=True) == 0:
            raise ConfigError(f"{key}=0 trains nothing (the model would be written untrained); give at least 1, "
                              "or -1 for no limit")
    if select("max_skipped_fraction") is not None:
        config_fraction(select("max_skipped_fraction"), "max_skipped_fraction")
    if not select("data.train_shards"):
        if not select("data.train_manifest"):
            raise UserError("data.train_manifest is not set; give the training manifest (or data.train_shards)")
        check_manifest_files(select("data.train_manifest"), "data.train_manifest")
    validation = _manifest_list(select("data.validation_manifests"))
    for manifests in validation:
        check_manifest_files(manifests, "data.validation_manifests")
    if cfg.get("test_after_training"):
        for manifests in _manifest_list(select("data.test_manifests")):
            check_manifest_files(manifests, "data.test_manifests")
    monitor = select("callbacks.model_checkpoint.monitor")
    if monitor and not validation:
        raise UserError(f"data.validation_manifests is empty, but checkpoints are chosen on {monitor!r} "
                        "(callbacks.model_checkpoint.monitor); give a validation manifest or set "
                        "callbacks.model_checkpoint.monitor=null")
    resume = select("resume")
    if resume and resume != "last":
        check_resume_checkpoint(Path(str(resume)))
    init = select("init_from")
    if init and not Path(str(init.get("path") or "")).is_file():
        raise UserError(f"init_from.path={init.get('path')}: no such file; give a .nemo or .ckpt to start from")
    # No output may be an input (say, save_nemo=pretrained.nemo with init_from.path=pretrained.nemo).
    inputs = [*(path for key in ("data.train_manifest", "data.validation_manifests", "data.test_manifests")
                for manifests in _manifest_list(select(key)) for path in manifest_paths(manifests)),
              init.get("path") if init else None, resume if resume != "last" else None]
    run_dir = Path(str(cfg.paths.run_dir))
    outputs = {"paths.run_dir's results": run_dir / "results.json", "paths.run_dir's config": run_dir / RUN_CONFIG,
               "paths.run_dir's log": run_dir / log_name("train")}
    if cfg.get("save_nemo"):
        outputs["save_nemo"] = Path(str(cfg.save_nemo))
    check_distinct(outputs)
    for path in outputs.values():
        check_writable(path, inputs)
    if init and init.get("path"):  # a checkpoint this run would replace (its last.ckpt, say) is no place to start
        for name, callback in (cfg.get("callbacks") or {}).items():
            folder = (callback or {}).get("dirpath")
            if folder and Path(str(init.path)).resolve().is_relative_to(Path(str(folder)).resolve()):
                raise ConfigError(f"init_from.path={init.path} lies in {folder}, where this run writes its checkpoints "
                                  f"(callbacks.{name}.dirpath) and would replace it; copy it elsewhere or give "
                                  "another paths.run_dir")


def check_resume_checkpoint(path: Path) -> None:
    """`resume=` names a Lightning checkpoint (a zip that torch.save wrote); a `.nemo` (a tar) or any other
    file is a ConfigError that says what to give instead, before Lightning's loader fails on it."""
    if not path.is_file():
        raise MissingInputError(f"resume={path}: no such checkpoint; give a .ckpt path or resume=last")
    if tarfile.is_tarfile(path):
        raise ConfigError(f"resume={path}: is a .nemo model; resume continues a run from its Lightning checkpoint "
                          f"(a .ckpt in <run_dir>/checkpoints, or resume=last); to start a new run from this model, "
                          f"give init_from.path={path}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"resume={path}: not a Lightning checkpoint (.ckpt, as train.py writes them in "
                          "<run_dir>/checkpoints); give one, or resume=last")


RUN_CONFIG = "config.yaml"  # the run's record in its folder: the command line and the resolved config


def check_data_fits_model(cfg: DictConfig, model: QuartzNetModel, datamodule: Any) -> None:
    """What can only be checked once the model and data exist: the data is for this kind of model, the
    audio's sample rate is the model's, and every callback's `monitor` names a metric this model logs on
    these validation sets."""
    task = task_of(model)
    if datamodule.task != task.name:
        raise ConfigError(f"data.task={datamodule.task} but the model ({type(model).__name__}, model._target_) is "
                          f"for the task {task.name!r}; choose data and model for the same task")
    model_rate, data_rate = model.preprocessor.sample_rate, datamodule.sample_rate
    if model_rate != data_rate:
        raise ConfigError(
            f"data.sample_rate={data_rate} but the model's front end computes its features for {model_rate} Hz "
            f"audio (model.preprocessor.sample_rate); audio at any rate is resampled to data.sample_rate, so set "
            f"data.sample_rate={model_rate}, or make a model for {data_rate} Hz audio with "
            f"model.preprocessor.sample_rate={data_rate}"
        )
    logged = [*model.logged_metrics(datamodule.val_names), "epoch", "step"]  # Lightning adds epoch and step
    for name, callback in (cfg.get("callbacks") or {}).items():
        monitor = (callback or {}).get("monitor")
        if monitor and monitor not in logged:
            raise ConfigError(f"callbacks.{name}.monitor={monitor!r} is not a metric this run logs; choose one of "
                              f"{logged}")


def model_class(model_cfg: DictConfig) -> type[QuartzNetModel]:
    """The model config's `_target_` (quartznet.models.CTCModel / ClassificationModel)."""
    target = model_cfg.get("_target_")
    if not target:
        raise ConfigError("model config needs `_target_: quartznet.models.CTCModel` (or ClassificationModel)")
    cls = hydra.utils.get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, QuartzNetModel)):
        raise ConfigError(f"model._target_={target!r} is not a quartznet model class")
    return cls


def filter_keys(keys: Sequence[str], include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """NeMo's init_from filters: keep keys containing any `include` substring (all when empty), then
    drop keys containing any `exclude` substring."""
    kept = [k for k in keys if not include or any(part in k for part in include)]
    return [k for k in kept if not exclude or not any(part in k for part in exclude)]


def initialize_from(
    model: QuartzNetModel, path: str, include: Sequence[str] | None, exclude: Sequence[str] | None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> list[str]:
    """Copy the filtered weights of a `.nemo` / `.ckpt` into `model`; returns the keys loaded.

    A key the model lacks, or whose shape differs (a head for other labels), is not loaded and is
    reported, so `exclude` is only needed to skip weights that would fit. `weights`: the checkpoint's
    state dict when the caller has read it already.
    """
    if weights is None:
        _, weights = load_checkpoint(path)
    own = model.state_dict()
    wanted = filter_keys(list(weights), include, exclude)
    loadable = [k for k in wanted if k in own and own[k].shape == weights[k].shape]
    skipped = sorted(set(wanted) - set(loadable))
    if skipped:
        log.warning("init_from %s: %d filtered keys not loaded (absent or other shape): %s", path, len(skipped), skipped[:10])
    model.load_state_dict({k: weights[k] for k in loadable}, strict=False)
    log.info("init_from %s: loaded %d of %d weights", path, len(loadable), len(weights))
    return loadable


# What fine-tuning takes from cfg.model over the checkpoint's: how to train, and every augmentation.
TRAINING_SECTIONS = ("optim", "spec_augment", "waveform_augment", "vtlp")


def build_model(cfg: DictConfig) -> QuartzNetModel:
    """cfg.model, or with `init_from.use_checkpoint_config` the checkpoint's own architecture (its
    labels, mel variant, ...) with cfg.model's TRAINING_SECTIONS where it sets them; then init_from, new head,
    freezing."""
    cls = model_class(cfg.model)
    init = cfg.get("init_from")
    weights = None
    if init and init.get("use_checkpoint_config"):
        config, weights = load_checkpoint(init.path)
        for section in TRAINING_SECTIONS:
            if cfg.model.get(section) is not None:
                config[section] = OmegaConf.to_container(cfg.model[section], resolve=True)
        cls.check_checkpoint_data(config, weights, init.path, strict=False)  # its config asks for its weights' shapes
        model = cls(config)
    else:
        model = cls(cfg.model)
    if init:
        initialize_from(model, init.path, init.get("include"), init.get("exclude"), weights)
    task = task_of(model)
    for key in sorted({other.relabel_method for other in TASKS.values()}):
        if cfg.get(key):
            if key != task.relabel_method:
                raise ConfigError(f"{key} does not apply to a {task.name} model; use {task.relabel_method}")
            task.relabel(model, cfg[key])
    if cfg.get("freeze_encoder"):
        model.freeze_encoder()
    if cfg.get("freeze_batchnorm"):
        model.freeze_batchnorm()
    return model


def resume_path(cfg: DictConfig) -> str | None:
    """`resume: last` -> the run folder's last.ckpt when it exists (a fresh start otherwise)."""
    if not cfg.get("resume"):
        return None
    if cfg.resume == "last":
        last = Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.warning("resume=last: %s does not exist yet; starting from scratch", last)
            return None
        return str(last)
    return str(cfg.resume)  # checked by validate_config


# What the constructors of Lightning's classes (trainer, callbacks, loggers) raise for arguments they
# refuse, and what Hydra raises for a `_target_` it cannot import: a config section's mistakes.
ARGUMENT_ERRORS = (ValueError, TypeError, ImportError, MisconfigurationException)


def instantiate(config: DictConfig, key: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a mistake in the config section `key` as one line (Hydra wraps every
    error in an InstantiationException, which would print a traceback): the UserError one of our classes
    raised itself, or, for another project's class, the argument errors its constructor raised."""
    try:
        return hydra.utils.instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        ours = str(config.get("_target_", "")).startswith("quartznet.")
        if not ours and (cause is None or isinstance(cause, ARGUMENT_ERRORS)):
            raise ConfigError(f"{key}: {' '.join(str(cause or error).split())}") from error
        raise


def instantiate_all(group: DictConfig | None, key: str) -> list[Any]:
    return [instantiate(item, f"{key}.{name}") for name, item in (group or {}).items()
            if item is not None and "_target_" in item]


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """cfg.trainer with cfg.callbacks and cfg.logger, plus the callbacks every run needs."""
    fraction = cfg.get("max_skipped_fraction")
    skipped = SkippedItemsReport(max_skipped_fraction=1.0 if fraction is None else float(fraction))
    callbacks = [*instantiate_all(cfg.get("callbacks"), "callbacks"), skipped, StepSeeding(cfg.get("seed"))]
    trainer_cfg = cfg.trainer
    if str(trainer_cfg.get("precision")) == AUTO:
        precision, why = auto_precision(str(trainer_cfg.get("accelerator", AUTO)))
        log.info("trainer.precision=auto -> %s: %s", precision, why)
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"precision": precision})
    return instantiate(trainer_cfg, "trainer", callbacks=callbacks, logger=instantiate_all(cfg.get("logger"), "logger") or False)


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback else ""
    return path or None


def load_best_weights(model: QuartzNetModel, trainer: pl.Trainer) -> None:
    best = best_checkpoint(trainer)
    if best:
        _, weights = load_checkpoint(best)
        model.load_state_dict(weights)
        log.info("best checkpoint: %s", best)
