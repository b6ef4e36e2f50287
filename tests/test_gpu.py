"""The GPU path: a DDP step on NCCL, fp16 AMP with a working grad scaler, GPU log-probs equal to the CPU's,
the speaker / room / noise / channel augmentation equal to the CPU's, and evaluate.py on the GPU. Marked `gpu`; skipped where no CUDA device exists (run them on a GPU machine
with `pytest -m gpu`, see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import soundfile
import torch

from conftest import ROOT, randomize_batchnorm, tiny_ctc_config
from quartznet.data.manifest import write_manifest
from quartznet.models import CTCModel
from quartznet.network.heads import ctc_loss
from quartznet.network.wave_augment import BatchWaveformAugmentation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def batch(device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(4, 16000, generator=generator) * 0.1
    lengths = torch.tensor([16000, 14000, 11000, 8000])
    targets = torch.randint(0, 28, (4, 12), generator=generator)
    target_len = torch.tensor([12, 10, 9, 6])
    return audio.to(device), lengths.to(device), targets.to(device), target_len.to(device)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_log_probs_on_the_gpu_equal_the_cpu_ones():
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config(se=True)).eval()
    randomize_batchnorm(model)
    audio, lengths, _, _ = batch(torch.device("cpu"))
    with torch.inference_mode():
        cpu, cpu_len, _ = model(input_signal=audio, input_signal_length=lengths)
        gpu, gpu_len, _ = model.cuda()(input_signal=audio.cuda(), input_signal_length=lengths.cuda())
    assert torch.equal(cpu_len, gpu_len.cpu())
    for row, n in enumerate(cpu_len.tolist()):
        torch.testing.assert_close(gpu[row, :n].cpu(), cpu[row, :n], atol=1e-3, rtol=0)


def test_waveform_augmentation_on_the_gpu_equals_the_cpu_one():
    """The draws are made on the CPU generator, the signal work on the audio's device: same result."""
    audio, lengths, _, _ = batch(torch.device("cpu"))
    augment = BatchWaveformAugmentation(
        speed_prob=1.0, tempo_prob=1.0, shift_prob=1.0, room_prob=1.0, coloured_noise_prob=1.0, noise_prob=1.0,
        band_limit_prob=1.0, gain_prob=1.0,
    )
    on_cpu = augment(audio, lengths, torch.Generator().manual_seed(3))
    on_gpu = augment(audio.cuda(), lengths.cuda(), torch.Generator().manual_seed(3))
    assert on_gpu[0].is_cuda and torch.equal(on_gpu[1].cpu(), on_cpu[1])
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=1e-3)


def test_ddp_step_on_nccl_matches_a_plain_step():
    """One process group of size 1 on NCCL: DDP's all-reduce runs and the step equals a plain step."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = CTCModel(tiny_ctc_config()).cuda().train()
        wrapped = CTCModel(tiny_ctc_config()).cuda().train()
        wrapped.load_state_dict(plain.state_dict())
        ddp = torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=[0])
        audio, lengths, targets, target_len = batch(torch.device("cuda"))
        for module in (plain, ddp):
            torch.manual_seed(1)  # the same dither
            log_probs, encoded_len, _ = module(input_signal=audio, input_signal_length=lengths)
            ctc_loss(log_probs, encoded_len, targets, target_len, 28).backward()
        for (name, a), b in zip(plain.named_parameters(), wrapped.parameters()):
            torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    finally:
        torch.distributed.destroy_process_group()


def test_fp16_amp_training_has_finite_loss_and_a_working_grad_scaler():
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config()).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    audio, lengths, targets, target_len = batch(torch.device("cuda"))
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
        assert log_probs.dtype == torch.float32  # the head's log-softmax and the CTC loss stay in fp32
        loss = ctc_loss(log_probs, encoded_len, targets, target_len, model.blank_id)
        assert torch.isfinite(loss)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert scaler.get_scale() > 0 and scaler._growth_tracker is not None
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lightning_fp16_mixed_fit_on_the_gpu(tmp_path):
    from quartznet.training.datamodule import SpeechDataModule

    rows = []
    for index in range(4):
        path = tmp_path / f"{index}.wav"
        soundfile.write(path, (torch.randn(12000) * 0.1).numpy(), 16000)
        rows.append({"audio_filepath": str(path), "duration": 0.75, "text": "a b"})
    manifest = write_manifest(tmp_path / "train.json", rows)
    model = CTCModel(tiny_ctc_config() | {"optim": {"name": "adamw", "lr": 1e-3}})
    data = SpeechDataModule("asr", model.vocabulary, train_manifest=str(manifest), validation_manifests=[str(manifest)],
                            batch_size=2, num_workers=0)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="16-mixed", max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    assert torch.isfinite(torch.tensor(trainer.callback_metrics["val_loss"]))


def test_evaluate_runs_on_the_gpu(tmp_path):
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config())
    checkpoint = model.save_to(tmp_path / "tiny.nemo")
    rows = []
    for index in range(3):
        path = tmp_path / f"{index}.wav"
        soundfile.write(path, (torch.randn(16000) * 0.1).numpy(), 16000)
        rows.append({"audio_filepath": str(path), "duration": 1.0, "text": "hello world"})
    manifest = write_manifest(tmp_path / "test.json", rows)
    out = tmp_path / "evaluation"
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"checkpoint={checkpoint}", f"manifest={manifest}",
         f"output_dir={out}", "device=cuda", "amp=true", "num_workers=0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "results.json").read_text())
    assert summary["utterances"] == 3
