"""ONNX export (OpenVINO signature, with lengths, with the mel front end) and BatchNorm folding."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from quartznet.export import export_onnx, main
from quartznet.network.fold import fold_batchnorm
from quartznet.models import CTCModel
from tests.conftest import model_config, randomize_batchnorm, tiny_ctc_config

ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


def tiny_model(se: bool = True, variant: str = "current") -> CTCModel:
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config(se=se, variant=variant)).eval()
    randomize_batchnorm(model)
    return model


def session(path: Path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def padded_features(lengths: list[int], feat_in: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F, max(lengths)) random features, zero past each length, and the (B,) lengths."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(len(lengths), feat_in, max(lengths), generator=generator)
    for row, length in enumerate(lengths):
        features[row, :, length:] = 0.0
    return features, torch.tensor(lengths)


@pytest.mark.parametrize("se", [False, True])
def test_fold_batchnorm_keeps_outputs(se: bool) -> None:
    model = tiny_model(se=se)
    folded = fold_batchnorm(model)
    features, lengths = padded_features([130, 97, 41])
    with torch.inference_mode():
        expected, expected_len, _ = model(processed_signal=features, processed_signal_length=lengths)
        actual, actual_len, _ = folded(processed_signal=features, processed_signal_length=lengths)
    assert torch.equal(actual_len, expected_len)
    assert (actual - expected).abs().max() < TOLERANCE
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.encoder.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.encoder.modules())  # original untouched
    assert not any(p.requires_grad for p in folded.parameters())
    with pytest.raises(ValueError, match="no Jasper-block BatchNorm"):
        fold_batchnorm(folded)


def test_openvino_signature_matches_pytorch_for_several_lengths(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.openvino.onnx", "openvino")
    runner = session(path)
    assert [i.name for i in runner.get_inputs()] == ["audio_signal"]
    assert [o.name for o in runner.get_outputs()] == ["output"]
    generator = torch.Generator().manual_seed(2)
    for frames in (16, 37, 128, 301):
        features = torch.randn(1, 64, frames, generator=generator)
        (output,) = runner.run(None, {"audio_signal": features.numpy()})
        with torch.inference_mode():
            expected, expected_len, _ = model(processed_signal=features)
        assert output.shape == (1, (frames + 1) // 2, 29)
        assert np.abs(output - expected.numpy()).max() < TOLERANCE
        assert model.decode(torch.from_numpy(output), expected_len) == model.decode(expected, expected_len)


def test_lengths_signature_padded_batch_equals_each_utterance_alone(tmp_path: Path) -> None:
    model = tiny_model()
    runner = session(export_onnx(model, tmp_path / "m.lengths.onnx", "lengths"))
    assert [i.name for i in runner.get_inputs()] == ["audio_signal", "length"]
    assert [o.name for o in runner.get_outputs()] == ["output", "encoded_lengths"]
    features, lengths = padded_features([160, 123, 45, 9])
    output, encoded_lengths = runner.run(None, {"audio_signal": features.numpy(), "length": lengths.numpy()})
    with torch.inference_mode():
        expected, expected_len, _ = model(processed_signal=features, processed_signal_length=lengths)
    assert np.array_equal(encoded_lengths, expected_len.numpy())
    assert np.abs(output - expected.numpy()).max() < TOLERANCE
    batch_text = model.decode(torch.from_numpy(output), torch.from_numpy(encoded_lengths))
    assert batch_text == model.decode(expected, expected_len)
    for row, length in enumerate(lengths.tolist()):
        alone = features[row : row + 1, :, :length].numpy()
        single, single_len = runner.run(None, {"audio_signal": alone, "length": np.array([length])})
        valid = int(single_len[0])
        assert valid == encoded_lengths[row]
        assert np.abs(single[0, :valid] - output[row, :valid]).max() < TOLERANCE
        assert model.decode(torch.from_numpy(single), torch.from_numpy(single_len)) == [batch_text[row]]


@pytest.mark.parametrize("mel_variant", ["current", "classic"])
def test_mel_in_graph_matches_pytorch(tmp_path: Path, mel_variant: str) -> None:
    model = tiny_model(variant=mel_variant)
    runner = session(export_onnx(model, tmp_path / "m.mel.onnx", "mel"))
    generator = torch.Generator().manual_seed(3)
    # 25,440 samples give exactly 160 (classic: 160 after padding to 16) frames: the pad-to-16 edge case.
    audio_lengths = [25440, 20000, 7001]
    audio = torch.randn(len(audio_lengths), max(audio_lengths), generator=generator) * 0.1
    lengths = torch.tensor(audio_lengths)
    for row, length in enumerate(audio_lengths):
        audio[row, length:] = 0.0
    output, encoded_lengths = runner.run(None, {"input_signal": audio.numpy(), "length": lengths.numpy()})
    with torch.inference_mode():
        expected, expected_len, _ = model(input_signal=audio, input_signal_length=lengths)
    assert output.shape == tuple(expected.shape)
    assert np.array_equal(encoded_lengths, expected_len.numpy())
    assert np.abs(output - expected.numpy()).max() < TOLERANCE
    assert model.decode(torch.from_numpy(output), torch.from_numpy(encoded_lengths)) == model.decode(expected, expected_len)


def test_cli_writes_all_variants_with_metadata(tmp_path: Path) -> None:
    model = tiny_model()
    model.save_to(tmp_path / "tiny.nemo")
    main([str(tmp_path / "tiny.nemo"), str(tmp_path / "out"), "--variant", "all"])
    onnx = pytest.importorskip("onnx")
    for variant in ("openvino", "lengths", "mel"):
        exported = onnx.load(str(tmp_path / "out" / f"tiny.{variant}.onnx"))
        metadata = {prop.key: prop.value for prop in exported.metadata_props}
        assert metadata["signature"] == variant
        assert json.loads(metadata["vocabulary"]) == model.vocabulary
        assert metadata["blank_id"] == str(model.blank_id)


def test_export_rejects_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", "tflite")


def test_openvino_runtime_reads_openvino_signature(tmp_path: Path) -> None:
    openvino = pytest.importorskip("openvino")
    model = tiny_model()
    path = export_onnx(model, tmp_path / "m.openvino.onnx", "openvino")
    # On CPUs with bf16 support OpenVINO defaults to bf16 inference; ask for fp32 to compare at 1e-4.
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for frames in (32, 75):
        features = torch.randn(1, 64, frames, generator=torch.Generator().manual_seed(frames))
        output = compiled([features.numpy()])[compiled.output("output")]
        with torch.inference_mode():
            expected, _, _ = model(processed_signal=features)
        assert output.shape == (1, (frames + 1) // 2, 29)
        assert np.abs(output - expected.numpy()).max() < TOLERANCE


def test_quartznet_15x5_exports(tmp_path: Path) -> None:
    """The full model (18.9 M parameters) exports and runs; its size is what makes this slower."""
    torch.manual_seed(0)
    model = CTCModel(model_config("quartznet_15x5")).eval()
    randomize_batchnorm(model)
    start = time.perf_counter()
    runner = session(export_onnx(model, tmp_path / "qn15x5.lengths.onnx", "lengths"))
    features, lengths = padded_features([200, 150])
    output, encoded_lengths = runner.run(None, {"audio_signal": features.numpy(), "length": lengths.numpy()})
    with torch.inference_mode():
        expected, expected_len, _ = model(processed_signal=features, processed_signal_length=lengths)
    assert np.array_equal(encoded_lengths, expected_len.numpy())
    assert np.abs(output - expected.numpy()).max() < TOLERANCE
    assert time.perf_counter() - start < 120
