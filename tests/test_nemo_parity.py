"""Our restore_from + forward against outputs NeMo 3.0 itself produced (tests/fixtures/NEMO_FIXTURES.md)."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import FIXTURES, NEMO_CTC
from quartznet.models import CTCModel

ATOL = 1e-4  # the bound for features, encoder output and log-probs


@pytest.fixture(scope="module")
def nemo_model() -> CTCModel:
    return CTCModel.restore_from(NEMO_CTC).eval()


def test_restores_nemo_config_and_variant(nemo_model, nemo_io):
    assert nemo_model.num_weights == nemo_io["meta"]["num_params"] == 87261
    assert nemo_model.vocabulary == nemo_io["meta"]["labels"]
    assert nemo_model.blank_id == nemo_io["meta"]["blank_id"] == 28
    assert nemo_model.cfg.mel_variant == "current"  # nemo_version 3.0.0 in its config


def test_state_dict_keys_and_shapes_are_nemos(nemo_model):
    expected = {}
    for line in (FIXTURES / "qn_small_ctc_keys.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        name, shape, _ = line.split("\t")
        expected[name] = tuple(int(n) for n in shape.strip("()").split(",") if n.strip())
    ours = {name: tuple(tensor.shape) for name, tensor in nemo_model.state_dict().items()}
    assert ours == expected


def test_features_match(nemo_model, nemo_io):
    with torch.inference_mode():
        features, lengths = nemo_model.preprocessor(input_signal=nemo_io["audio"], length=nemo_io["audio_len"])
    assert torch.equal(lengths, nemo_io["features_len"])
    assert features.shape == nemo_io["features"].shape
    torch.testing.assert_close(features, nemo_io["features"], atol=ATOL, rtol=0)


def test_filterbank_and_window_from_torchaudio_match_nemos(nemo_io):
    fresh = CTCModel(yaml.safe_load((FIXTURES / "qn_small_ctc.yaml").read_text()))
    torch.testing.assert_close(fresh.preprocessor.featurizer.fb, nemo_io["mel_fb"], atol=1e-6, rtol=0)
    assert torch.equal(fresh.preprocessor.featurizer.window, nemo_io["window"])


@pytest.mark.parametrize("prefix", ["", "bnrand_"])
def test_encoder_and_log_probs_match_on_nemo_features(nemo_model, nemo_io, prefix):
    nemo_model.load_state_dict(nemo_io[f"{prefix}state_dict"] if prefix else nemo_io["state_dict"])
    with torch.inference_mode():
        encoded, encoded_len = nemo_model.encoder(audio_signal=nemo_io["features"], length=nemo_io["features_len"])
        log_probs, _, _ = nemo_model(
            processed_signal=nemo_io["features"], processed_signal_length=nemo_io["features_len"]
        )
    assert torch.equal(encoded_len, nemo_io["encoder_len"])
    # NeMo leaves frames past each length unmasked; we reproduce those too.
    torch.testing.assert_close(encoded, nemo_io[f"{prefix}encoder_out"], atol=ATOL, rtol=0)
    torch.testing.assert_close(log_probs, nemo_io[f"{prefix}log_probs"], atol=ATOL, rtol=0)
    assert nemo_model.decode(log_probs, encoded_len) == nemo_io[f"{prefix}texts"]
    nemo_model.load_state_dict(nemo_io["state_dict"])


def test_end_to_end_from_audio(nemo_model, nemo_io):
    with torch.inference_mode():
        log_probs, encoded_len, greedy = nemo_model(
            input_signal=nemo_io["audio"], input_signal_length=nemo_io["audio_len"]
        )
    assert torch.equal(encoded_len, nemo_io["encoder_len"])
    for i, length in enumerate(encoded_len.tolist()):
        torch.testing.assert_close(log_probs[i, :length], nemo_io["log_probs"][i, :length], atol=ATOL, rtol=0)
        torch.testing.assert_close(log_probs[i, :length], nemo_io["single_log_probs"][i][:length], atol=ATOL, rtol=0)
        assert torch.equal(greedy[i, :length], nemo_io["greedy_ids"][i, :length])
    assert nemo_model.decode(log_probs, encoded_len) == nemo_io["texts"]
