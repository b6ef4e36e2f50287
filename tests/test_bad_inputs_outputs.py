"""No command writes over its own input, and none leaves a finished result half-written.

For every command that writes files: an output that is one of its inputs (the same file, whatever the
path says) is refused before any work with one line naming it, and the input stays byte for byte as it
was; an ordinary run changes no input (content and modification time). Missing output folders are
created with their parents; a folder that cannot be written gives one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import tiny_ctc_config
from quartznet.models import CTCModel
from test_bad_inputs_train_eval import run_main, train_args

RATE = 16000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A tiny CTC model, three short WAVs and a manifest of them, with their transcripts."""
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    paths = {"model": CTCModel(tiny_ctc_config()).save_to(folder / "model.nemo"), "audio": folder / "audio"}
    paths["audio"].mkdir()
    rows = []
    for i, text in enumerate(["a b", "ab ba", "abba"]):
        wav = paths["audio"] / f"{i}.wav"
        soundfile.write(wav, (np.random.default_rng(i).standard_normal(RATE // 2) * 0.1).astype("float32"), RATE)
        rows.append({"audio_filepath": str(wav), "duration": 0.5, "text": text})
    paths["manifest"] = folder / "manifest.json"
    paths["manifest"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def snapshot(paths: list[Path]) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}


def every_input(inputs: dict[str, Path]) -> list[Path]:
    return [inputs["model"], inputs["manifest"], *sorted(inputs["audio"].iterdir())]


def run(main, argv: list[str], capture) -> tuple[int, str]:
    """(exit code, stderr) of an in-process `main(argv)`; `capture`: pytest's capsys or capfd."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return int(code or 0), capture.readouterr().err


def refused(code: int, err: str, *named: str) -> None:
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: "), err
    for name in named:
        assert name in err, (name, err)


# --- an output that is an input -----------------------------------------------------------------------


def transcribe_main(argv):
    from quartznet.transcribe import main
    return main(argv)


def export_main(argv):
    from quartznet.export import main
    return main(argv)


def decoding_main(argv):
    from quartznet.decoding import main
    return main(argv)


def build_lm_main(argv):
    from data_prep.build_lm import main
    return main(argv)


def make_shards_main(argv):
    from data_prep.make_shards import main
    return main(argv)


CASES = {
    # name: (main, argv from the inputs, the input written over, words the error names)
    "transcribe_audio": (transcribe_main, lambda i, t: [str(i["model"]), str(i["audio"]), "--output", str(i["audio"] / "1.wav")],
                         "1.wav", ["1.wav: is an input of this command"]),
    "transcribe_manifest": (transcribe_main, lambda i, t: [str(i["model"]), str(i["manifest"]), "--output", str(i["manifest"])],
                            "manifest", ["manifest.json: is an input"]),
    "transcribe_model": (transcribe_main, lambda i, t: [str(i["model"]), str(i["audio"]), "--output", str(i["model"])],
                         "model", ["model.nemo: is an input"]),
    "transcribe_link": (transcribe_main, lambda i, t: [str(i["model"]), str(i["manifest"]), "--output", str(t / "link.json")],
                        "manifest", ["link.json: is an input", "manifest.json"]),
    "export_hard_link": (export_main, lambda i, t: [str(i["model"]), str(t)], "model", ["model.openvino.onnx: is an input"]),
    "lexicon_words": (decoding_main, lambda i, t: ["lexicon", "--words", str(i["manifest"]), "--out", str(i["manifest"])],
                      "manifest", ["manifest.json: is an input"]),
    "build_lm_corpus": (build_lm_main, lambda i, t: [str(i["manifest"]), "--out", str(i["manifest"])],
                        "manifest", ["manifest.json: is an input"]),
    "shards_index": (make_shards_main, lambda i, t: ["--manifest", str(t / "index.json"), "--out", str(t)],
                     "manifest", ["index.json: is an input"]),
}


@pytest.mark.parametrize("kind", CASES)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(kind, inputs, tmp_path, capsys):
    main, argv, victim, named = CASES[kind]
    before = snapshot(every_input(inputs))
    if kind == "transcribe_link":
        (tmp_path / "link.json").symlink_to(inputs["manifest"])
    if kind == "export_hard_link":  # the export's file name already names the model, through a hard link
        os.link(inputs["model"], tmp_path / "model.openvino.onnx")
    if kind == "shards_index":  # the manifest sits where the shard index would go
        (tmp_path / "index.json").write_bytes(inputs["manifest"].read_bytes())
        before |= snapshot([tmp_path / "index.json"])
    code, err = run(main, argv(inputs, tmp_path), capsys)
    refused(code, err, *named)
    assert snapshot(list(before)) == before


# --- ordinary runs change no input --------------------------------------------------------------------


def test_no_command_modifies_its_inputs(inputs, tmp_path, capfd):
    before = snapshot(every_input(inputs))
    out = tmp_path / "out"
    commands = [
        (transcribe_main, [str(inputs["model"]), str(inputs["audio"]), str(inputs["manifest"]), "--timestamps",
                           "--output", str(out / "t.jsonl"), "--device", "cpu"]),
        (export_main, [str(inputs["model"]), str(out / "onnx")]),
        (decoding_main, ["lexicon", "--words", str(inputs["manifest"]), "--out", str(out / "lexicon.txt")]),
        (build_lm_main, [str(inputs["manifest"]), "--out", str(out / "lm.arpa"), "--order", "2"]),
        (make_shards_main, ["--manifest", str(inputs["manifest"]), "--out", str(out / "shards"), "--quiet"]),
    ]
    for main, argv in commands:
        code, err = run(main, argv, capfd)
        assert code == 0, (argv, err[-3000:])
    code, _, err = run_main("evaluate", [f"checkpoint={inputs['model']}", f"manifest={inputs['manifest']}",
                                         f"output_dir={out / 'eval'}", "num_workers=0"], capfd)
    assert code == 0, err[-3000:]
    assert (out / "eval" / "predictions.json").is_file() and (out / "t.jsonl").is_file()
    assert snapshot(list(before)) == before


# --- output folders -----------------------------------------------------------------------------------


def test_missing_output_folders_are_created_with_their_parents(inputs, tmp_path, capsys):
    nested = tmp_path / "a" / "b" / "c"
    code, err = run(transcribe_main, [str(inputs["model"]), str(inputs["audio"]), "--output", str(nested / "out.jsonl"),
                                      "--device", "cpu"], capsys)
    assert code == 0 and len((nested / "out.jsonl").read_text().splitlines()) == 3, err[-3000:]
    code, err = run(build_lm_main, [str(inputs["manifest"]), "--out", str(tmp_path / "x" / "y" / "lm.arpa")], capsys)
    assert code == 0 and (tmp_path / "x" / "y" / "lm.arpa").read_text().startswith("\\data\\"), err[-3000:]


def test_a_file_in_the_way_of_an_output_folder_is_one_line(inputs, tmp_path, capsys):
    (tmp_path / "a").write_text("a file, not a folder")
    code, err = run(transcribe_main, [str(inputs["model"]), str(inputs["audio"]), "--output",
                                      str(tmp_path / "a" / "b" / "out.jsonl"), "--device", "cpu"], capsys)
    refused(code, err, str(tmp_path / "a" / "b" / "out.jsonl"), "cannot write here")


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[Path]:
    """`folder`, made so that nothing can be created in it: by its mode for a normal user, as root (whom
    modes do not stop) by the immutable attribute where the file system has one; skipped otherwise."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no folder here is read-only to root")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_unwritable_output_folder_is_one_line_for_every_command(inputs, tmp_path, capfd):
    with unwritable(tmp_path / "locked") as locked:
        code, err = run(transcribe_main, [str(inputs["model"]), str(inputs["audio"]), "--output",
                                          str(locked / "out.jsonl")], capfd)
        refused(code, err, str(locked / "out.jsonl"), "cannot write here")
        for output_dir in (locked, locked / "sub"):
            code, _, err = run_main("evaluate", [f"checkpoint={inputs['model']}", f"manifest={inputs['manifest']}",
                                                 f"output_dir={output_dir}", "num_workers=0"], capfd)
            refused(code, err, str(output_dir), "cannot write here")
        data = {"good": inputs["manifest"]}
        for run_dir in (locked, locked / "run"):
            code, _, err = run_main("train", train_args(data, run_dir), capfd)
            refused(code, err, str(run_dir), "cannot write here")
        assert list(locked.iterdir()) == []
