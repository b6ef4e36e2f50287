"""bench/bench_epoch_vs_nemo.py: the configs it hands to both frameworks (the epochs themselves need NeMo)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_epoch_vs_nemo.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_epoch_vs_nemo", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("speed", ["off", "device", "worker"])
def test_quartznet_side_is_one_bare_epoch_of_the_demo(bench, speed, tmp_path):
    cfg = bench.compose_quartznet(bench.quartznet_overrides("/data/train.json", speed, str(tmp_path)))
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_val_batches == 0
    assert cfg.data.batch_size == bench.BATCH_SIZE and cfg.data.num_workers == 1
    assert not cfg.test_after_training and cfg.save_nemo is None
    checkpoints = [name for name, callback in cfg.callbacks.items() if callback and "Checkpoint" in callback._target_]
    assert not checkpoints, "checkpoint writing would be timed"
    worker_speed = (cfg.data.augment or {}).get("speed_prob", 0)
    device_speed = (cfg.model.get("waveform_augment") or {}).get("speed_prob", 0)
    assert (worker_speed, device_speed) == {"off": (0, 0), "device": (0, 1.0), "worker": (1.0, 0)}[speed]


def test_bucket_count_reaches_the_data_config_only_when_given(bench, tmp_path):
    default = bench.compose_quartznet(bench.quartznet_overrides("/data/train.json", "off", str(tmp_path)))
    chosen = bench.compose_quartznet(bench.quartznet_overrides("/data/train.json", "off", str(tmp_path), 32))
    assert chosen.data.num_buckets == 32
    assert default.data.num_buckets != 32, "the default must stay the data config's own"


@pytest.mark.parametrize("speed", [False, True])
def test_nemo_side_gets_the_same_network_in_nemo_terms(bench, speed):
    config = bench.nemo_model_config("/data/train.json", speed)
    assert config["encoder"]["_target_"] == "nemo.collections.asr.modules.ConvASREncoder"
    assert config["preprocessor"]["_target_"] == "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor"
    assert [block["filters"] for block in config["encoder"]["jasper"]] == [256] * 5 + [512]
    assert config["optim"]["name"] == "novograd"
    train_ds = config["train_ds"]
    assert train_ds["manifest_filepath"] == "/data/train.json"
    assert train_ds["batch_size"] == bench.BATCH_SIZE and train_ds["labels"] == config["labels"]
    if speed:
        rates = train_ds["augmentor"]["speed"]
        assert (rates["min_speed_rate"], rates["max_speed_rate"]) == bench.SPEED_RANGE
    else:
        assert "augmentor" not in train_ds
