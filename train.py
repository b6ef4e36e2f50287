"""Train, resume or fine-tune a QuartzNet / MatchboxNet model from the Hydra configs in conf/.

    python train.py experiment=demo_asr
    python train.py experiment=librispeech_15x5_8gpu paths.data_dir=/data
    python train.py experiment=demo_asr paths.run_dir=runs/my_run resume=last     # continue a killed run
    python train.py experiment=finetune_asr init_from.path=QuartzNet15x5Base-En.nemo data=...

See docs/configuration.md for the groups and docs/recipes.md for full recipes.

A mistake in what it is given (a config value, a missing or empty manifest, unusable training or
validation data) ends as one line `error: ...` on stderr and exit status 1, checked before any work
where it can be; HYDRA_FULL_ERROR=1 shows the traceback. One run at a time writes into a run folder
(a second one is refused); config.yaml (before training starts) and results.json are replaced atomically, train.log
collects the log, and a resumed run appends to csv/metrics.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from quartznet.common.errors import UserError, hydra_debug, user_errors
from quartznet.common.outputs import WRITE_ERRNOS, atomic_write_json
from quartznet.common.runs import RunLock, log_to_file, shared_run_folder, write_config
from quartznet.tasks import task_of
from quartznet.tasks.plots import plot_training_curves
from quartznet.training.setup import (
    RUN_CONFIG,
    build_model,
    build_trainer,
    check_data_fits_model,
    instantiate,
    load_best_weights,
    resume_path,
    validate_config,
)

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    started: dict[str, pl.Trainer] = {}
    with user_errors(debug=hydra_debug(), interrupted=lambda: interrupted_message(cfg, started.get("trainer"))):
        return train(cfg, started)


def interrupted_message(cfg: DictConfig, trainer: pl.Trainer | None) -> str:
    """Where a Ctrl-C stopped training and how to continue from what was saved."""
    if trainer is None:
        return "interrupted before training started"
    last = Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt"
    where = f"interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}"
    if not last.is_file():
        return f"{where}; no checkpoint was written yet"
    return f"{where}; continue from {last} with the same command plus paths.run_dir={cfg.paths.run_dir} resume=last"


def train(cfg: DictConfig, started: dict[str, pl.Trainer]) -> dict:
    validate_config(cfg)
    run_dir = Path(cfg.paths.run_dir)
    # One run at a time in a folder, the same folder for every process it starts; its log there too
    # (the folder was checked by validate_config).
    with RunLock(run_dir, "paths.run_dir"), shared_run_folder(run_dir), log_to_file(run_dir, "train"):
        return run_training(run_dir, cfg, started)


def run_training(run_dir: Path, cfg: DictConfig, started: dict[str, pl.Trainer]) -> dict:
    pl.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg)
    log.info("model: %s, %s parameters", type(model).__name__, f"{model.num_weights:,}")
    datamodule = instantiate(cfg.data, "data", labels=task_of(model).labels(model))
    check_data_fits_model(cfg, model, datamodule)
    trainer = started["trainer"] = build_trainer(cfg)
    write_config(run_dir / RUN_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg))
    except SystemExit:
        if trainer.interrupted:  # Lightning shuts down on Ctrl-C, then exits 1; ours says where and exits 130
            raise KeyboardInterrupt from None
        raise
    except OSError as error:  # Lightning's and the loggers' writes name no file: say where, and what next
        if error.filename is not None or error.errno not in WRITE_ERRNOS:
            raise
        raise UserError(f"paths.run_dir={run_dir}: writing the run's checkpoints or logs failed "
                        f"({error.strerror}); free some space, then continue with resume=last") from error

    load_best_weights(model, trainer)
    results = {}
    if cfg.test_after_training and datamodule.test_manifests:
        trainer.test(model, datamodule=datamodule)
        results = model.last_test_metrics
    if trainer.is_global_zero:
        if cfg.save_nemo:
            log.info("model written to %s", model.save_to(cfg.save_nemo))
        if cfg.plots:
            plot_training_curves(run_dir / "csv" / "metrics.csv", run_dir / "training_curves.png")
        atomic_write_json(run_dir / "results.json", results)
        for name, metrics in results.items():
            log.info("test %s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return results


if __name__ == "__main__":
    main()
