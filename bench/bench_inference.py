"""QuartzNet 15x5 CPU inference paths: real-time factor, and greedy WER of each path on a test set.

    .venv/bin/python bench/bench_inference.py [--threads 2] [--runs 5] [--json out.json]
        [--model runs/demo_asr/model.nemo --manifest data/synthetic_asr/test.json]

Speed: QuartzNet 15x5 with random weights (speed does not depend on them) and seeded noise input,
batch 1 x 10 s and batch 16 x 10 s, features included, eval mode, torch.inference_mode(). Paths:
fp32 PyTorch; fp32 with BatchNorm folded (quartznet.network.fold); bf16 autocast on the folded model; ONNX
Runtime on the `lengths` export (features by PyTorch, then the ONNX graph); ONNX Runtime on the `mel`
export (everything in the graph). RTF = median seconds / seconds of audio in the batch; each is the
median of `--runs` timed runs after `--warmup` untimed ones.

WER (only with --model and --manifest): greedy WER of the same paths on a trained model.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from bench_model import (  # bench/ is the script's folder
    CONFIG,
    SAMPLE_RATE,
    median_seconds,
)
from omegaconf import OmegaConf

from quartznet.common.metrics import ErrorCounts, utterance_errors
from quartznet.data.datasets import AudioToCharDataset, Skipped, collate_asr
from quartznet.export import export_onnx
from quartznet.models import CTCModel
from quartznet.network.fold import fold_batchnorm
from quartznet.network.heads import ctc_greedy_decode
from quartznet.tasks import load_transcriber
from quartznet.tasks.evaluation import evaluate_asr

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def torch_runner(model: CTCModel, bf16: bool = False) -> Runner:
    def run(audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
        return log_probs, encoded_len
    return run


def onnx_features_runner(model: CTCModel, path: Path, threads: int) -> Runner:
    """PyTorch mel features -> ONNX Runtime on the `lengths` export."""
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])

    def run(audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            features, frames = model.preprocessor(input_signal=audio, length=lengths)
        output, encoded = session.run(None, {"audio_signal": features.numpy(), "length": frames.numpy()})
        return torch.from_numpy(output), torch.from_numpy(encoded)
    return run


def onnx_mel_runner(path: Path, threads: int) -> Runner:
    """ONNX Runtime on the `mel` export: samples in, log-probs out."""
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])

    def run(audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, encoded = session.run(None, {"input_signal": audio.numpy(), "length": lengths.numpy()})
        return torch.from_numpy(output), torch.from_numpy(encoded)
    return run


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return options


def runners(model: CTCModel, out_dir: Path, threads: int) -> dict[str, Runner]:
    model = model.eval()
    folded = fold_batchnorm(model)
    lengths_onnx = export_onnx(model, out_dir / "model.lengths.onnx", "lengths")
    mel_onnx = export_onnx(model, out_dir / "model.mel.onnx", "mel")
    return {
        "fp32": torch_runner(model),
        "fp32 folded BN": torch_runner(folded),
        "bf16 autocast, folded BN": torch_runner(folded, bf16=True),
        "ONNX Runtime (PyTorch features)": onnx_features_runner(model, lengths_onnx, threads),
        "ONNX Runtime (mel in graph)": onnx_mel_runner(mel_onnx, threads),
    }


def bench_speed(paths: dict[str, Runner], warmup: int, runs: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for batch in (1, 16):
        audio = torch.randn(batch, 10 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.1
        lengths = torch.full((batch,), audio.shape[1])
        for name, run in paths.items():
            seconds, _ = median_seconds(lambda: run(audio, lengths), warmup, runs)
            results.setdefault(name, {})[f"rtf_{batch}x10s"] = seconds / (batch * 10.0)
            print(f"{name:34s} batch {batch:2d} x 10 s: {seconds * 1000:7.0f} ms, RTF {seconds / (batch * 10):.4f}")
    return results


def wer_of_runner(model: CTCModel, run: Runner, manifest: str, batch_size: int) -> float:
    """Greedy corpus WER of `run` over `manifest`, batches in manifest order."""
    dataset = AudioToCharDataset(manifest, model.vocabulary, sample_rate=model.preprocessor.sample_rate, max_duration=None)
    errors = ErrorCounts()
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        items = [dataset[i] for i in indices]
        kept = [i for i, item in zip(indices, items) if not isinstance(item, Skipped)]
        batch = collate_asr(items)
        log_probs, encoded_len = run(batch.audio, batch.audio_len)
        texts = ctc_greedy_decode(log_probs, encoded_len, model.vocabulary, model.blank_id)
        for index, text in zip(kept, texts):
            errors = errors + utterance_errors(dataset.tokenizer.decode(dataset.tokens[index].tolist()), text)
    return errors.word_errors / max(errors.reference_words, 1)


def bench_wer(model_path: Path, manifest: str, out_dir: Path, threads: int, batch_size: int = 16) -> dict[str, float]:
    model = load_transcriber(model_path)
    folded = fold_batchnorm(model)
    wer = {
        "fp32": evaluate_asr(model, manifest, batch_size, 0).errors,
        "fp32 folded BN": evaluate_asr(folded, manifest, batch_size, 0).errors,
        "bf16 autocast": evaluate_asr(model, manifest, batch_size, 0, amp=True).errors,
        "bf16 autocast, folded BN": evaluate_asr(folded, manifest, batch_size, 0, amp=True).errors,
    }
    results = {name: e.word_errors / max(e.reference_words, 1) for name, e in wer.items()}
    paths = runners(model, out_dir, threads)
    for name in ("ONNX Runtime (PyTorch features)", "ONNX Runtime (mel in graph)"):
        results[name] = wer_of_runner(model, paths[name], manifest, batch_size)
    for name, value in results.items():
        print(f"WER {name:34s} {100 * value:.2f}%")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, help="a trained .nemo for the WER comparison")
    parser.add_argument("--manifest", help="test manifest for the WER comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if (args.model is None) != (args.manifest is None):
        parser.error("--model and --manifest go together")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}"
    print(f"QuartzNet 15x5 (random weights), {machine}")
    results: dict[str, object] = {"machine": machine}
    with tempfile.TemporaryDirectory() as tmp:
        results["speed"] = bench_speed(runners(CTCModel(OmegaConf.load(CONFIG)), Path(tmp), args.threads), args.warmup, args.runs)
        if args.model is not None:
            results["wer"] = bench_wer(args.model, args.manifest, Path(tmp), args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
