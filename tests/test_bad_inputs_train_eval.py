"""train.py and evaluate.py under bad input: one `error: ...` line naming the key or file, exit 1, no
traceback, nothing good overwritten; data they cannot use is reported, never silently scored or trained on.

The Hydra mains run in this process (`sys.argv` set as the command line would; `SystemExit` is the exit
status): importing torch and Lightning takes 10-40 s per process on a busy 2-core machine, which ~30
subprocesses cannot afford. One test (marked slow) runs both scripts as real subprocesses, in
parallel, to check what a shell sees.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile
import torch

from conftest import ROOT, tiny_ctc_config
from quartznet.models import CTCModel

RATE = 16000


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    audio = root / "audio"
    audio.mkdir()
    good = []
    for i, text in enumerate(["a b", "ab ba", "abba", "b a"]):
        soundfile.write(audio / f"good{i}.wav", tone(0.5, seed=i), RATE)
        good.append({"audio_filepath": str(audio / f"good{i}.wav"), "duration": 0.5, "text": text})
    bad = []
    for i in range(4):
        (audio / f"garbage{i}.wav").write_bytes(np.random.default_rng(i).bytes(3000))
        bad.append({"audio_filepath": str(audio / f"garbage{i}.wav"), "duration": 0.5, "text": "a b"})
    soundfile.write(audio / "long.wav", tone(1.5, seed=9), RATE)
    paths = {
        "root": root,
        "good": manifest(root / "good.json", good),
        "empty": manifest(root / "empty.json", []),
        "corrupt": manifest(root / "corrupt.json", bad),
        "mostly_bad": manifest(root / "mostly_bad.json", good[:1] + bad[:3]),
        "one_bad": manifest(root / "one_bad.json", good[:3] + bad[:1]),
        "unknown_chars": manifest(root / "unknown_chars.json", [dict(row, text="123 ?!") for row in good]),
        # long.wav is 1.5 s but its row says 0.5 s (no offset); good0 appears twice.
        "mismatch": manifest(root / "mismatch.json", [
            {"audio_filepath": str(audio / "long.wav"), "duration": 0.5, "text": "a"}, good[0], good[0]]),
    }
    torch.manual_seed(0)
    model = CTCModel(tiny_ctc_config())
    paths["model"] = model.save_to(root / "model.nemo")
    with torch.no_grad():
        model.decoder.decoder_layers[0].bias[:2] = torch.tensor([3e38, -3e38])  # finite weights, -inf log-probs
    paths["nan_model"] = model.save_to(root / "nan.nemo")
    return paths


def run_main(script: str, overrides: list[str], capfd) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python <script>.py <overrides>`, run in this process."""
    argv = sys.argv
    sys.argv = [str(ROOT / f"{script}.py"), *overrides]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")  # as `python <script>.py`: Hydra finds conf/ beside it
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capfd.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *names: str) -> None:
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = [row for row in err.splitlines() if row.startswith("error: ")]
    assert len(line) == 1, err[-3000:]
    for name in names:
        assert name in line[0], (name, line[0])


# --- evaluate.py ----------------------------------------------------------------------------------


def evaluate_args(data, out: Path, **overrides) -> list[str]:
    args = {"checkpoint": data["model"], "manifest": data["good"], "output_dir": out, "num_workers": 0,
            "batch_size": 2} | overrides
    return [f"{key}={value}" for key, value in args.items() if value is not ...]


@pytest.mark.parametrize("overrides, names", [
    ({"batch_size": "abc"}, ["batch_size='abc'"]),
    ({"batch_size": 0}, ["batch_size=0"]),
    ({"num_workers": -1}, ["num_workers=-1"]),
    ({"max_skipped_fraction": 2}, ["max_skipped_fraction=2"]),
    ({"device": "tpu"}, ["device='tpu'"]),
    ({"decoding.strategy": "best"}, ["decoding.strategy='best'"]),
    ({"checkpoint": "missing.nemo"}, ["checkpoint=missing.nemo", "no such file"]),
    ({"manifest": "nowhere/missing.json"}, ["missing.json", "does not exist"]),
    ({"manifest": "EMPTY"}, ["empty.json", "empty"]),
    ({"split": "test-clean"}, ["exactly one of manifest"]),
    ({"manifest": ...}, ["exactly one of manifest"]),
    ({"manifest": ..., "split": "train-clean-100"}, ["split='train-clean-100'"]),
    ({"predictions": "GOOD"}, ["good.json: is an input of this command"]),
    ({"predictions": "MODEL"}, ["model.nemo: is an input of this command"]),
    ({"predictions": "AUDIO"}, ["good0.wav: is an input of this command"]),
    ({"predictions": "RESULTS"}, ["results.json", "are the same file"]),
])
def test_evaluate_rejects_bad_config_before_loading_the_model(data, tmp_path, capfd, overrides, names):
    stand_ins = {"EMPTY": data["empty"], "GOOD": data["good"], "MODEL": data["model"],
                 "AUDIO": data["root"] / "audio" / "good0.wav", "RESULTS": tmp_path / "eval" / "results.json"}
    overrides = {key: stand_ins.get(value, value) if isinstance(value, str) else value for key, value in overrides.items()}
    inputs = {path: path.read_bytes() for path in (data["good"], data["model"], stand_ins["AUDIO"])}
    code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", **overrides), capfd)
    assert_user_error(code, err, *names)
    assert not (tmp_path / "eval" / "results.json").exists()
    assert all(path.read_bytes() == content for path, content in inputs.items())  # no input touched


def test_unwritable_predictions_fail_before_any_work(data, tmp_path, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", predictions=blocker / "p.json"), capfd)
    assert_user_error(code, err, str(blocker / "p.json"), "cannot write")
    assert "evaluating" not in err and "WER" not in out


def test_evaluate_scores_and_streams_predictions(data, tmp_path, capfd):
    code, out, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval"), capfd)
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.json").read_text().splitlines()]
    assert [Path(row["audio_filepath"]).name for row in rows] == [f"good{i}.wav" for i in range(4)]  # manifest order
    assert not list((tmp_path / "eval").glob("*.partial")) and not list((tmp_path / "eval").glob(".*.tmp"))
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["utterances"] == 4 and results["skipped"] == {"count": 0, "by_reason": {}}
    assert (tmp_path / "eval" / "evaluation_summary.png").stat().st_size > 1000
    config = (tmp_path / "eval" / "evaluate_config.yaml").read_text()  # how the results were made, in the folder
    assert config.startswith("# evaluate.py checkpoint=") and f"\ncheckpoint: {data['model']}\n" in config


def test_nothing_scored_is_an_error_and_keeps_the_old_results(data, tmp_path, capfd):
    out_dir = tmp_path / "eval"
    out_dir.mkdir()
    (out_dir / "predictions.json").write_text("old predictions\n")
    code, out, err = run_main("evaluate", evaluate_args(data, out_dir, manifest=data["corrupt"], max_skipped_fraction=1.0), capfd)
    assert_user_error(code, err, "no utterance could be scored", "4 items skipped", "unreadable audio")
    assert "WER" not in out and not (out_dir / "results.json").exists()
    assert (out_dir / "predictions.json").read_text() == "old predictions\n"


def test_too_many_skipped_stops_with_a_summary(data, tmp_path, capfd):
    code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", manifest=data["mostly_bad"]), capfd)
    assert_user_error(code, err, "max_skipped_fraction=0.5", "unreadable audio", "garbage")
    assert not (tmp_path / "eval" / "results.json").exists()


def test_a_few_skipped_are_reported_and_counted_in_results(data, tmp_path, capfd):
    code, out, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", manifest=data["one_bad"]), capfd)
    assert code == 0, err[-3000:]
    assert "(+1 skipped)" in out and "1 x unreadable audio" in out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["utterances"] == 3
    assert results["skipped"] == {"count": 1, "by_reason": {"unreadable audio": 1}}


def test_duration_mismatch_and_duplicates_are_warned_and_the_whole_file_scored(data, tmp_path, capfd):
    code, out, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", manifest=data["mismatch"]), capfd)
    assert code == 0, err[-3000:]
    logged = out + err  # Hydra's console log handler writes to stdout
    assert "long.wav: manifest 0.50 s, file 1.50 s" in logged
    assert "1 rows repeat an earlier row" in logged and "kept and each is used" in logged
    assert "1 rows repeat an earlier row" in (tmp_path / "eval" / "evaluate.log").read_text()  # kept with the results
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.json").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["duration"] == pytest.approx(1.5)  # duration is a hint: whole file
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["manifest_warnings"] == {"duration_mismatches": 1, "duplicate_rows": 1}


def test_non_finite_model_output_names_the_first_utterance(data, tmp_path, capfd):
    code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", checkpoint=data["nan_model"]), capfd)
    assert_user_error(code, err, "good", ".wav", "not finite")
    assert not (tmp_path / "eval" / "results.json").exists()


def test_ctrl_c_keeps_finished_predictions_in_partial(data, tmp_path, capfd, monkeypatch):
    from quartznet.common.outputs import JsonLinesOutput

    out_dir = tmp_path / "eval"
    out_dir.mkdir()
    (out_dir / "predictions.json").write_text("old predictions\n")
    write = JsonLinesOutput.write

    def write_then_interrupt(self, row):  # Ctrl-C arrives after the second finished row
        write(self, row)
        if self.rows == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(JsonLinesOutput, "write", write_then_interrupt)
    code, _, err = run_main("evaluate", evaluate_args(data, out_dir, batch_size=1), capfd)
    assert code == 130 and "Traceback" not in err
    assert "predictions.json.partial" in err
    assert len((out_dir / "predictions.json.partial").read_text().splitlines()) == 2
    assert (out_dir / "predictions.json").read_text() == "old predictions\n"
    assert not (out_dir / "results.json").exists()


# --- train.py -------------------------------------------------------------------------------------


def train_args(data, run_dir: Path, train=None, validation=None, **overrides) -> list[str]:
    args = {
        "paths.run_dir": run_dir, "data.train_manifest": train or data["good"],
        "data.validation_manifests": f"[{validation or data['good']}]", "data.test_manifests": "[]",
        "data.num_workers": 0, "data.batch_size": 2, "data.num_buckets": 1, "trainer.max_epochs": 1,
        "+trainer.limit_train_batches": 2, "trainer.log_every_n_steps": 1, "callbacks.rich_progress_bar": "null",
        "logger.tensorboard": "null", "plots": "false",
    } | overrides
    return [f"{key}={value}" for key, value in args.items()]


@pytest.mark.parametrize("overrides, names", [
    ({"data.batch_size": "abc"}, ["data.batch_size='abc'"]),
    ({"data.batch_size": 0}, ["data.batch_size=0"]),
    ({"trainer.max_epochs": "abc"}, ["trainer.max_epochs='abc'"]),
    ({"data.num_workers": -2}, ["data.num_workers=-2"]),
    ({"max_skipped_fraction": -0.1}, ["max_skipped_fraction=-0.1"]),
    ({"data.train_manifest": "nowhere/train.json"}, ["data.train_manifest", "train.json", "does not exist"]),
    ({"data.train_manifest": "EMPTY"}, ["data.train_manifest", "empty.json", "empty"]),
    ({"data.validation_manifests": "[]"}, ["data.validation_manifests is empty", "val_wer"]),
    ({"resume": "nowhere/last.ckpt"}, ["resume=nowhere/last.ckpt"]),
    ({"resume": "MODEL"}, ["model.nemo: is a .nemo model", "init_from.path="]),
    ({"resume": "GOOD"}, ["good.json: not a Lightning checkpoint"]),
    ({"trainer.max_epochs": 0}, ["trainer.max_epochs=0 trains nothing"]),
    ({"trainer.max_steps": 0}, ["trainer.max_steps=0 trains nothing"]),
    ({"data.sample_rate": 8000}, ["data.sample_rate=8000", "16000 Hz", "model.preprocessor.sample_rate"]),
    ({"callbacks.model_checkpoint.monitor": "val_wre"}, ["callbacks.model_checkpoint.monitor='val_wre'", "'val_wer'"]),
    ({"+change_vocabulary": "[ab,c]"}, ["change_vocabulary", "single characters", "'ab'"]),
    ({"save_nemo": "GOOD"}, ["good.json: is an input of this command"]),
    ({"save_nemo": "RUN/config.yaml"}, ["save_nemo", "config.yaml", "are the same file"]),
    ({"+init_from.path": "RUN/checkpoints/last.ckpt"}, ["init_from.path=", "where this run writes its checkpoints"]),
    ({"data.task": "speaker_id"}, ["data.task", "speaker_id"]),
    ({"data.task": "classification"}, ["data.task=classification", "CTCModel", "for the task 'asr'"]),
    ({"trainer.accelerator": "banana"}, ["trainer:", "accelerator='banana'"]),
    ({"callbacks.model_checkpoint.monitor": "wer"}, ["callbacks.model_checkpoint.monitor='wer'", "'val_wer'"]),
    ({"logger.csv._target_": "pytorch_lightning.loggers.NoSuchLogger"}, ["logger.csv:", "NoSuchLogger"]),
])
def test_train_rejects_bad_config_before_training(data, tmp_path, capfd, overrides, names):
    run_dir = tmp_path / "run"
    if "+init_from.path" in overrides:  # a checkpoint in the folder this run writes its own into
        (run_dir / "checkpoints").mkdir(parents=True)
        CTCModel(tiny_ctc_config()).save_to(run_dir / "checkpoints" / "last.ckpt")
    stand_ins = {"EMPTY": data["empty"], "MODEL": data["model"], "GOOD": data["good"]}
    overrides = {key: stand_ins.get(value, str(value).replace("RUN", str(run_dir))) for key, value in overrides.items()}
    code, _, err = run_main("train", train_args(data, run_dir, **overrides), capfd)
    assert_user_error(code, err, *names)
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "csv").exists()
    planted = ["last.ckpt"] if "+init_from.path" in overrides else []
    assert [path.name for path in (run_dir / "checkpoints").glob("*")] == planted


@pytest.mark.parametrize("manifest, names", [
    ("corrupt", ["no usable training item", "unreadable audio"]),
    ("unknown_chars", ["no usable training item", "transcripts", "empty"]),
    ("mostly_bad", ["max_skipped_fraction=0.5", "unreadable audio"]),
])
def test_training_on_unusable_data_stops_without_writing_a_model(data, tmp_path, capfd, manifest, names):
    code, _, err = run_main("train", train_args(data, tmp_path / "run", train=data[manifest],
                                                 **{"+trainer.limit_train_batches": 4}), capfd)
    assert_user_error(code, err, *names)
    assert not (tmp_path / "run" / "model.nemo").exists() and not (tmp_path / "run" / "results.json").exists()
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_unusable_validation_is_a_clear_error_not_lightnings(data, tmp_path, capfd):
    code, _, err = run_main("train", train_args(data, tmp_path / "run", validation=data["corrupt"]), capfd)
    assert_user_error(code, err, "no `val_wer`", "data.validation_manifests", "unreadable audio")
    assert "MisconfigurationException" not in err
    assert not (tmp_path / "run" / "model.nemo").exists()


def test_resumed_run_appends_to_metrics_csv(data, tmp_path, capfd):
    run_dir = tmp_path / "run"
    code, _, err = run_main("train", train_args(data, run_dir), capfd)
    assert code == 0, err[-3000:]
    metrics = run_dir / "csv" / "metrics.csv"
    first = metrics.read_text().splitlines()
    assert len(first) > 1 and json.loads((run_dir / "results.json").read_text()) == {}
    assert (run_dir / "config.yaml").read_text().startswith("# train.py paths.run_dir=")  # how it was started
    assert (run_dir / "model.nemo").is_file()
    code, _, err = run_main("train", train_args(data, run_dir, resume="last", **{"trainer.max_epochs": 2}), capfd)
    assert code == 0, err[-3000:]
    second = metrics.read_text().splitlines()
    header, rows = second[0].split(","), [dict(zip(second[0].split(","), line.split(","))) for line in second[1:]]
    assert {row["epoch"] for row in rows} == {"0", "1"}, second  # the first run's rows are still there
    assert len(rows) > len(first) - 1 and "val_wer" in header


class InterruptAtStep(pl.Callback):
    """Ctrl-C during training, after `step` optimizer steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


def test_ctrl_c_in_training_says_where_and_how_to_resume(data, tmp_path, capfd):
    run_dir = tmp_path / "run"
    # Epoch 0 (2 steps) ends with validation and last.ckpt; Ctrl-C comes in epoch 1.
    overrides = train_args(data, run_dir, **{"trainer.max_epochs": 3, "+callbacks.interrupt._target_":
                                             f"{__name__}.InterruptAtStep", "+callbacks.interrupt.step": 3})
    code, _, err = run_main("train", overrides, capfd)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err
    assert "interrupted at epoch 1, step 3" in err and "resume=last" in err
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "model.nemo").exists()


def test_last_checkpoint_follows_every_epoch_even_when_no_top_k_checkpoint_is_saved(data, tmp_path, capfd):
    """Lightning refreshes a monitored callback's last.ckpt only with a top-k save; ours must not wait."""
    run_dir = tmp_path / "run"
    overrides = train_args(data, run_dir, **{"trainer.max_epochs": 3, "callbacks.model_checkpoint.save_top_k": 0,
                                             "+callbacks.interrupt._target_": f"{__name__}.InterruptAtStep",
                                             "+callbacks.interrupt.step": 5})
    code, _, err = run_main("train", overrides, capfd)
    assert code == 130, err[-3000:]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert (last["epoch"], last["global_step"]) == (1, 4)  # the end of epoch 1 (2 steps an epoch)
    assert [path.name for path in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]


# --- as a shell sees them ---------------------------------------------------------------------------


@pytest.mark.slow  # two fresh interpreters importing torch + Lightning: 10-100 s on a busy 2-core machine
def test_scripts_as_subprocesses_print_one_line_and_exit_1(data, tmp_path):
    """The real processes, both at once: exit status 1, one `error:` line, no traceback."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    commands = [
        [sys.executable, "evaluate.py", *evaluate_args(data, tmp_path / "eval", manifest=data["empty"])],
        [sys.executable, "train.py", *train_args(data, tmp_path / "run", **{"data.batch_size": "abc"})],
    ]
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    results = [process.communicate(timeout=240) for process in processes]
    for process, (_, err), name in zip(processes, results, ["empty.json", "data.batch_size"]):
        assert process.returncode == 1, err[-3000:]
        assert "Traceback" not in err and err.count("error: ") == 1 and name in err, err[-3000:]


# --- third pass: clips too short, manifest values, empty references, run folders ------------------------


def clip(folder: Path, name: str, samples: int, seed: int = 0) -> str:
    path = folder / name
    soundfile.write(path, tone(samples / RATE, seed=seed)[:samples], RATE)
    return str(path)


@pytest.fixture
def short_clips(data, tmp_path) -> dict[str, Path]:
    """Manifests mixing the good rows with clips shorter than one encoder frame (6 ms), clips too short for
    their transcript (20 ms of "a b"), and 1 s under a 20,000-character transcript."""
    good = [json.loads(line) for line in data["good"].read_text().splitlines()]
    tiny = {"audio_filepath": clip(tmp_path, "tiny.wav", 100), "duration": 100 / RATE, "text": "a b"}
    too_short = [{"audio_filepath": clip(tmp_path, f"short{i}.wav", 320, seed=i), "duration": 0.02, "text": "a b"}
                 for i in range(4)]
    long_text = {"audio_filepath": clip(tmp_path, "second.wav", RATE), "duration": 1.0, "text": "ab " * 6667}
    return {
        "with_tiny": manifest(tmp_path / "with_tiny.json", good[:2] + [tiny] + good[2:]),
        "too_short": manifest(tmp_path / "too_short.json", too_short),
        "long_text": manifest(tmp_path / "long_text.json", good + [long_text]),
    }


def test_evaluate_scores_a_clip_shorter_than_one_frame(data, short_clips, tmp_path, capfd):
    code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", manifest=short_clips["with_tiny"]), capfd)
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.json").read_text().splitlines()]
    assert len(rows) == 5 and rows[2]["pred_text"] == "" and rows[2]["wer"] == 1.0  # scored: all words deleted
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["skipped"]["count"] == 0


def test_a_clip_shorter_than_one_frame_in_validation_does_not_stop_training(data, short_clips, tmp_path, capfd):
    code, _, err = run_main("train", train_args(data, tmp_path / "run", validation=short_clips["with_tiny"]), capfd)
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / "model.nemo").is_file() and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_training_only_on_clips_too_short_for_their_transcripts_stops(data, short_clips, tmp_path, capfd):
    code, _, err = run_main("train", train_args(data, tmp_path / "run", train=short_clips["too_short"]), capfd)
    assert_user_error(code, err, "no usable training item", "transcript longer than the audio allows")
    assert not (tmp_path / "run" / "model.nemo").exists() and not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_a_transcript_longer_than_its_audio_allows_is_skipped_and_reported(data, short_clips, tmp_path, capfd):
    run_dir = tmp_path / "run"
    code, out, err = run_main("train", train_args(data, run_dir, train=short_clips["long_text"],
                                                   **{"+trainer.limit_train_batches": 3}), capfd)
    assert code == 0, err[-3000:]
    assert "1 items skipped" in out + err and "second.wav: transcript longer than the audio allows" in out + err
    rows = [line.split(",") for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    skipped = [row[rows[0].index("train_skipped")] for row in rows[1:] if row[rows[0].index("train_skipped")]]
    assert skipped == ["1.0"]
    assert "1 items skipped" in (run_dir / "train.log").read_text()  # the run's own log file


@pytest.mark.parametrize("rows, names", [
    ([{"duration": float("nan")}], ["bad.json:1", "'duration'", "NaN"]),
    ([{"duration": float("inf")}], ["bad.json:1", "'duration'", "Infinity"]),
    ([{"audio_filepath": None}], ["bad.json:1", "'audio_filepath'", "null"]),
    ([{"text": 5}], ["bad.json:1", "'text'", "5"]),
])
def test_manifest_values_are_named_by_line_and_field_in_training_and_evaluation(data, tmp_path, capfd, rows, names):
    good = json.loads(data["good"].read_text().splitlines()[0])
    bad = manifest(tmp_path / "bad.json", [{**good, **change} for change in rows])
    for script, args in (("train", train_args(data, tmp_path / "run", train=bad)),
                         ("evaluate", evaluate_args(data, tmp_path / "eval", manifest=bad))):
        code, _, err = run_main(script, args, capfd)
        assert_user_error(code, err, *names)
        assert "unreadable audio" not in err


def test_manifests_with_a_byte_order_mark_train_and_evaluate(data, tmp_path, capfd):
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + data["good"].read_bytes())
    code, _, err = run_main("train", train_args(data, tmp_path / "run", train=bom, validation=bom), capfd)
    assert code == 0, err[-3000:]
    code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", manifest=bom), capfd)
    assert code == 0, err[-3000:]


def test_a_latin1_manifest_names_the_file_and_line(data, tmp_path, capfd):
    good = json.loads(data["good"].read_text().splitlines()[0])
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes((json.dumps(good) + "\n" + json.dumps({**good, "text": "café"}, ensure_ascii=False) + "\n")
                       .encode("latin-1"))
    code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / "eval", manifest=latin1), capfd)
    assert_user_error(code, err, "latin1.json:2", "not UTF-8")


def test_rows_with_an_empty_reference_are_scored_not_skipped(data, tmp_path, capfd):
    good = [json.loads(line) for line in data["good"].read_text().splitlines()]
    with_empty = manifest(tmp_path / "empty_ref.json", good + [{**good[0], "text": ""}])
    scored = {}
    for name, rows in (("without", data["good"]), ("with", with_empty)):
        code, _, err = run_main("evaluate", evaluate_args(data, tmp_path / name, manifest=rows), capfd)
        assert code == 0, err[-3000:]
        scored[name] = json.loads((tmp_path / name / "results.json").read_text())
    empty = [json.loads(line) for line in (tmp_path / "with" / "predictions.json").read_text().splitlines()][-1]
    assert empty["text"] == "" and empty["pred_text"]  # the untrained model says something there
    assert scored["with"]["utterances"] == 5 and scored["with"]["skipped"]["count"] == 0
    # Every word it says there is an insertion; the reference word count (the denominator) is unchanged.
    assert scored["with"]["insertions"] - scored["without"]["insertions"] == len(empty["pred_text"].split())
    assert scored["with"]["reference_words"] == scored["without"]["reference_words"]
    assert scored["with"]["wer"] > scored["without"]["wer"]


def test_a_second_run_into_a_busy_run_folder_is_refused(data, tmp_path, capfd):
    from quartznet.common.runs import RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from quartznet.common.runs import RunLock\n"
                               f"with RunLock({str(run_dir)!r}, 'paths.run_dir'):\n print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_main("train", train_args(data, run_dir), capfd)
        assert_user_error(code, err, f"paths.run_dir={run_dir}", "another run is writing into this folder",
                          f"pid {holder.pid}")
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run_dir, "paths.run_dir"):  # the killed holder's lock went with it
        pass


@pytest.mark.parametrize("environment, label", [
    ({}, ""), ({"RANK": "0", "LOCAL_RANK": "0"}, ""), ({"RANK": "9", "LOCAL_RANK": "1"}, "rank9.local1"),  # torchrun
    ({"SLURM_PROCID": "2"}, "task2"), ({"RANK": "8", "SLURM_PROCID": "0"}, "rank8.task0"),  # srun, torchrun in srun
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, "node1.local0"), ({"LOCAL_RANK": "1"}, "local1"),  # Lightning's
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, "task0.local1"),  # Lightning's launcher inside `srun --pty bash`
])
def test_only_the_launchs_first_process_takes_the_run_lock(environment, label, tmp_path, monkeypatch):
    from quartznet.common.runs import RANK_VARIABLES, RunLock, launch_label, log_to_file

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert launch_label() == label
    with RunLock(tmp_path, "paths.run_dir"), log_to_file(tmp_path, "train") as log_file:
        assert (tmp_path / ".lock").exists() == (label == "")
        assert log_file.name == (f"train.{label}.log" if label else "train.log")


class FullDisk(pl.Callback):
    """The disk fills while Lightning or a logger writes (their OSErrors name no file)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        raise OSError(28, "No space left on device")


def test_a_full_disk_during_training_is_one_line_saying_how_to_continue(data, tmp_path, capfd):
    overrides = train_args(data, tmp_path / "run", **{"+callbacks.full._target_": f"{__name__}.FullDisk"})
    code, _, err = run_main("train", overrides, capfd)
    assert_user_error(code, err, f"paths.run_dir={tmp_path / 'run'}", "No space left on device", "resume=last")


def test_a_checkpoint_may_monitor_the_step(data, tmp_path, capfd):
    overrides = train_args(data, tmp_path / "run", **{"callbacks.model_checkpoint.monitor": "step",
                                                      "callbacks.model_checkpoint.mode": "max"})
    code, _, err = run_main("train", overrides, capfd)
    assert code == 0, err[-3000:]
    assert [path.name for path in (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")] == ["epoch000-step2.ckpt"]


def test_processes_a_run_starts_share_its_folder_and_the_variable_is_restored(tmp_path, monkeypatch):
    from quartznet.common.runs import RUN_DIR_VARIABLE, shared_run_folder

    for before in (None, "/elsewhere"):
        if before is None:
            monkeypatch.delenv(RUN_DIR_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(RUN_DIR_VARIABLE, before)
        with shared_run_folder(tmp_path / "run"):
            assert os.environ[RUN_DIR_VARIABLE] == str(tmp_path / "run")
            assert str(compose_paths().run_dir) == str(tmp_path / "run")  # what a started process resolves
        assert os.environ.get(RUN_DIR_VARIABLE) == before


def compose_paths():
    from conftest import compose

    return compose([], config_name="train").paths
