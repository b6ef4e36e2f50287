"""Evaluate a `.nemo` (NeMo's or ours) or a train.py `.ckpt` on a manifest or a LibriSpeech split.

    python evaluate.py checkpoint=runs/demo/model.nemo manifest=data/synthetic_asr/test.json
    python evaluate.py checkpoint=QuartzNet15x5Base-En.nemo split=test-clean amp=true
    python evaluate.py checkpoint=runs/demo/model.nemo manifest=... decoding.strategy=beam \
        decoding.lm_path=runs/lm/train_3gram.arpa decoding.lexicon_path=runs/lm/lexicon.txt

ASR: prints WER (with substitutions / deletions / insertions), CER and the worst utterances; writes a
predictions manifest (`pred_text` per line, `text` = the normalised reference that was scored) and a
summary PNG. Classifiers: accuracy, per-class precision / recall and a confusion-matrix PNG.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from quartznet.common.cli import resolve_device
from quartznet.common.errors import (
    UserError,
    config_fraction,
    config_int,
    hydra_debug,
    user_errors,
)
from quartznet.common.outputs import (
    JsonLinesOutput,
    atomic_write_json,
    check_distinct,
    check_rows_output,
    check_writable,
)
from quartznet.common.runs import log_name, log_to_file, write_config
from quartznet.data.manifest import check_manifest_files, manifest_audio_paths, manifest_paths, write_manifest
from quartznet.decoding import STRATEGIES, make_decoder
from quartznet.tasks import load_model, task_of
from quartznet.tasks.evaluation import ASR_PLOT, CLASSIFICATION_PLOT, librispeech_manifest

log = logging.getLogger("evaluate")
CONFIG = "evaluate_config.yaml"  # in output_dir, beside the results: the command line and the resolved config
LIBRISPEECH_SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other")


def validated(cfg: DictConfig) -> dict[str, Any]:
    """Every config value checked before any work (model loading, audio reading): the settings, or a
    UserError naming the key and what to do."""
    if OmegaConf.is_missing(cfg, "checkpoint") or not cfg.checkpoint:
        raise UserError("checkpoint=...: give the .nemo or .ckpt to evaluate")
    if not Path(str(cfg.checkpoint)).is_file():
        raise UserError(f"checkpoint={cfg.checkpoint}: no such file; give a .nemo or a train.py .ckpt")
    if bool(cfg.manifest) == bool(cfg.split):
        raise UserError("give exactly one of manifest=... or split=<LibriSpeech split> "
                        f"(got manifest={cfg.manifest}, split={cfg.split})")
    if cfg.manifest:
        manifest = str(cfg.manifest)
        check_manifest_files(manifest, "manifest")
    else:
        manifest = librispeech_manifest(cfg.librispeech_dir, cfg.split, LIBRISPEECH_SPLITS)
        check_manifest_files(manifest, "split")
    if not isinstance(cfg.amp, bool):
        raise UserError(f"amp={cfg.amp!r}: must be true or false")
    if cfg.decoding.strategy not in STRATEGIES:
        raise UserError(f"decoding.strategy={cfg.decoding.strategy!r}: choose one of {list(STRATEGIES)}")
    output_dir = Path(str(cfg.output_dir))
    results, predictions = output_dir / "results.json", Path(str(cfg.predictions))
    outputs = {"predictions": predictions, "output_dir's results": results, "output_dir's config": output_dir / CONFIG,
               "output_dir's log": output_dir / log_name("evaluate"), "output_dir's summary plot": output_dir / ASR_PLOT,
               "output_dir's confusion matrix": output_dir / CLASSIFICATION_PLOT}
    check_distinct(outputs)
    # No output may be an input: the checkpoint, a manifest, one of its audio files, the LM or lexicon.
    inputs = [cfg.checkpoint, *manifest_paths(manifest), *manifest_audio_paths(manifest),
              cfg.decoding.lm_path, cfg.decoding.lexicon_path]
    for name, path in outputs.items():
        (check_rows_output if name == "predictions" else check_writable)(path, inputs)
    return dict(
        manifest=manifest,
        batch_size=config_int(cfg.batch_size, "batch_size", minimum=1),
        num_workers=config_int(cfg.num_workers, "num_workers", minimum=0),
        worst=config_int(cfg.worst, "worst", minimum=0),
        max_skipped_fraction=config_fraction(cfg.max_skipped_fraction, "max_skipped_fraction"),
        device=resolve_device(cfg.device, "device"),
        output_dir=output_dir,
        results=results,
        predictions=predictions,
    )


def evaluate(cfg: DictConfig, settings: dict[str, Any]) -> dict:
    manifest, predictions = settings["manifest"], settings["predictions"]
    model = load_model(cfg.checkpoint)
    task = task_of(model)
    options = dict(batch_size=settings["batch_size"], num_workers=settings["num_workers"], device=settings["device"],
                   amp=cfg.amp, max_skipped_fraction=settings["max_skipped_fraction"])
    if task.transcribes:
        decoding = cfg.decoding
        options["decode"] = make_decoder(model, decoding.strategy, beam_size=decoding.beam_size,
                                         lm_path=decoding.lm_path, lexicon_path=decoding.lexicon_path,
                                         lm_weight=decoding.lm_weight, word_score=decoding.word_score)
    elif cfg.decoding.strategy != "greedy":
        raise UserError(f"decoding.strategy={cfg.decoding.strategy!r} applies to speech recognition, not {task.name}")
    # Rows stream to <predictions>.partial as they are ready; an interrupted run keeps them there and
    # leaves an existing <predictions> as it was.
    output = JsonLinesOutput(predictions)
    try:
        result = task.evaluate(model, manifest, on_row=output.write, **options)
    except BaseException:
        output.keep_partial()
        if output.rows == 0:
            output.partial.unlink(missing_ok=True)
        raise
    output.keep_partial()
    write_manifest(predictions, result.rows)  # complete, in manifest order, atomically
    output.partial.unlink(missing_ok=True)
    report = result.report(settings["worst"])
    result.plot(settings["output_dir"], Path(manifest).stem)
    summary = result.summary()
    write_config(settings["output_dir"] / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(settings["results"], summary)
    print(f"{cfg.checkpoint} on {manifest}\n{report}\npredictions: {predictions}")
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    with user_errors(debug=hydra_debug()):
        settings = validated(cfg)
    partial = settings["predictions"].with_name(settings["predictions"].name + ".partial")
    interrupted = (f"interrupted: the predictions finished so far are in {partial}; "
                   f"{settings['predictions']} was not changed")
    with user_errors(debug=hydra_debug(), interrupted=interrupted), log_to_file(settings["output_dir"], "evaluate"):
        return evaluate(cfg, settings)


if __name__ == "__main__":
    main()
