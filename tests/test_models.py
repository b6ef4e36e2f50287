"""Blocks, encoder and models: parameter counts from configs, masking, padding invariance, config handling."""

from __future__ import annotations

import pytest
import torch
import yaml

import quartznet.network.blocks
from conftest import FIXTURES, model_config, randomize_batchnorm, tiny_classifier_config, tiny_ctc_config
from quartznet.network.blocks import JasperBlock, MaskedConv1d, SqueezeExcite, to_frames_layout, valid_mask
from quartznet.models import ClassificationModel, CTCModel

@pytest.mark.parametrize(
    ("name", "count"),
    # NeMo's published BxR sizes, then the demo models' sizes quoted in docs/benchmarks.md and the configs.
    [("quartznet_15x5", 18_924_381), ("quartznet_10x5", 12_818_781), ("quartznet_5x5", 6_713_181),
     ("quartznet_slim", 496_669), ("quartznet_small", 858_589), ("quartznet_wide", 1_318_813),
     ("quartznet_deep", 1_958_813)],
)
def test_quartznet_parameter_counts(name, count):
    assert CTCModel(model_config(name)).num_weights == count


@pytest.mark.parametrize(
    ("name", "data", "classes", "count"),
    [("matchboxnet_3x1x64", "speech_commands_v1", 30, 77_214), ("matchboxnet_3x1x64", "speech_commands_v2", 35, 77_859),
     ("matchboxnet_3x2x64", "speech_commands_v1", 30, 92_766), ("quartznet_3x1", "speech_commands_v1", 30, 77_214)],
)
def test_keyword_model_parameter_counts(name, data, classes, count):
    model = ClassificationModel(model_config(name, data=data))
    assert model.num_weights == count
    assert model.decoder.num_classes == len(model.labels) == classes


def test_strided_conv_lengths_are_ceil_half():
    conv = MaskedConv1d(4, 4, 33, stride=2, groups=4)
    lengths = torch.tensor([1, 2, 99, 100, 101])
    assert conv.output_lengths(lengths).tolist() == [1, 1, 50, 50, 51]
    same = MaskedConv1d(4, 4, 87, dilation=2)
    assert not same.changes_length and same.conv.padding == (86,)


def test_stride_with_dilation_is_refused():
    with pytest.raises(ValueError, match="stride"):
        MaskedConv1d(4, 4, 3, stride=2, dilation=2)


@pytest.mark.parametrize(("kernel", "dilation"), [(29, 2), (5, 3)])
def test_dilated_depthwise_conv_matches_conv1d_in_values_and_gradients(kernel, dilation):
    """On CPU the dilated depthwise conv runs as an undilated kernel with zeros between its taps."""
    torch.manual_seed(0)
    conv = MaskedConv1d(6, 6, kernel, dilation=dilation, groups=6)
    x = torch.randn(2, 6, 40)
    mask = valid_mask(torch.tensor([40, 40]), 40)
    out = conv(to_frames_layout(x), mask).squeeze(2)
    (weight_grad,) = torch.autograd.grad(out.square().sum(), conv.conv.weight)
    reference = torch.nn.functional.conv1d(x, conv.conv.weight, padding=conv.conv.padding, dilation=dilation, groups=6)
    (reference_grad,) = torch.autograd.grad(reference.square().sum(), conv.conv.weight)
    assert out.shape == reference.shape == (2, 6, 40)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight_grad, reference_grad, atol=1e-4, rtol=1e-5)
    assert quartznet.network.blocks.spread_taps(conv.conv.weight.unsqueeze(2), dilation).shape[-1] == (
        dilation * (kernel - 1) + 1
    )


def test_block_layout_matches_nemo_indices():
    block = JasperBlock(8, 16, repeat=3, kernel=5, residual=True, separable=True, se=True)
    kinds = [type(layer).__name__ for layer in block.mconv]
    sub_block = ["MaskedConv1d", "MaskedConv1d", "FrameBatchNorm", "ReLU", "Dropout"]
    assert kinds == sub_block * 2 + sub_block[:3] + ["SqueezeExcite"]
    keys = set(block.state_dict())
    assert {"mconv.0.conv.weight", "mconv.1.conv.weight", "mconv.2.running_var", "mconv.10.conv.weight",
            "mconv.13.fc.0.weight", "mconv.13.fc.2.weight", "res.0.0.conv.weight", "res.0.1.weight"} <= keys


def test_padding_frames_never_reach_valid_frames():
    """Garbage in padding frames changes nothing in valid frames (masking before every conv)."""
    torch.manual_seed(0)
    block = JasperBlock(8, 8, repeat=2, kernel=7, residual=True, separable=True, se=True).eval()
    randomize_batchnorm(block)
    x = torch.randn(2, 8, 40)
    lengths = torch.tensor([40, 25])
    noisy = x.clone()
    noisy[1, :, 25:] = 1e3 * torch.randn(8, 15)
    outputs = []
    for inputs in (x, noisy):
        frames = to_frames_layout(inputs)
        out, _, _ = block(frames, lengths, valid_mask(lengths, 40))
        outputs.append(out.squeeze(2))
    torch.testing.assert_close(outputs[0][1, :, :25], outputs[1][1, :, :25], atol=1e-5, rtol=0)


def test_masks_are_built_once_per_distinct_length(monkeypatch):
    calls = []
    original = quartznet.network.blocks.valid_mask

    def counting(lengths, max_len):
        calls.append(max_len)
        return original(lengths, max_len)

    monkeypatch.setattr(quartznet.network.blocks, "valid_mask", counting)
    monkeypatch.setattr("quartznet.network.encoder.valid_mask", counting)
    model = CTCModel(tiny_ctc_config()).eval()
    with torch.inference_mode():
        model(input_signal=torch.randn(2, 16000), input_signal_length=torch.tensor([16000, 9000]))
    assert len(calls) == 2  # the input frame rate, then once after the stride-2 C1 conv


def test_squeeze_excite_runs_in_fp32_under_autocast():
    se = SqueezeExcite(16, 8)
    x = to_frames_layout(torch.randn(2, 16, 30)).bfloat16()
    lengths = torch.tensor([30, 12])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = se(x, valid_mask(lengths, 30), lengths)
    assert out.dtype == torch.float32
    assert torch.all(out[1, :, :, 12:] == 0)


@pytest.mark.parametrize("variant", ["classic", "current"])
@pytest.mark.parametrize("se", [False, True])
def test_ctc_log_probs_alone_equal_in_padded_batch(variant, se):
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config(se=se, variant=variant)).eval()
    randomize_batchnorm(model)
    audio = torch.randn(3, 30000) * 0.1
    lengths = torch.tensor([30000, 21000, 7777])
    with torch.inference_mode():
        log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
        for i, length in enumerate(lengths.tolist()):
            alone, alone_len, _ = model(input_signal=audio[i : i + 1, :length])
            assert alone_len.item() == encoded_len[i].item()
            frames = alone_len.item()
            torch.testing.assert_close(log_probs[i, :frames], alone[0, :frames], atol=1e-5, rtol=0)


@pytest.mark.parametrize("se", [False, True])
def test_classifier_logits_alone_equal_in_padded_batch(se):
    torch.manual_seed(0)
    model = ClassificationModel(tiny_classifier_config(se=se)).eval()
    randomize_batchnorm(model)
    audio = torch.randn(3, 24000) * 0.1
    lengths = torch.tensor([24000, 16000, 9000])  # 1.5 s is cropped, 1 s and 0.56 s are padded
    with torch.inference_mode():
        logits = model(input_signal=audio, input_signal_length=lengths)
        for i, length in enumerate(lengths.tolist()):
            alone = model(input_signal=audio[i : i + 1, :length])
            torch.testing.assert_close(logits[i], alone[0], atol=1e-5, rtol=0)


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    model = CTCModel(tiny_ctc_config())
    blank = model.blank_id
    ids = torch.tensor([[8, 8, blank, 8, 9, 9, blank, blank, 0, 0, 9, 2], [1, blank, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    log_probs = torch.nn.functional.one_hot(ids, blank + 1).float().log()
    assert model.decode(log_probs, torch.tensor([12, 4])) == ["hhi ib", "aa"]


def test_nemo_yaml_builds_as_is_including_whole_file_and_nemo1_style():
    nemo_model_section = yaml.safe_load((FIXTURES / "qn_small_ctc.yaml").read_text())
    assert CTCModel(nemo_model_section).num_weights == 87261
    whole_file = {"name": "QuartzNet", "model": nemo_model_section, "trainer": {"devices": 1}}
    assert CTCModel(whole_file).num_weights == 87261
    nemo1 = dict(nemo_model_section)
    encoder = dict(nemo1["encoder"])
    nemo1["encoder"] = {"cls": encoder.pop("_target_"), "params": encoder}
    assert CTCModel(nemo1).num_weights == 87261


def test_decoder_feat_in_is_filled_from_encoder_and_checked():
    config = tiny_ctc_config()
    del config["decoder"]["feat_in"]
    assert CTCModel(config).cfg.decoder.feat_in == 32
    config["decoder"]["feat_in"] = 99
    with pytest.raises(ValueError, match="feat_in=99"):
        CTCModel(config)


def test_unknown_module_target_is_a_clear_error():
    config = tiny_ctc_config()
    config["encoder"]["_target_"] = "nemo.collections.asr.modules.ConformerEncoder"
    with pytest.raises(ValueError, match="ConformerEncoder"):
        CTCModel(config)


def test_ctc_loss_is_batch_mean_of_per_utterance_nll_and_finite_when_infeasible():
    from quartznet.network.heads import ctc_loss

    torch.manual_seed(0)
    log_probs = torch.randn(3, 20, 29).log_softmax(-1)
    targets = torch.randint(0, 28, (3, 25))
    frames, target_len = torch.tensor([20, 18, 10]), torch.tensor([5, 8, 25])  # the last cannot fit
    loss = ctc_loss(log_probs, frames, targets, target_len, blank_id=28)
    by_hand = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1)[:, :2], targets[:2], frames[:2], target_len[:2], blank=28, reduction="sum"
    )
    torch.testing.assert_close(loss, by_hand / 3)  # infeasible utterance counts as 0, divisor stays 3


@pytest.mark.parametrize("se", [False, True])
def test_conv1d_layout_gives_the_channels_last_results(se):
    from quartznet.network.blocks import set_conv_layout

    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config(se=se)).eval()
    randomize_batchnorm(model)
    audio = torch.randn(3, 12000) * 0.1
    lengths = torch.tensor([12000, 9000, 4000])
    with torch.inference_mode():
        reference, reference_len, _ = model(input_signal=audio, input_signal_length=lengths)
        set_conv_layout(model, "conv1d")
        log_probs, encoded_len, _ = model(input_signal=audio, input_signal_length=lengths)
    assert torch.equal(encoded_len, reference_len)
    for row, length in enumerate(reference_len.tolist()):
        torch.testing.assert_close(log_probs[row, :length], reference[row, :length], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="conv layout"):
        set_conv_layout(model, "conv3d")
