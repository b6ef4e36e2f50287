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

import json
import logging
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from quartznet.data.manifest import write_manifest
from quartznet.decoding import BeamSearchDecoder
from quartznet.models import CTCModel
from quartznet.tasks import load_model, task_of
from quartznet.tasks.evaluation import librispeech_manifest

log = logging.getLogger("evaluate")
LIBRISPEECH_SPLITS = ("dev-clean", "dev-other", "test-clean", "test-other")


def decoder_for(model: CTCModel, decoding: DictConfig) -> Callable:
    """(log_probs, lengths) -> texts, as `decoding.strategy` says: the model's greedy decode or beam search."""
    if decoding.strategy == "greedy":
        return model.decode
    if decoding.strategy != "beam":
        raise ValueError(f"decoding.strategy={decoding.strategy!r}: choose greedy or beam")
    log.info("beam search: %s", dict(decoding))
    return BeamSearchDecoder(model.vocabulary, model.blank_id, lm_path=decoding.lm_path,
                             lexicon_path=decoding.lexicon_path, beam_size=decoding.beam_size,
                             lm_weight=decoding.lm_weight, word_score=decoding.word_score).decode


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    if bool(cfg.manifest) == bool(cfg.split):
        raise ValueError("give exactly one of manifest=... or split=<LibriSpeech split>")
    manifest = cfg.manifest or librispeech_manifest(cfg.librispeech_dir, cfg.split, LIBRISPEECH_SPLITS)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(cfg.checkpoint)
    task = task_of(model)
    options = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=device, amp=cfg.amp)
    if task.transcribes:
        options["decode"] = decoder_for(model, cfg.decoding)
    elif cfg.decoding.strategy != "greedy":
        raise ValueError(f"decoding.strategy={cfg.decoding.strategy!r} applies to speech recognition, not {task.name}")
    result = task.evaluate(model, manifest, **options)
    report = result.report(cfg.worst)
    result.plot(output_dir, Path(manifest).stem)
    write_manifest(cfg.predictions, result.rows)
    summary = result.summary()
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"{cfg.checkpoint} on {manifest}\n{report}\npredictions: {cfg.predictions}")
    return summary


if __name__ == "__main__":
    main()
