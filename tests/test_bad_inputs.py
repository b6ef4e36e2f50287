"""Reliability at the edges: every entry point turns a bad input into one `error:` line (exit 1; argparse's
usage errors exit 2), never a traceback, names the file or option, and loses no finished result.

One tiny untrained CTC model is saved once; the broken checkpoints are copies of it. Most cases call the
programs' `main([...])` in-process (a few seconds in all); two run as real subprocesses, to check the exit
code and stderr of the program itself.
"""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import ROOT, tiny_classifier_config, tiny_ctc_config
from quartznet.common.checkpoint import CheckpointError, load_nemo, save_nemo
from quartznet.common.errors import UserError
from quartznet.common.outputs import JsonLinesOutput
from quartznet.models import ClassificationModel, CTCModel

RATE = 16000
DECODER_WEIGHT = "decoder.decoder_layers.0.weight"


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny model, broken copies of it, a classifier, and a few short audio files."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    good = CTCModel(tiny_ctc_config()).save_to(folder / "good.nemo")
    config, weights = load_nemo(good)
    paths = {"good": good, "missing": folder / "missing.nemo"}

    data = good.read_bytes()
    (paths.setdefault("truncated", folder / "truncated.nemo")).write_bytes(data[: len(data) // 2])
    (paths.setdefault("not_a_tar", folder / "not_a_tar.nemo")).write_bytes(b"this is no archive\n" * 64)
    paths["no_decoder"] = save_nemo(folder / "no_decoder.nemo", {k: v for k, v in config.items() if k != "decoder"}, weights)
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    paths["bad_yaml"] = _tar(folder / "bad_yaml.nemo", {"model_config.yaml": b"encoder: [unclosed\n  : :",
                                                        "model_weights.ckpt": buffer.getvalue()})
    wide = dict(weights)
    wide[DECODER_WEIGHT] = torch.zeros(weights[DECODER_WEIGHT].shape[0] + 3, *weights[DECODER_WEIGHT].shape[1:])
    paths["shape"] = save_nemo(folder / "shape.nemo", config, wide)
    nan = {key: value.clone() for key, value in weights.items()}
    paths["nan_key"] = next(key for key, value in nan.items() if value.is_floating_point() and key.startswith("encoder"))
    nan[paths["nan_key"]].view(-1)[0] = float("nan")
    paths["nan"] = save_nemo(folder / "nan.nemo", config, nan)
    paths["classifier"] = ClassificationModel(tiny_classifier_config()).save_to(folder / "kws.nemo")

    generator = np.random.default_rng(0)
    (folder / "audio").mkdir()
    for i in range(3):
        soundfile.write(folder / "audio" / f"{i}.wav", (generator.standard_normal(RATE // 2) * 0.1).astype("float32"), RATE)
    paths["audio"] = folder / "audio"
    paths["corrupt"] = folder / "corrupt.wav"
    paths["corrupt"].write_bytes(b"RIFF not really a wave file")
    (folder / "empty").mkdir()
    paths["empty"] = folder / "empty"
    return paths


def good_audio(files: dict[str, Path]) -> list[str]:
    return [str(files["audio"] / f"{i}.wav") for i in range(3)]


def call(main, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of an in-process `main(argv)`."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def check(code: int, err: str, expected_code: int, *named: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err
    for name in named:
        assert name in err, (name, err)
    if expected_code == 1:
        assert err.strip().splitlines()[-1].startswith("error: "), err


# --- transcribe: bad models, options and inputs -------------------------------------------------------

MODEL_CASES = {
    "missing": ("missing.nemo", "not found"),
    "truncated": ("truncated.nemo", "truncated or damaged"),
    "not_a_tar": ("not_a_tar.nemo", "not a readable"),
    "no_decoder": ("no_decoder.nemo", "`decoder`"),
    "bad_yaml": ("bad_yaml.nemo", "not valid YAML"),
    "shape": ("shape.nemo", DECODER_WEIGHT),
    "nan": ("nan.nemo", "NaN/Inf"),
    "classifier": ("kws.nemo", "classification"),
}


@pytest.mark.parametrize("kind", MODEL_CASES)
def test_transcribe_bad_model(kind, files, capsys, tmp_path):
    from quartznet.transcribe import main

    out = tmp_path / "out.jsonl"
    code, stdout, err = call(main, [str(files[kind]), *good_audio(files), "--output", str(out), "--device", "cpu"], capsys)
    check(code, err, 1, *MODEL_CASES[kind])
    assert not out.exists() and stdout == ""
    if kind == "shape":  # both shapes named
        assert "(32, 32, 1)" in err or "has shape (" in err and "needs (" in err
    if kind == "nan":
        assert files["nan_key"] in err


def test_debug_shows_the_error_itself(files):
    from quartznet.transcribe import main

    with pytest.raises(FileNotFoundError, match="missing.nemo"):
        main([str(files["missing"]), *good_audio(files), "--debug"])


@pytest.mark.parametrize("kind", MODEL_CASES)
def test_restore_from_bad_model_is_a_user_error_naming_the_file(kind, files):
    if kind == "classifier":
        pytest.skip("restore_from of another class: test_checkpoint.py")
    with pytest.raises((CheckpointError, FileNotFoundError)) as raised:
        CTCModel.restore_from(files[kind])
    assert isinstance(raised.value, UserError) and files[kind].name in str(raised.value)


OPTION_CASES = {
    "batch_zero": (["--batch-size", "0"], 2, "--batch-size"),
    "batch_negative": (["--batch-size", "-3"], 2, "--batch-size"),
    "chunk_zero": (["--chunk-seconds", "0"], 2, "--chunk-seconds"),
    "overlap_negative": (["--overlap-seconds", "-1"], 2, "--overlap-seconds"),
    "device_banana": (["--device", "banana"], 1, "--device banana"),
    "device_absent": (["--device", "cuda:99"], 1, "--device cuda:99"),
    "lm_missing": (["--lm", "nowhere.arpa"], 1, "--lm nowhere.arpa"),
}


@pytest.mark.parametrize("kind", OPTION_CASES)
def test_transcribe_bad_option_fails_before_loading_the_model(kind, files, capsys, monkeypatch):
    import quartznet.tasks

    def no_loading(path):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(quartznet.tasks, "load_transcriber", no_loading)
    from quartznet.transcribe import main

    options, expected, named = OPTION_CASES[kind]
    code, _, err = call(main, [str(files["good"]), *good_audio(files), *options], capsys)
    check(code, err, expected, named)


def test_transcribe_unwritable_output_fails_before_loading(files, capsys, tmp_path, monkeypatch):
    import quartznet.tasks

    monkeypatch.setattr(quartznet.tasks, "load_transcriber", lambda path: pytest.fail("model loaded first"))
    from quartznet.transcribe import main

    (tmp_path / "a_file").write_text("x")
    for output in (tmp_path, tmp_path / "a_file" / "out.jsonl"):  # a folder; a folder that is a file
        code, _, err = call(main, [str(files["good"]), *good_audio(files), "--output", str(output)], capsys)
        check(code, err, 1, str(output))


def _manifest(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


INPUT_CASES = {
    "missing_file": lambda f, t: (str(t / "nope.wav"), "nope.wav: file not found"),
    "empty_folder": lambda f, t: (str(f["empty"]), "no audio files"),
    "manifest_not_json": lambda f, t: (str(_manifest(t / "m.json", "{oops\n")), "m.json:1"),
    "manifest_no_path": lambda f, t: (str(_manifest(t / "m.json", '{"audio_filepath": "a.wav"}\n{"text": "x"}\n')), "m.json:2"),
    "manifest_bad_duration": lambda f, t: (str(_manifest(t / "m.json", '{"audio_filepath": "a.wav", "duration": "long"}\n')), "m.json:1"),
    "manifest_empty": lambda f, t: (str(_manifest(t / "m.jsonl", "\n")), "m.jsonl"),
}


@pytest.mark.parametrize("kind", INPUT_CASES)
def test_transcribe_bad_input(kind, files, capsys, tmp_path):
    from quartznet.transcribe import main

    argument, named = INPUT_CASES[kind](files, tmp_path)
    code, stdout, err = call(main, [str(files["good"]), argument, "--device", "cpu"], capsys)
    check(code, err, 1, named)
    assert stdout == ""


# --- transcribe: no finished result is lost ------------------------------------------------------------


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_good_files_are_written_around_a_corrupt_one(files, capsys, tmp_path):
    from quartznet.transcribe import main

    out = tmp_path / "out.jsonl"
    good = good_audio(files)
    code, _, err = call(main, [str(files["good"]), good[0], str(files["corrupt"]), *good[1:], "--output", str(out),
                               "--device", "cpu", "--batch-size", "2"], capsys)
    check(code, err, 0, "corrupt.wav", "transcribed 3 of 4 inputs (1 skipped)")
    assert [row["audio_filepath"] for row in _rows(out)] == good
    assert not Path(str(out) + ".partial").exists()


def test_every_input_unreadable_is_an_error_and_keeps_the_old_output(files, capsys, tmp_path):
    from quartznet.transcribe import main

    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    code, _, err = call(main, [str(files["good"]), str(files["corrupt"]), "--output", str(out), "--device", "cpu"], capsys)
    check(code, err, 1, "corrupt.wav", "transcribed 0 of 1")
    assert out.read_text() == "old\n" and not Path(str(out) + ".partial").exists()


def test_ctrl_c_keeps_finished_rows_and_the_old_output(files, capsys, tmp_path, monkeypatch):
    import quartznet.transcribe as transcribe

    loaded = []
    real_load = transcribe.load_audio

    def load_then_interrupt(*args, **kwargs):
        if len(loaded) == 2:
            raise KeyboardInterrupt
        loaded.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(transcribe, "load_audio", load_then_interrupt)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    code, _, err = call(transcribe.main, [str(files["good"]), *good_audio(files), "--output", str(out),
                                         "--batch-size", "1", "--device", "cpu"], capsys)
    partial = Path(str(out) + ".partial")
    check(code, err, 130, f"interrupted after 2 of 3 inputs; finished rows are in {partial}")
    assert out.read_text() == "old\n"
    assert [row["audio_filepath"] for row in _rows(partial)] == good_audio(files)[:2]


def test_ctrl_c_to_stdout_has_printed_the_finished_rows(files, capsys, monkeypatch):
    import quartznet.transcribe as transcribe

    real_load, calls = transcribe.load_audio, []

    def load_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_load(*args, **kwargs)

    monkeypatch.setattr(transcribe, "load_audio", load_then_interrupt)
    code, out, err = call(transcribe.main, [str(files["good"]), *good_audio(files), "--batch-size", "1",
                                            "--device", "cpu"], capsys)
    check(code, err, 130, "interrupted after 1 of 3 inputs")
    assert len(out.splitlines()) == 1 and json.loads(out)["audio_filepath"] == good_audio(files)[0]


def test_a_failed_write_keeps_the_old_output(files, capsys, tmp_path, monkeypatch):
    from quartznet.transcribe import main

    real_write = JsonLinesOutput.write

    def full_disk(self, row):
        if self.rows == 1:  # the disk fills up after the first row
            self._handle.write = lambda text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        real_write(self, row)

    monkeypatch.setattr(JsonLinesOutput, "write", full_disk)
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    code, _, err = call(main, [str(files["good"]), *good_audio(files), "--output", str(out), "--batch-size", "1",
                               "--device", "cpu"], capsys)
    check(code, err, 1, "out.jsonl.partial", "No space left on device", f"{out} was left as it was")
    assert out.read_text() == "old\n"
    assert len(_rows(Path(str(out) + ".partial"))) == 1


# --- transcribe library: non-finite values, manifest durations -----------------------------------------


def test_nan_log_probs_are_an_error_not_an_empty_text(files):
    from quartznet.transcribe import transcribe

    model = CTCModel.restore_from(files["good"])
    with torch.no_grad():
        model.decoder.decoder_layers[0].weight.fill_(float("nan"))
    with pytest.raises(UserError, match=r"0\.wav: the model gave NaN/Inf"):
        transcribe(model, good_audio(files))


def test_nan_audio_is_skipped_with_its_reason(files, tmp_path):
    from quartznet.transcribe import transcribe

    broken = tmp_path / "nan.wav"
    soundfile.write(broken, np.full(RATE // 4, np.nan, dtype="float32"), RATE, subtype="FLOAT")
    errors = []
    rows = transcribe(CTCModel.restore_from(files["good"]), [broken, *good_audio(files)], errors=errors)
    assert len(rows) == 3 and [e.path for e in errors] == [str(broken)] and "NaN" in errors[0].reason


def test_manifest_duration_is_honoured_without_offset(files, tmp_path, monkeypatch):
    import quartznet.transcribe as transcribe

    audio = good_audio(files)
    manifest = _manifest(tmp_path / "m.json", json.dumps({"audio_filepath": audio[0], "duration": 0.25}) + "\n"
                         + json.dumps({"audio_filepath": audio[1], "offset": 0, "duration": 0.3}) + "\n"
                         + json.dumps({"audio_filepath": audio[2]}) + "\n")
    items = transcribe.expand_inputs([manifest])
    assert [(i.offset, i.duration) for i in items] == [(0.0, 0.25), (0.0, 0.3), (0.0, None)]
    seen, real_load = [], transcribe.load_audio
    monkeypatch.setattr(transcribe, "load_audio", lambda *a, **k: seen.append(k["duration"]) or real_load(*a, **k))
    transcribe.transcribe(CTCModel.restore_from(files["good"]), items)
    assert seen == [0.25, 0.3, None]


# --- export, decoding, data_prep ------------------------------------------------------------------------


EXPORT_CASES = {
    "classifier": (lambda f, t: [str(f["classifier"]), str(t / "out")], 1, "classification"),
    "truncated": (lambda f, t: [str(f["truncated"]), str(t / "out")], 1, "truncated.nemo"),
    "missing": (lambda f, t: [str(f["missing"]), str(t / "out")], 1, "missing.nemo"),
    "opset": (lambda f, t: [str(f["good"]), str(t / "out"), "--opset", "5"], 2, "--opset"),
    "out_is_a_file": (lambda f, t: [str(f["good"]), str(_manifest(t / "taken", "x"))], 1, "taken"),
}


@pytest.mark.parametrize("kind", EXPORT_CASES)
def test_export_bad_input(kind, files, capsys, tmp_path):
    from quartznet.export import main

    arguments, expected, named = EXPORT_CASES[kind]
    code, _, err = call(main, arguments(files, tmp_path), capsys)
    check(code, err, expected, named)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").is_dir() else True


def test_export_failure_leaves_no_partial_onnx_and_keeps_the_old_one(files, tmp_path, monkeypatch):
    import quartznet.export as export

    model = CTCModel.restore_from(files["good"])
    target = tmp_path / "m.openvino.onnx"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        Path(args[2]).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.torch.onnx, "export", broken)
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(model, target, "openvino")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [target.name]


DECODING_CASES = {
    "device": (["--device", "banana"], 1, "--device banana"),
    "missing_model": (["--device", "cpu"], 1, "missing.nemo"),
    "batch_zero": (["--batch-size", "0"], 2, "--batch-size"),
}


@pytest.mark.parametrize("kind", DECODING_CASES)
def test_decoding_grid_bad_input(kind, files, capsys, tmp_path):
    from quartznet.decoding import main

    manifest = _manifest(tmp_path / "dev.json", json.dumps({"audio_filepath": good_audio(files)[0], "duration": 0.5,
                                                             "text": "a"}) + "\n")
    options, expected, named = DECODING_CASES[kind]
    code, _, err = call(main, ["grid", "--model", str(files["missing"]), "--manifest", str(manifest), *options], capsys)
    check(code, err, expected, named)


def test_make_shards_missing_manifest(capsys, tmp_path):
    from data_prep import make_shards

    code, _, err = call(make_shards.main, ["--manifest", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")], capsys)
    check(code, err, 1, "nope.json")


def test_data_prep_program_error_is_one_line(capsys, tmp_path, monkeypatch):
    """As a program (no argv: run_main(main)), a data_prep failure of its own (PrepError) is one line too."""
    from data_prep import build_lm
    from data_prep.common import run_main

    monkeypatch.setattr(sys, "argv", ["build_lm", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "lm.arpa")])
    code, _, err = call(lambda argv: run_main(build_lm.main), [], capsys)
    check(code, err, 1, "corpus.txt")
    assert len(err.strip().splitlines()) == 1


def test_program_as_a_subprocess(files, tmp_path):
    """The real program: exit code, and one stderr line without a traceback."""
    command = [sys.executable, "-m", "quartznet.transcribe", str(files["good"]), str(tmp_path / "gone.wav")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr and "gone.wav: file not found" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- third pass: tiny files, manifest values, links, LMs, options ---------------------------------------


def _tiny_audio(folder: Path) -> dict[str, Path]:
    """WAVs shorter than one encoder frame (160 samples at 16 kHz give 0 frames), and one just long enough."""
    generator = np.random.default_rng(1)
    paths = {}
    for samples in (1, 100, 159, 160):
        paths[samples] = folder / f"tiny{samples}.wav"
        soundfile.write(paths[samples], (generator.standard_normal(samples) * 0.1).astype("float32"), RATE)
    return paths


def test_audio_shorter_than_one_frame_gives_an_empty_transcript(files, capsys, tmp_path):
    from quartznet.transcribe import main

    tiny = _tiny_audio(tmp_path)
    for samples in (1, 100):  # alone, with word timestamps
        out = tmp_path / f"alone{samples}.jsonl"
        code, _, err = call(main, [str(files["good"]), str(tiny[samples]), "--timestamps", "--output", str(out),
                                   "--device", "cpu"], capsys)
        check(code, err, 0, "transcribed 1 of 1 inputs (0 skipped)")
        assert _rows(out) == [{"audio_filepath": str(tiny[samples]), "text": "", "words": []}]
    out = tmp_path / "mixed.jsonl"  # among good files, in one batch: nothing else is lost
    code, _, err = call(main, [str(files["good"]), *good_audio(files), *map(str, tiny.values()), "--output", str(out),
                               "--device", "cpu"], capsys)
    check(code, err, 0, "transcribed 7 of 7 inputs (0 skipped)")
    rows = {row["audio_filepath"]: row["text"] for row in _rows(out)}
    assert rows[str(tiny[1])] == rows[str(tiny[159])] == "" and set(good_audio(files)) <= set(rows)
    code, _, err = call(main, [str(files["good"]), str(tiny[100]), good_audio(files)[0], "--beam-size", "4",
                               "--output", str(out), "--device", "cpu"], capsys)  # and with beam search
    check(code, err, 0, "transcribed 2 of 2 inputs (0 skipped)")
    assert _rows(out)[0] == {"audio_filepath": str(tiny[100]), "text": ""}


def _manifest_rows(path: Path, rows: list, encoding: str = "utf-8", prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode(encoding))
    return path


MANIFEST_VALUE_CASES = {
    # a good row first: a bad later row stops the run before any work, so nothing finished is lost
    "duration_nan": ({"duration": float("nan")}, "m.json:2", "'duration'", "NaN"),
    "duration_infinity": ({"duration": float("inf")}, "m.json:2", "'duration'", "Infinity"),
    "duration_negative": ({"duration": -1}, "m.json:2", "'duration'", "-1"),
    "offset_nan": ({"offset": float("nan")}, "m.json:2", "'offset'", "NaN"),
    "path_null": ({"audio_filepath": None}, "m.json:2", "'audio_filepath'", "null"),
    "path_number": ({"audio_filepath": 7}, "m.json:2", "'audio_filepath'", "7"),
}


@pytest.mark.parametrize("kind", MANIFEST_VALUE_CASES)
def test_transcribe_manifest_values_are_checked_at_read_time(kind, files, capsys, tmp_path):
    from quartznet.transcribe import main

    change, *named = MANIFEST_VALUE_CASES[kind]
    good = {"audio_filepath": good_audio(files)[0]}
    manifest = _manifest_rows(tmp_path / "m.json", [good, {**good, **change}])
    out = tmp_path / "out.jsonl"
    code, _, err = call(main, [str(files["good"]), str(manifest), "--output", str(out), "--device", "cpu"], capsys)
    check(code, err, 1, *named)
    assert "unreadable audio" not in err and not out.exists()


def test_a_manifest_that_is_not_utf8_names_the_file_and_line(files, capsys, tmp_path):
    from quartznet.transcribe import main

    rows = [{"audio_filepath": path, "text": "café"} for path in good_audio(files)[:2]]
    manifest = _manifest_rows(tmp_path / "latin1.json", rows, encoding="latin-1")
    code, _, err = call(main, [str(files["good"]), str(manifest), "--device", "cpu"], capsys)
    check(code, err, 1, "latin1.json:1", "not UTF-8", "0xe9")


def test_a_byte_order_mark_is_accepted(files, capsys, tmp_path):
    from quartznet.transcribe import main

    manifest = _manifest_rows(tmp_path / "bom.json", [{"audio_filepath": path} for path in good_audio(files)],
                              prefix=b"\xef\xbb\xbf")
    code, out, err = call(main, [str(files["good"]), str(manifest), "--device", "cpu"], capsys)
    check(code, err, 0, "transcribed 3 of 3 inputs")
    assert len(out.splitlines()) == 3


def test_broken_links_and_link_loops_in_a_folder_are_listed_and_counted(files, capsys, tmp_path):
    from quartznet.transcribe import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.wav").write_bytes(Path(good_audio(files)[0]).read_bytes())
    (folder / "dangling.wav").symlink_to("nowhere.wav")
    (folder / "loop.wav").symlink_to("loop.wav")
    code, out, err = call(main, [str(files["good"]), str(folder), "--device", "cpu"], capsys)
    check(code, err, 0, "transcribed 1 of 3 inputs (2 skipped)", "dangling.wav: broken symbolic link (to nowhere.wav)",
          "loop.wav: symbolic link loop")
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize("text", ["garbage\nnot an arpa\n", "\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n"],
                         ids=["not_arpa", "unigram_only"])
def test_an_unreadable_language_model_is_one_line_naming_it(text, files, capsys, tmp_path):
    from quartznet.transcribe import main

    lm = tmp_path / "lm.arpa"
    lm.write_text(text)
    code, _, err = call(main, [str(files["good"]), *good_audio(files), "--lm", str(lm), "--device", "cpu"], capsys)
    check(code, err, 1, str(lm), "language model")


def test_synthetic_corpus_sizes_name_the_option_and_its_range(capsys, tmp_path):
    from data_prep import synthetic

    for option, value in (("--train-utterances", "-3"), ("--jobs", "0"), ("--numbers", "2")):
        code, _, err = call(synthetic.main, ["asr", "--out", str(tmp_path / "x"), option, value], capsys)
        assert code == 2 and f"argument {option}: must be" in err, err
    assert not (tmp_path / "x").exists()


def test_export_on_a_full_disk_names_the_output_file(files, capsys, tmp_path, monkeypatch):
    import quartznet.export as export

    def full_disk(module, model, variant, path, *args):
        Path(path).write_bytes(b"half an onnx")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "_export_to", full_disk)
    out = tmp_path / "out"
    code, _, err = call(export.main, [str(files["good"]), str(out)], capsys)
    check(code, err, 1, str(out / "good.openvino.onnx"), "No space left on device")
    assert list(out.iterdir()) == []  # no half-written file, under any name


class TornDisk:
    """A file handle whose disk fills in the middle of a row: part of it is written, then ENOSPC."""

    def __init__(self, handle, after: int):
        self.handle, self.left = handle, after

    def write(self, data) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.handle.write(bytes(data)[: self.left])
        self.left -= written
        return written

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_full_disk_leaves_only_complete_rows_in_the_partial_file(tmp_path):
    output = JsonLinesOutput(tmp_path / "out.jsonl")
    output.write({"text": "first"})
    output._handle = TornDisk(output._handle, after=7)  # the second row is cut after 7 bytes
    with pytest.raises(UserError, match=r"out\.jsonl\.partial: writing failed after 1 rows \(No space left"):
        output.write({"text": "second row, torn"})
    output.keep_partial()
    assert (tmp_path / "out.jsonl.partial").read_text() == '{"text": "first"}\n'


def test_only_user_errors_are_one_line_a_bug_keeps_its_traceback(capsys):
    from quartznet.common.errors import ConfigError, user_errors

    for error in (UserError("bad file"), ConfigError("x=1: bad"), PermissionError(13, "Permission denied", "/x/y")):
        with pytest.raises(SystemExit) as stop, user_errors():
            raise error
        assert stop.value.code == 1
    assert capsys.readouterr().err.count("error: ") == 3
    for bug in (ValueError("an internal invariant"), OSError(5, "no file named"), KeyError("k")):
        with pytest.raises(type(bug)), user_errors():
            raise bug


def test_data_prep_reads_manifests_with_the_same_checks(files, capsys, tmp_path):
    from data_prep import build_lm, make_shards

    good = {"audio_filepath": good_audio(files)[0], "duration": 0.5, "text": "a b"}
    nan = _manifest_rows(tmp_path / "nan.json", [good, {**good, "duration": float("nan")}])
    code, _, err = call(make_shards.main, ["--manifest", str(nan), "--out", str(tmp_path / "shards"), "--quiet"], capsys)
    check(code, err, 1, "nan.json:2", "'duration'", "NaN")
    latin1 = _manifest_rows(tmp_path / "latin1.json", [{**good, "text": "café"}], encoding="latin-1")
    code, _, err = call(build_lm.main, [str(latin1), "--out", str(tmp_path / "lm.arpa")], capsys)
    check(code, err, 1, "latin1.json:1", "not UTF-8")
    assert not (tmp_path / "lm.arpa").exists()


def test_reader_inputs_that_are_not_what_they_claim_are_one_line(files, tmp_path):
    """A shard index that is a manifest, a lexicon spelled with labels the model lacks, a word list that is
    not UTF-8, a manifest duration of 400 digits: InputErrors naming the file (and line)."""
    from quartznet.common.errors import InputError
    from quartznet.data.manifest import ManifestError, seconds_field
    from quartznet.data.shards import ShardDataset
    from quartznet.decoding import BeamSearchDecoder, check_language_model, read_words

    row = {"audio_filepath": good_audio(files)[0], "duration": 0.5, "text": "a"}
    manifest = _manifest_rows(tmp_path / "m.json", [row, row])  # JSON lines: not one JSON document
    with pytest.raises(InputError, match=r"m\.json: not a quartznet shard index"):
        ShardDataset(None, list("ab "), 1, index=str(manifest))
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("hello\th e l l o |\nnaïve\tn a ï v e |\n", encoding="utf-8")
    model = CTCModel.restore_from(files["good"])
    with pytest.raises(InputError, match=r"lexicon\.txt:2: the spelling of 'naïve' uses \['ï'\]"):
        BeamSearchDecoder(model.vocabulary, model.blank_id, lexicon_path=lexicon)
    words = tmp_path / "words.txt"
    words.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"words\.txt:1: not UTF-8"):
        read_words(words)
    with pytest.raises(ManifestError, match=r"m:1: field 'duration' must be a finite number"):
        seconds_field({"duration": 10**400}, "duration", "m:1")
    commented = tmp_path / "commented.arpa"  # KenLM reads comment lines before \\data\\; so does the check
    commented.write_text("# an n-gram model\n\n\\data\\\nngram 1=1\n")
    check_language_model(commented)
