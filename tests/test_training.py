"""Training, fine-tuning and evaluation end to end on tiny models and tiny espeak-ng corpora (CPU)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
import jiwer
import pytest
import pytorch_lightning as pl
import torch

from conftest import ROOT, compose, model_config
from quartznet.data.manifest import read_manifests, write_manifest
from quartznet.training.datamodule import SpeechDataModule
from quartznet.models import ClassificationModel, CTCModel
from quartznet.training.setup import build_model, filter_keys, initialize_from

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed for speech (make setup installs it)")


@pytest.fixture(scope="module")
def asr_corpus(tmp_path_factory) -> dict[str, Path]:
    from data_prep.synthetic import generate_asr

    return generate_asr(tmp_path_factory.mktemp("asr"), seed=3, train=16, dev=6, test=6, min_words=1, max_words=3, jobs=2)


@pytest.fixture(scope="module")
def kws_corpus(tmp_path_factory) -> dict[str, Path]:
    from data_prep.synthetic import generate_kws

    return generate_kws(tmp_path_factory.mktemp("kws"), seed=3, train_speakers=2, val_speakers=1, test_speakers=1, jobs=2)


def subset_manifest(source: Path, out: Path, count: int, labels: set[str] | None = None) -> Path:
    """The first `count` rows of a manifest (of the given labels), with absolute audio paths."""
    entries = read_manifests(source, field="label" if labels else "text")
    if labels:
        entries = [e for e in entries if e.label in labels]
    rows = [{"audio_filepath": str(e.audio_filepath), "duration": e.duration,
             **({"label": e.label} if labels else {"text": e.text})} for e in entries[:count]]
    return write_manifest(out, rows)


def tiny_asr_config(**changes) -> dict:
    """A ~70 k-parameter QuartzNet that can memorise a handful of utterances in seconds."""
    config = model_config("quartznet_small")
    for block in config["encoder"]["jasper"]:
        block.update(filters=64, repeat=1, kernel=[min(block["kernel"][0], 15)])
    config["decoder"]["feat_in"] = 64
    config["spec_augment"] = None
    config["preprocessor"]["dither"] = 0.0
    config["optim"] = {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}
    return config | changes


def tiny_kws_config(labels: list[str]) -> dict:
    config = model_config("matchboxnet_3x1x64")
    config["labels"] = labels
    config["spec_augment"] = None
    config["optim"] = {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}
    return config


def fit(model, datamodule, **trainer_options) -> pl.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0)
    trainer = pl.Trainer(**(options | trainer_options))
    trainer.fit(model, datamodule=datamodule)
    return trainer


def asr_data(manifest: Path, labels, **options) -> SpeechDataModule:
    return SpeechDataModule("asr", labels, train_manifest=str(manifest), validation_manifests=[str(manifest)],
                            batch_size=4, num_workers=0, num_buckets=1, **options)


def test_ctc_model_overfits_a_handful_of_utterances_to_wer_zero(asr_corpus, tmp_path):
    pl.seed_everything(0)
    few = subset_manifest(asr_corpus["train"], tmp_path / "few.json", 4)
    model = CTCModel(tiny_asr_config())
    trainer = fit(model, asr_data(few, model.vocabulary), max_epochs=150, check_val_every_n_epoch=50)
    assert trainer.callback_metrics["val_wer"].item() == 0.0
    assert trainer.callback_metrics["val_cer"].item() == 0.0


def test_change_vocabulary_trains_and_decodes_with_the_new_blank(asr_corpus, tmp_path):
    pl.seed_everything(0)
    few = subset_manifest(asr_corpus["train"], tmp_path / "few.json", 4)
    model = CTCModel(tiny_asr_config())
    new_alphabet = list("zyxwvutsrqponmlkjihgfedcba") + [" ", "'", "-", "0"]  # other order, 30 labels
    model.change_vocabulary(new_alphabet)
    assert model.blank_id == 30 and model.decoder.num_classes_with_blank == 31
    assert model.cfg.decoder.vocabulary == new_alphabet
    trainer = fit(model, asr_data(few, model.vocabulary), max_epochs=150, check_val_every_n_epoch=50)
    assert trainer.callback_metrics["val_wer"].item() == 0.0
    restored = CTCModel.restore_from(model.save_to(tmp_path / "new.nemo"))
    assert restored.vocabulary == new_alphabet and restored.blank_id == 30


def test_classifier_overfits_to_full_accuracy_and_change_labels_trains(kws_corpus, tmp_path):
    pl.seed_everything(0)
    words = {"yes", "no", "up", "down"}
    few = subset_manifest(kws_corpus["v2_train"], tmp_path / "few.json", 8, labels=words)
    model = ClassificationModel(tiny_kws_config(sorted(words)))
    data = SpeechDataModule("classification", model.labels, train_manifest=str(few), validation_manifests=[str(few)],
                            batch_size=8, num_workers=0, num_buckets=1, monitor="val_acc", monitor_mode="max")
    trainer = fit(model, data, max_epochs=60, check_val_every_n_epoch=60)
    assert trainer.callback_metrics["val_acc"].item() == 1.0

    new_labels = ["down", "up", "no", "yes", "left"]  # another order and one class more
    model.change_labels(new_labels)
    assert model.decoder.num_classes == 5 and model.labels == new_labels
    data = SpeechDataModule("classification", new_labels, train_manifest=str(few), validation_manifests=[str(few)],
                            batch_size=8, num_workers=0, num_buckets=1, monitor="val_acc", monitor_mode="max")
    trainer = fit(model, data, max_epochs=40, check_val_every_n_epoch=40)
    assert trainer.callback_metrics["val_acc"].item() == 1.0


def test_bf16_mixed_training_on_cpu_keeps_features_and_loss_fp32(asr_corpus, tmp_path):
    pl.seed_everything(0)
    model = CTCModel(tiny_asr_config())
    dtypes = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            dtypes[name] = (output[0] if isinstance(output, tuple) else output).dtype
        return hook

    model.preprocessor.register_forward_hook(record("features"))
    model.decoder.register_forward_hook(record("log_probs"))
    trainer = fit(model, asr_data(asr_corpus["train"], model.vocabulary), max_steps=3, precision="bf16-mixed",
                  limit_val_batches=1)
    assert math.isfinite(trainer.callback_metrics["train_loss"].item())
    assert dtypes == {"features": torch.float32, "log_probs": torch.float32}


def test_kill_and_resume_reaches_the_same_weights(asr_corpus, tmp_path):
    """A run stopped after 5 steps and resumed from last.ckpt ends where an uninterrupted run ends."""

    def run(max_steps: int, folder: Path, resume: str | None = None) -> CTCModel:
        pl.seed_everything(0)
        model = CTCModel(tiny_asr_config(optim={"name": "novograd", "lr": 0.01, "betas": [0.8, 0.5],
                                                  "weight_decay": 0.001, "sched": {"name": "CosineAnnealing",
                                                                                   "max_steps": 12, "warmup_steps": 2}}))
        data = asr_data(asr_corpus["train"], model.vocabulary, seed=0)
        data.num_buckets = 2
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_last=True, save_top_k=0)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                             use_distributed_sampler=False, max_steps=max_steps, callbacks=[checkpoint],
                             check_val_every_n_epoch=100, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=data, ckpt_path=resume)
        return model

    uninterrupted = run(12, tmp_path / "a")
    run(5, tmp_path / "b")  # "killed" mid-epoch 1 (16 utterances in batches of 4: 4 steps per epoch)
    resumed = run(12, tmp_path / "b", resume=str(tmp_path / "b" / "last.ckpt"))
    for key, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)


def test_init_from_loads_exactly_the_filtered_keys(tmp_path):
    torch.manual_seed(0)
    source = CTCModel(tiny_asr_config())
    path = source.save_to(tmp_path / "source.nemo")
    torch.manual_seed(1)
    target = CTCModel(tiny_asr_config())
    before = {k: v.clone() for k, v in target.state_dict().items()}
    include, exclude = ["encoder."], ["encoder.encoder.0.", "running_"]
    loaded = initialize_from(target, str(path), include, exclude)
    expected = filter_keys(list(source.state_dict()), include, exclude)
    assert sorted(loaded) == sorted(expected) and expected
    assert all(k.startswith("encoder.") and not k.startswith("encoder.encoder.0.") and "running_" not in k for k in loaded)
    for key, value in target.state_dict().items():
        reference = source.state_dict()[key] if key in loaded else before[key]
        assert torch.equal(value, reference), key


def test_every_experiment_composes_and_builds_its_model(tmp_path, capsys):
    """conf/experiment/*.yaml with train.yaml: the model is built (parameter count printed) and the
    data module is instantiated; experiments that fine-tune get a checkpoint of the right kind."""
    checkpoints = {
        "asr": CTCModel(model_config("quartznet_15x5")).save_to(tmp_path / "asr.nemo"),
        "kws": ClassificationModel(model_config("matchboxnet_3x1x64")).save_to(tmp_path / "kws.nemo"),
    }
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert len(experiments) >= 8
    for name in experiments:
        overrides = [f"experiment={name}"]
        if "init_from" in (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text():
            kind = "kws" if "kws" in name else "asr"
            overrides.append(f"init_from.path={checkpoints[kind]}")
        cfg = compose(overrides)
        model = build_model(cfg)
        labels = model.vocabulary if isinstance(model, CTCModel) else model.labels
        datamodule = hydra.utils.instantiate(cfg.data, labels=labels)
        assert isinstance(datamodule, SpeechDataModule)
        assert datamodule.task == ("asr" if isinstance(model, CTCModel) else "classification")
        print(f"{name}: {type(model).__name__} with {model.num_weights:,} parameters")
    printed = capsys.readouterr().out
    assert "librispeech_15x5_8gpu: CTCModel with 18,924,381 parameters" in printed
    assert "matchboxnet_v1: ClassificationModel with 77,214 parameters" in printed
    assert "kws_v1_to_v2: ClassificationModel with 77,859 parameters" in printed


def run_script(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: int = 300) -> str:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_evaluate_prints_the_wer_of_its_predictions_manifest(asr_corpus, tmp_path):
    pl.seed_everything(0)
    few = subset_manifest(asr_corpus["train"], tmp_path / "few.json", 4)
    model = CTCModel(tiny_asr_config())
    fit(model, asr_data(few, model.vocabulary), max_epochs=120, check_val_every_n_epoch=120)
    checkpoint = model.save_to(tmp_path / "model.nemo")
    mixed = write_manifest(tmp_path / "mixed.json", [json.loads(line) for line in few.read_text().splitlines()] + [
        {"audio_filepath": str(e.audio_filepath), "duration": e.duration, "text": e.text}
        for e in read_manifests(asr_corpus["test"])[:4]])
    output = run_script(["evaluate.py", f"checkpoint={checkpoint}", f"manifest={mixed}", f"output_dir={tmp_path / 'eval'}",
                         "num_workers=0"])
    printed_wer = float(re.search(r"WER: ([0-9.]+)%", output).group(1))
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.json").read_text().splitlines()]
    assert len(rows) == 8 and all("pred_text" in row for row in rows)
    jiwer_wer = 100 * jiwer.wer([r["text"] for r in rows], [r["pred_text"] for r in rows])
    assert 0 < printed_wer < 100
    assert printed_wer == pytest.approx(jiwer_wer, abs=0.005)
    assert (tmp_path / "eval" / "evaluation_summary.png").stat().st_size > 1000


def test_two_process_ddp_trains_and_validates_with_identical_metrics_on_both_ranks(asr_corpus, tmp_path):
    run_dir = tmp_path / "ddp"
    overrides = [
        "experiment=demo_asr", f"paths.run_dir={run_dir}", "trainer=ddp_cpu", "trainer.max_epochs=1",
        f"data.train_manifest={asr_corpus['train']}", f"data.validation_manifests=[{asr_corpus['dev']}]",
        f"data.test_manifests=[{asr_corpus['test']}]", "data.num_workers=0", "data.batch_size=4",
        "callbacks.rich_progress_bar=null", "+callbacks.rank_metrics._target_=rank_metrics.DumpValidationMetrics",
        f"+callbacks.rank_metrics.folder={run_dir}", "save_nemo=null", "plots=false",
    ]
    run_script(["train.py", *overrides], env={"PYTHONPATH": str(ROOT / "tests")})
    ranks = [json.loads((run_dir / f"val_metrics_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1]
    assert {"val_wer", "val_cer", "val_loss"} <= set(ranks[0])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_training_from_shards_gives_every_rank_the_same_batch_count(asr_corpus, tmp_path):
    from quartznet.data.shards import write_shards

    write_shards(asr_corpus["train"], tmp_path / "shards", shard_size=5, progress=False)  # 4 shards
    model = CTCModel(tiny_asr_config())
    counts = []
    for rank in (0, 1):
        data = SpeechDataModule("asr", model.vocabulary, train_shards={"index": str(tmp_path / "shards"), "rank": rank,
                                                                       "world_size": 2},
                                validation_manifests=[str(asr_corpus["dev"])], batch_size=3, num_workers=0)
        counts.append(len(list(data.train_dataloader())))
    assert counts[0] == counts[1] == 3  # 16 utterances, 8 per rank, batches of 3
    trainer = fit(model, data, max_epochs=2, limit_val_batches=1)
    assert trainer.global_step == 6 and math.isfinite(trainer.callback_metrics["train_loss"].item())
