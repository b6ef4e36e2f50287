"""ONNX export of a CTC QuartzNet, BatchNorm folded into the convs.

    python -m quartznet.export MODEL.nemo OUT_DIR [--variant openvino|lengths|mel|all] [--opset 17]

Variants (files `OUT_DIR/<model stem>.<variant>.onnx`):

* `openvino` - the Open Model Zoo card's signature: `audio_signal` (B, 64, T) normalised log-mel
  features -> `output` (B, ceil(T/2), 29) log-probabilities. Every frame counts as valid, so feed one
  utterance per call (or equal-length ones); features are computed outside the graph.
* `lengths`  - `audio_signal` (B, 64, T), `length` (B,) int64 -> `output`, `encoded_lengths` (B,) int64.
  Padding frames are masked exactly as in PyTorch, so an utterance gives the same result alone or
  in a padded batch.
* `mel`      - the mel front end inside the graph: `input_signal` (B, L) float32 16 kHz samples,
  `length` (B,) int64 -> `output`, `encoded_lengths`.

Time (and batch) axes are dynamic. Each file carries the vocabulary (blank last), the sample rate and
the mel variant as ONNX metadata (`vocabulary` is JSON).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch
from torch import nn

from quartznet.common.errors import ConfigError, InputError, UserError, user_errors
from quartznet.common.outputs import check_writable, replaced_atomically
from quartznet.network.features import FilterbankFeatures
from quartznet.network.fold import fold_batchnorm

if TYPE_CHECKING:  # the models pull in Lightning; at run time a model is passed in
    from quartznet.models import CTCModel

VARIANTS = ("openvino", "lengths", "mel")
DEFAULT_OPSET = 17
# 11: the oldest opset every variant exports to (mel: a dynamic Pad); 20: the newest the TorchScript exporter writes
MIN_OPSET, MAX_OPSET = 11, 20


class FeaturesToLogProbs(nn.Module):
    """The OpenVINO signature: (B, F, T) features, all frames valid -> (B, ceil(T/2), V+1) log-probs."""

    def __init__(self, model: CTCModel):
        super().__init__()
        self.encoder, self.decoder = model.encoder, model.decoder

    def forward(self, audio_signal: torch.Tensor) -> torch.Tensor:
        # (B,) lengths = T built from the input's shape, so the traced graph keeps T dynamic.
        lengths = torch.ones_like(audio_signal[:, 0, 0], dtype=torch.long) * audio_signal.shape[-1]
        encoded, _ = self.encoder(audio_signal=audio_signal, length=lengths)  # (B, C, T')
        return self.decoder(encoder_output=encoded)


class FeaturesWithLengths(nn.Module):
    """(B, F, T) features, (B,) frame lengths -> (B, T', V+1) log-probs, (B,) encoded lengths."""

    def __init__(self, model: CTCModel):
        super().__init__()
        self.encoder, self.decoder = model.encoder, model.decoder

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, encoded_lengths = self.encoder(audio_signal=audio_signal, length=length)
        return self.decoder(encoder_output=encoded), encoded_lengths


class ConvPowerSpectrogram(nn.Module):
    """|STFT|^2 of edge-padded audio as one strided conv1d with a windowed DFT basis: the traceable
    `power_spectrum` piece of FilterbankFeatures.

    The TorchScript ONNX exporter has no complex tensors, so `torch.stft(return_complex=True)` cannot
    be exported; a conv with cos/sin kernels computes the same real and imaginary parts (center=False,
    the window zero-padded to n_fft in the middle, as torch.stft does).
    """

    def __init__(self, featurizer: FilterbankFeatures):
        super().__init__()
        n_fft, win_length = featurizer.n_fft, featurizer.win_length
        window = torch.zeros(n_fft, dtype=torch.float64)
        start = (n_fft - win_length) // 2
        window[start:start + win_length] = featurizer.window.double()
        freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]  # (F, 1)
        phase = 2 * math.pi * freqs * torch.arange(n_fft, dtype=torch.float64) / n_fft  # (F, n_fft)
        basis = torch.cat([torch.cos(phase), -torch.sin(phase)]) * window  # (2F, n_fft)
        self.register_buffer("basis", basis.unsqueeze(1).float())  # (2F, 1, n_fft)
        self.hop_length = featurizer.hop_length

    def forward(self, x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """(B, L) padded samples -> (B, n_fft/2+1, T) power; `window` is already in the basis."""
        spec = nn.functional.conv1d(x.unsqueeze(1), self.basis, stride=self.hop_length)  # (B, 2F, T)
        real, imag = spec.chunk(2, dim=1)
        return real.pow(2) + imag.pow(2)


def traceable_features(featurizer: FilterbankFeatures) -> FilterbankFeatures:
    """A copy of the model's mel front end, in eval mode, with the conv STFT plugged in."""
    traceable = copy.deepcopy(featurizer).eval()
    traceable.power_spectrum = ConvPowerSpectrogram(featurizer)
    return traceable


class AudioWithLengths(nn.Module):
    """(B, L) 16 kHz samples, (B,) sample counts -> (B, T', V+1) log-probs, (B,) encoded lengths."""

    def __init__(self, model: CTCModel):
        super().__init__()
        self.features = traceable_features(model.preprocessor.featurizer)
        self.network = FeaturesWithLengths(model)

    def forward(self, input_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, frames = self.features(input_signal, length)
        return self.network(features, frames)


def _example_inputs(model: CTCModel, variant: str) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: batch 2 of unequal lengths, so no size is baked in as a constant."""
    if variant == "mel":
        return torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    features = torch.randn(2, model.encoder.feat_in, 96)
    return (features,) if variant == "openvino" else (features, torch.tensor([96, 71]))


def _signature(variant: str) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    """Input names, output names and dynamic axes of a variant."""
    if variant == "openvino":
        return ["audio_signal"], ["output"], {"audio_signal": {0: "batch", 2: "time"}, "output": {0: "batch", 1: "time_out"}}
    first = "input_signal" if variant == "mel" else "audio_signal"
    return [first, "length"], ["output", "encoded_lengths"], {
        first: {0: "batch", 1 if variant == "mel" else 2: "time"}, "length": {0: "batch"},
        "output": {0: "batch", 1: "time_out"}, "encoded_lengths": {0: "batch"},
    }


def export_onnx(model: CTCModel, path: str | Path, variant: str, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (BatchNorm folded here; the argument is not modified) as ONNX `variant` to `path`."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    from quartznet.tasks import task_of

    if not task_of(model).transcribes:
        raise TypeError(f"ONNX export supports CTCModel (speech recognition), got {type(model).__name__}")
    if variant == "mel" and not isinstance(model.preprocessor.featurizer, FilterbankFeatures):
        raise InputError("the mel variant needs the log-mel preprocessor (AudioToMelSpectrogramPreprocessor)")
    folded = fold_batchnorm(model)
    wrapper = {"openvino": FeaturesToLogProbs, "lengths": FeaturesWithLengths, "mel": AudioWithLengths}[variant]
    module = wrapper(folded).eval()
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset {opset}: choose {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    inputs, outputs, dynamic_axes = _signature(variant)
    path = Path(path)
    # Renamed onto `path` only when complete and checked: an interrupted or failed export (a full disk
    # included, named in the error) never leaves a half-written `path` or removes an existing one.
    with replaced_atomically(path) as temporary:
        _export_to(module, model, variant, temporary, inputs, outputs, dynamic_axes, opset)
    return path


def _export_to(
    module: nn.Module, model: CTCModel, variant: str, path: Path, inputs: list[str], outputs: list[str],
    dynamic_axes: dict[str, dict[int, str]], opset: int,
) -> None:
    with torch.no_grad():
        # The TorchScript exporter (dynamo=False): it works offline, takes dynamic_axes directly, and
        # traces the encoder's masks as ordinary ops; the default dynamo exporter needs onnxscript.
        torch.onnx.export(
            module, _example_inputs(model, variant), str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False, do_constant_folding=True,
        )
    onnx_model = onnx.load(str(path))
    metadata = {
        "vocabulary": json.dumps(model.vocabulary), "blank_id": str(model.blank_id),
        "sample_rate": str(model.preprocessor.sample_rate), "mel_variant": str(model.cfg.get("mel_variant", "")),
        "signature": variant,
    }
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(onnx_model)
    path.write_bytes(onnx_model.SerializeToString())


def _opset(text: str) -> int:
    """An argparse type: an opset the exporter writes and our ops exist in."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not MIN_OPSET <= value <= MAX_OPSET:
        raise argparse.ArgumentTypeError(f"{value} is not supported; choose {MIN_OPSET} to {MAX_OPSET}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m quartznet.export", description="Export a CTC QuartzNet (.nemo or .ckpt) to ONNX."
    )
    parser.add_argument("model", type=Path, help="a .nemo or Lightning .ckpt of a CTCModel")
    parser.add_argument("out_dir", type=Path, help="directory for <model stem>.<variant>.onnx")
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="openvino")
    parser.add_argument("--opset", type=_opset, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    done: list[str] = []

    def interrupted() -> str:
        return f"interrupted after {len(done)} of {len(variants)} variants; written: {', '.join(done) or 'none'}"

    with user_errors(args.debug, interrupted=interrupted):
        if args.out_dir.exists() and not args.out_dir.is_dir():
            raise UserError(f"{args.out_dir}: is a file; give a folder for the .onnx files")
        # Before loading anything: the folder must take new files (created with its parents if missing).
        for variant in variants:  # never the model itself
            check_writable(args.out_dir / f"{args.model.stem}.{variant}.onnx", [args.model])

        from quartznet.tasks import (
            load_transcriber,  # pulls in Lightning; only the CLI needs it
        )

        model = load_transcriber(args.model)
        for variant in variants:
            path = export_onnx(model, args.out_dir / f"{args.model.stem}.{variant}.onnx", variant, args.opset)
            done.append(str(path))
            print(f"{variant}: {path}")


if __name__ == "__main__":
    main()
