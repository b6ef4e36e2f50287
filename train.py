"""Train, resume or fine-tune a QuartzNet / MatchboxNet model from the Hydra configs in conf/.

    python train.py experiment=demo_asr
    python train.py experiment=librispeech_15x5_8gpu paths.data_dir=/data
    python train.py experiment=demo_asr paths.run_dir=runs/my_run resume=last     # continue a killed run
    python train.py experiment=finetune_asr init_from.path=QuartzNet15x5Base-En.nemo data=...

See docs/configuration.md for the groups and docs/recipes.md for full recipes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from quartznet.tasks import task_of
from quartznet.tasks.plots import plot_training_curves
from quartznet.training.setup import build_model, build_trainer, load_best_weights, resume_path

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    model = build_model(cfg)
    log.info("model: %s, %s parameters", type(model).__name__, f"{model.num_weights:,}")
    datamodule = hydra.utils.instantiate(cfg.data, labels=task_of(model).labels(model))
    trainer = build_trainer(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg))

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
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        for name, metrics in results.items():
            log.info("test %s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    return results


if __name__ == "__main__":
    main()
