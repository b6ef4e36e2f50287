"""Hostile `.nemo` files: each bomb ends in one line naming what was refused, in bounded time and memory.

The archives are built here from the tiny CTC model: an unused 1 GiB member (gzip, 1 MB on disk), 20
unused members of 60 MiB (1.2 GiB, 1.2 MB on disk), GNU long-name and pax headers that claim 1.9 GiB, a sparse-file header whose map
never ends (128 MiB of map blocks, 0.5 MB on disk), a bzip2 archive, a weights
member that claims 3 GiB, more entries than any .nemo holds, a YAML alias bomb (a million values once
expanded, 400 bytes), and a config asking for 60,000 filters where the weights have 16 (loaded, and
fine-tuned from with its own config).
One subprocess loads them all, each under a cap on its address space (what it had after the imports,
plus 2 GiB) and with its peak resident memory reset before it; it reports the time, the peak, what the
load added to the process's memory, and the message of each, so the tests can hold them to the limits:
under 10 s and 2 GB, one line (and, stricter, under 256 MB added). An archive with a 60 MiB unused
member loads: it is passed over, not read.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, tiny_ctc_config
from quartznet.common.checkpoint import CONFIG_NAME, MAX_MEMBERS, WEIGHTS_NAME, load_nemo, save_nemo
from quartznet.models import CTCModel

SECONDS, PEAK_BYTES = 10.0, 2 << 30
GROWTH_BYTES = 256 << 20  # what loading may add to the process's resident memory (the tiny model needs ~1 MB)

LOADER = r"""
import json, os, resource, sys, time
from omegaconf import OmegaConf
from quartznet.common.errors import UserError
from quartznet.tasks import load_model
from quartznet.training.setup import build_model


def load(path):
    if not path.startswith("init:"):
        return load_model(path)
    # train.py fine-tuning from the checkpoint's own architecture
    return build_model(OmegaConf.create({"model": {"_target_": "quartznet.models.CTCModel"},
                                         "init_from": {"path": path[5:], "use_checkpoint_config": True}}))


budget = int(sys.argv[1])
results = {}
for path in sys.argv[2:]:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    size = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + budget, resource.RLIM_INFINITY))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak resident size (VmHWM) of this process
    before = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
    start = time.perf_counter()
    try:
        load(path)
        message = None
    except UserError as error:
        message = str(error)
    except MemoryError:
        message = "MemoryError"
    seconds = time.perf_counter() - start
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
    results[path] = {"seconds": seconds, "peak": peak, "growth": peak - before, "message": message}
print(json.dumps(results))
"""


def _member(name: str, payload: bytes) -> bytes:
    info = tarfile.TarInfo(f"./{name}")
    info.size = len(payload)
    return info.tobuf(format=tarfile.GNU_FORMAT) + payload + b"\0" * (-len(payload) % tarfile.BLOCKSIZE)


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(b"".join(_member(name, payload) for name, payload in members) + b"\0" * 2 * tarfile.RECORDSIZE)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    torch.manual_seed(0)
    config, weights = load_nemo(CTCModel(tiny_ctc_config()).save_to(folder / "good.nemo"))
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    config_bytes, weights_bytes = yaml.safe_dump(config).encode(), buffer.getvalue()
    paths = {}

    # Zeros before the real members, gzip'd as concatenated gzip members of 1 MiB each (gzip readers join
    # them): 1 KB on disk per MiB. One unused member of 1 GiB (1 MB on disk); 20 of 60 MiB each, under the
    # limit for one member but more than a .nemo holds together; 60 MiB of them, which load.
    mebibyte = gzip.compress(bytes(1 << 20), compresslevel=9)
    rest = gzip.compress(_member(CONFIG_NAME, config_bytes) + _member(WEIGHTS_NAME, weights_bytes)
                         + b"\0" * 2 * tarfile.RECORDSIZE)
    for kind, members, mebibytes in (("unused", 1, 1024), ("unused_many", 20, 60), ("unused_small", 1, 60)):
        padding = b""
        for i in range(members):
            header = tarfile.TarInfo(f"./padding{i}.bin")
            header.size = mebibytes << 20
            padding += gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)) + mebibyte * mebibytes
        paths[kind] = folder / f"{kind}.nemo"
        paths[kind].write_bytes(padding + rest)

    # Headers that tarfile reads whole: a GNU long name and a pax header, each claiming 1.9 GiB.
    for kind, header_type in (("long_name", tarfile.GNUTYPE_LONGNAME), ("pax", tarfile.XHDTYPE)):
        header = tarfile.TarInfo("././@LongLink")
        header.type, header.size = header_type, 1900 << 20
        paths[kind] = folder / f"{kind}.nemo"
        paths[kind].write_bytes(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(1 << 20))

    # An old-GNU sparse member whose map goes on block after block: tarfile parses every block before the
    # member's data (128 MiB of them here, gzip'd to 0.5 MB: without a bound on headers, 8 s and +370 MB).
    sparse = bytearray(tarfile.TarInfo("./sparse.bin").tobuf(format=tarfile.GNU_FORMAT))
    sparse[156:157], sparse[482] = tarfile.GNUTYPE_SPARSE, 1  # type S, "the map continues"
    sparse[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(sparse[:148]) + b" " * 8 + bytes(sparse[156:]))[0]
    extension = bytearray(b"00000000001\0" * 42 + bytes(8))  # 21 (offset, size) pairs: 21 tuples a block
    extension[504] = 1  # and another block follows
    paths["sparse"] = folder / "sparse.nemo"
    paths["sparse"].write_bytes(gzip.compress(bytes(sparse)) + gzip.compress(bytes(extension) * 2048) * 128)

    paths["bzip2"] = folder / "bzip2.nemo"  # tarfile reads bzip2 and xz too; NeMo never wrote them
    paths["bzip2"].write_bytes(bz2.compress((folder / "good.nemo").read_bytes()))

    # A weights member whose header claims 3 GiB (only the header is there).
    claim = tarfile.TarInfo(f"./{WEIGHTS_NAME}")
    claim.size = 3 << 30
    paths["huge_member"] = folder / "huge_member.nemo"
    paths["huge_member"].write_bytes(_member(CONFIG_NAME, config_bytes) + claim.tobuf(format=tarfile.GNU_FORMAT))

    paths["many_members"] = _tar(folder / "many_members.nemo",
                                 [(f"junk/{i}", b"") for i in range(MAX_MEMBERS + 1)] + [(CONFIG_NAME, config_bytes)])

    # Each level is a list of four aliases of the level below: 4^10 ~ 10^6 values from a few hundred bytes.
    levels = ["l0: &l0 [x, x, x, x]"] + [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]" for i in range(1, 11)]
    paths["alias"] = _tar(folder / "alias.nemo", [(CONFIG_NAME, config_bytes + "\n".join(levels).encode() + b"\n"),
                                                  (WEIGHTS_NAME, weights_bytes)])

    wide = copy.deepcopy(config)
    wide["encoder"]["jasper"][1]["filters"] = 60_000  # a (60000, 60000, k) weight would be 14+ GB
    paths["filters"] = save_nemo(folder / "filters.nemo", wide, weights)
    paths["init:filters"] = Path(f"init:{paths['filters']}")  # the same, for fine-tuning with its config
    return paths


@pytest.fixture(scope="module")
def loaded(bombs) -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-c", LOADER, str(PEAK_BYTES), *map(str, bombs.values())], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


FILTERS = ("weight encoder.encoder.1.mconv.1.conv.weight has shape (16, 16, 1) in the checkpoint, but its config "
           "(`encoder.jasper[1]`) asks for (60000, 16, 1)")
EXPECTED = {
    "unused_small": None,  # loads: the unused member is passed over, never read into memory or onto disk
    "unused": "member ./padding0.bin is 1.0 GiB, over the 64.0 MiB limit for a member besides the config and weights",
    "unused_many": "more than 1.1 GiB of archive before its members were found",
    "long_name": "an archive header or entry of 1.9 GiB to read at once",
    "pax": "an archive header or entry of 1.9 GiB to read at once",
    "sparse": "more than 16.0 MiB of archive headers",
    "bzip2": "not a readable .nemo/tar archive",
    "huge_member": f"member ./{WEIGHTS_NAME} is 3.0 GiB, over the 1.0 GiB limit for {WEIGHTS_NAME}; refusing the archive",
    "many_members": f"more than {MAX_MEMBERS} entries",
    "alias": f"{CONFIG_NAME} holds more than 100,000 values once its YAML aliases are expanded",
    "filters": FILTERS,
    "init:filters": FILTERS,
}


@pytest.mark.parametrize("kind", EXPECTED)
def test_a_hostile_archive_ends_in_one_line_in_bounded_time_and_memory(kind, bombs, loaded):
    result = loaded[str(bombs[kind])]
    assert result["seconds"] < SECONDS and result["peak"] < PEAK_BYTES and result["growth"] < GROWTH_BYTES, result
    if EXPECTED[kind] is None:
        assert result["message"] is None, result
    else:
        assert result["message"] is not None and EXPECTED[kind] in result["message"], result
        assert result["message"].startswith(str(bombs[kind]).removeprefix("init:")) and "\n" not in result["message"]


def test_the_command_line_says_the_refusal_in_one_line(bombs, capsys, tmp_path):
    from quartznet.transcribe import main

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    try:
        code = main([str(bombs["alias"]), str(audio), "--device", "cpu"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and err.strip().splitlines() == [f"error: {bombs['alias']}: "
                                                                                 + EXPECTED["alias"] + " (an alias bomb?); refusing it"]


def test_a_full_temporary_folder_is_said_as_such_not_as_a_damaged_archive(bombs, monkeypatch):
    import quartznet.common.checkpoint as checkpoint
    from quartznet.common.checkpoint import CheckpointError

    class FullDisk(io.BytesIO):
        def write(self, data) -> int:
            raise OSError(28, "No space left on device")

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        return FullDisk() if "w" in mode else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(CheckpointError, match=r"cannot unpack \./model_config\.yaml into the temporary folder .*No "
                                              r"space left on device\); free space there or set TMPDIR"):
        load_nemo(bombs["unused_small"].with_name("good.nemo"))
