""".nemo save/restore: NeMo's layout, exact round trips, and refusal of hostile archives."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import NEMO_CTC, randomize_batchnorm, tiny_classifier_config, tiny_ctc_config
from quartznet.common.checkpoint import UnsafeArchiveError, load_nemo, read_needed_members
from quartznet.models import ClassificationModel, CTCModel


def member_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_ctc_round_trip_is_exact_with_nemo_layout(tmp_path):
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config(se=True)).eval()
    randomize_batchnorm(model)
    path = model.save_to(tmp_path / "model.nemo")
    assert member_names(path) == [".", "./model_config.yaml", "./model_weights.ckpt"]
    restored = CTCModel.restore_from(path).eval()
    assert restored.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    audio = torch.randn(2, 12000)
    with torch.inference_mode():
        assert torch.equal(model(input_signal=audio)[0], restored(input_signal=audio)[0])


def test_saved_config_names_nemo_classes(tmp_path):
    model = CTCModel(tiny_ctc_config())
    config, _ = load_nemo(model.save_to(tmp_path / "model.nemo"))
    assert config["target"] == "nemo.collections.asr.models.ctc_models.EncDecCTCModel"
    assert config["preprocessor"]["_target_"] == "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"
    assert config["encoder"]["_target_"] == "nemo.collections.asr.modules.ConvASREncoder"
    assert config["decoder"]["_target_"] == "nemo.collections.asr.modules.ConvASRDecoder"
    assert config["mel_variant"] == "current"
    # NeMo passes every preprocessor key to its constructor: none of ours may appear there.
    assert "variant" not in config["preprocessor"]


def test_nemo_written_file_resaves_with_same_keys_and_members(tmp_path):
    model = CTCModel.restore_from(NEMO_CTC)
    copy = model.save_to(tmp_path / "copy.nemo")
    assert member_names(copy) == member_names(NEMO_CTC)
    original_config, original_weights = load_nemo(NEMO_CTC)
    copy_config, copy_weights = load_nemo(copy)
    assert list(copy_weights) == list(original_weights)
    assert all(torch.equal(copy_weights[key], original_weights[key]) for key in original_weights)
    assert copy_config["encoder"] == original_config["encoder"]
    assert copy_config["decoding"] == original_config["decoding"]  # sections we do not use survive


def test_gzip_nemo_is_read(tmp_path):
    gz = tmp_path / "old.nemo"
    gz.write_bytes(gzip.compress(NEMO_CTC.read_bytes()))
    assert CTCModel.restore_from(gz).num_weights == 87261


def test_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ClassificationModel(tiny_classifier_config(se=True)).eval()
    randomize_batchnorm(model)
    restored = ClassificationModel.restore_from(model.save_to(tmp_path / "kws.nemo")).eval()
    audio = torch.randn(2, 16000)
    with torch.inference_mode():
        assert torch.equal(model(input_signal=audio), restored(input_signal=audio))
    assert restored.labels == model.labels
    assert "featurizer.dct_mat" in "".join(restored.state_dict())


def test_wrong_model_class_is_a_clear_error(tmp_path):
    path = ClassificationModel(tiny_classifier_config()).save_to(tmp_path / "kws.nemo")
    with pytest.raises(ValueError, match="EncDecClassificationModel"):
        CTCModel.restore_from(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    config, weights = load_nemo(NEMO_CTC)
    del weights["decoder.decoder_layers.0.bias"]
    bad = tmp_path / "bad.nemo"
    from quartznet.common.checkpoint import save_nemo

    save_nemo(bad, config, weights)
    with pytest.raises(ValueError, match="decoder.decoder_layers.0.bias"):
        CTCModel.restore_from(bad)


# --- hostile archives -------------------------------------------------------------------------------


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, payload in members:
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return path


def file_member(name: str, payload: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), payload


def link_member(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def device_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([file_member("./model_config.yaml", b"a: 1"), file_member("../x")], "outside"),
        ([file_member("./model_config.yaml", b"a: 1"), file_member("./a/../../x")], "outside"),
        ([file_member("/tmp/quartznet-absolute-x")], "absolute"),
        ([link_member("./model_weights.ckpt", "/etc/passwd", tarfile.SYMTYPE)], "link"),
        ([link_member("./model_weights.ckpt", "/etc/passwd", tarfile.LNKTYPE)], "link"),
        ([device_member("./model_weights.ckpt")], "not a regular file"),
    ],
)
def test_hostile_archive_is_refused_and_writes_nothing(tmp_path, members, message):
    archive = write_tar(tmp_path / "evil.nemo", members)
    sandbox = tmp_path / "sandbox" / "inner"
    sandbox.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError, match=message):
        read_needed_members(archive, sandbox)
    with pytest.raises(UnsafeArchiveError, match=message):
        CTCModel.restore_from(archive)
    # Nothing outside the given folder; inside it at most the needed members read before the refusal.
    new = set(tmp_path.rglob("*")) - set(before)
    assert {p.name for p in new} <= {"model_config.yaml"} and all(p.parent == sandbox for p in new)
    assert not Path("/tmp/quartznet-absolute-x").exists()


class PlantsAFile:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_weights_with_a_pickled_callable_are_refused(tmp_path):
    sentinel = tmp_path / "code-ran"
    weights = io.BytesIO()
    torch.save({"encoder.weight": torch.zeros(1), "payload": PlantsAFile(str(sentinel))}, weights)
    config = (NEMO_CTC.parent / "qn_small_ctc.yaml").read_bytes()
    archive = write_tar(
        tmp_path / "evil.nemo",
        [file_member("./model_config.yaml", config), file_member("./model_weights.ckpt", weights.getvalue())],
    )
    with pytest.raises(ValueError, match="refused to load"):
        CTCModel.restore_from(archive)
    assert not sentinel.exists()


def test_not_a_tar_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="junk.nemo"):
        CTCModel.restore_from(junk)
    with pytest.raises(FileNotFoundError):
        CTCModel.restore_from(tmp_path / "missing.nemo")


def test_config_without_weights_member_is_a_clear_error(tmp_path):
    archive = write_tar(tmp_path / "half.nemo", [file_member("./model_config.yaml", yaml.safe_dump({"a": 1}).encode())])
    with pytest.raises(ValueError, match="model_weights.ckpt"):
        CTCModel.restore_from(archive)


# --- damaged files: one clear error naming the file, for every caller ---------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_nemo_is_a_clear_error(tmp_path, compress, keep):
    from quartznet.common.checkpoint import CheckpointError
    from quartznet.common.errors import UserError

    data = gzip.compress(NEMO_CTC.read_bytes()) if compress else NEMO_CTC.read_bytes()
    cut = tmp_path / "cut.nemo"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.nemo: (truncated or damaged|not a readable|no model_weights)") as raised:
        load_nemo(cut)
    assert isinstance(raised.value, UserError)


def test_lightning_checkpoint_without_model_sections_is_a_clear_error(tmp_path):
    from quartznet.common.checkpoint import CKPT_CONFIG_KEY, CheckpointError, load_checkpoint

    ckpt = tmp_path / "run.ckpt"
    torch.save({CKPT_CONFIG_KEY: {"encoder": {}, "preprocessor": {}}, "state_dict": {}}, ckpt)
    with pytest.raises(CheckpointError, match=r"run\.ckpt: .*no `decoder` section"):
        load_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match=r"gone\.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "gone.ckpt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
