"""`.nemo` archives: read and write NeMo's layout (docs/nemo_compatibility.md §6), treating every
archive as untrusted data.

A `.nemo` file is a tar (plain, or gzip before 2022) holding `./model_config.yaml` (the `model:`
config) and `./model_weights.ckpt` (a `torch.save`d state dict). Reading never unpickles code
(`torch.load(weights_only=True)`), and an archive can cost only bounded time and memory
(docs/reliability.md#checkpoints-are-untrusted):
- only those two members are read, each streamed to a fresh temporary folder after its size was
  checked against its limit (MEMBER_LIMITS); other members are passed over without being read, but one
  over OTHER_MEMBER_LIMIT, or more than MAX_MEMBERS entries, has the archive refused;
- a member that could write outside its folder or is not a regular file (links, devices) is refused;
- the config may use YAML anchors and aliases, but a config of more than MAX_CONFIG_VALUES values once
  they are expanded (an alias bomb) is refused before anything is built from it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from quartznet.common.errors import UserError
from quartznet.common.outputs import replaced_atomically

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
CKPT_CONFIG_KEY = "quartznet_model_config"  # where a Lightning .ckpt from train.py keeps the model config


MODEL_SECTIONS = ("preprocessor", "encoder", "decoder")  # every model config has these
# What reading a damaged plain or gzip tar raises (truncated: ReadError "unexpected end of data" / EOFError).
DAMAGED_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be used; the message names the file, what is wrong and what to do."""


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """The checkpoint path does not name a file."""


class UnsafeArchiveError(CheckpointError):
    """A checkpoint archive holds a member that could write outside its folder or run code."""


def checked_member_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's relative path if it is a safe regular file, None for a plain directory entry.

    Raises UnsafeArchiveError for absolute paths, `..`, links and special files (devices, fifos);
    shared by checkpoint reading and the data_prep archive extractor.
    """
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith("\\") or re.match(r"^[A-Za-z]:", member.name):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} has an absolute path; refusing to extract")
    if ".." in name.parts:
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} points outside the archive ('..')")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link; refusing to extract")
    if member.isdir():
        return None
    if not member.isfile():
        raise UnsafeArchiveError(
            f"{archive}: member {member.name!r} is not a regular file (device, fifo, ...); refusing to extract"
        )
    parts = [part for part in name.parts if part != "."]
    if not parts:
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} has an empty path")
    return PurePosixPath(*parts)


# What reading a .nemo may cost. NeMo's QuartzNet 15x5 has a 76 MB weights member and a 6 KB config.
MEMBER_LIMITS = {CONFIG_NAME: 4 << 20, WEIGHTS_NAME: 1 << 30}  # bytes
OTHER_MEMBER_LIMIT = 64 << 20  # any other member (NeMo's tokenizer and vocabulary files are KBs to a few MB)
MAX_MEMBERS = 10_000  # archive entries looked at before the archive is refused
# Bytes of the (decompressed) tar stream read or passed over: what the two members may hold, and 64 MiB
# for headers and small members beside them. Bounds the time a gzip stream takes to reach the members.
MAX_ARCHIVE_BYTES = sum(MEMBER_LIMITS.values()) + (64 << 20)
MAX_READ = 16 << 20  # one read of the stream: member data comes in 1 MiB pieces, headers in 512 bytes
# Bytes read as headers (everything but the two members' data): tarfile parses them into Python objects,
# a sparse-file header 21 offsets per 512 bytes, so this bounds its memory and time. 10,000 entries: 5 MB.
MAX_HEADER_BYTES = 16 << 20
MAX_CONFIG_VALUES = 100_000  # config values once YAML aliases are expanded (QuartzNet 15x5: ~500)
GZIP_MAGIC = b"\x1f\x8b"  # NeMo writes plain tars, and gzip'd ones before 2022; nothing else


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


class BoundedStream:
    """The tar stream as tarfile reads it, refusing to go past MAX_ARCHIVE_BYTES, to read more than
    MAX_READ at once (tarfile reads a pax or GNU long-name header whole, whatever size it claims), or to
    read more than MAX_HEADER_BYTES outside the members being extracted (`extracting`)."""

    def __init__(self, stream: Any, archive: Path):
        self.stream, self.archive = stream, archive
        self.extracting, self.header_bytes = False, 0

    def _refuse(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.archive}: {what}; refusing it (a .nemo holds a config and its weights)")

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            raise self._refuse(f"an archive header or entry of {'unbounded size' if size < 0 else _size(size)} "
                               "to read at once")
        if self.stream.tell() + size > MAX_ARCHIVE_BYTES:
            raise self._refuse(f"more than {_size(MAX_ARCHIVE_BYTES)} of archive before its members were found")
        if not self.extracting:
            self.header_bytes += size
            if self.header_bytes > MAX_HEADER_BYTES:
                raise self._refuse(f"more than {_size(MAX_HEADER_BYTES)} of archive headers")
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.stream.tell() + offset if whence == io.SEEK_CUR else None
        if target is None or target > MAX_ARCHIVE_BYTES:
            raise self._refuse(f"more than {_size(MAX_ARCHIVE_BYTES)} of archive before its members were found")
        return self.stream.seek(target)

    def tell(self) -> int:
        return self.stream.tell()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, bounded: BoundedStream) -> Path:
    """Copy one member's data to `target`; a full temporary folder is said as such, not as a bad archive."""
    bounded.extracting = True
    try:
        with tar.extractfile(member) as source, open(target, "wb") as sink:
            while chunk := source.read(1 << 20):
                try:
                    sink.write(chunk)
                except OSError as error:
                    raise CheckpointError(
                        f"{bounded.archive}: cannot unpack {member.name} into the temporary folder {target.parent} "
                        f"({error.strerror or error}); free space there or set TMPDIR to a larger place"
                    ) from error
    finally:
        bounded.extracting = False
    return target


def read_needed_members(archive: Path, folder: Path) -> dict[str, Path]:
    """Stream the config and weights members of `archive` into `folder` -> {member name: file}.

    Each member read is checked (checked_member_path) and held to MEMBER_LIMITS before a byte of it is
    read; reading stops once both are found, and the stream is a BoundedStream. A CheckpointError
    (UnsafeArchiveError) names the member or what was refused.
    """
    found: dict[str, Path] = {}
    try:
        with open(archive, "rb") as raw:
            compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            raw.seek(0)
            with (
                gzip.GzipFile(fileobj=raw, mode="rb") if compressed else contextlib.nullcontext(raw) as stream,
                tarfile.open(fileobj=(bounded := BoundedStream(stream, archive)), mode="r:") as tar,
            ):
                for count, member in enumerate(tar, start=1):
                    if count > MAX_MEMBERS:
                        raise CheckpointError(
                            f"{archive}: more than {MAX_MEMBERS} entries before {' and '.join(MEMBER_LIMITS)} were "
                            "found; refusing it (a .nemo holds a few)"
                        )
                    relative = checked_member_path(archive, member)
                    if relative is None:
                        continue
                    needed = relative.name in MEMBER_LIMITS
                    limit = MEMBER_LIMITS[relative.name] if needed else OTHER_MEMBER_LIMIT
                    if member.size > limit:
                        kind = relative.name if needed else "a member besides the config and weights"
                        raise CheckpointError(
                            f"{archive}: member {member.name} is {_size(member.size)}, over the {_size(limit)} limit "
                            f"for {kind}; refusing the archive"
                        )
                    if not needed or relative.name in found:
                        continue  # passed over, not read
                    found[relative.name] = _extract(tar, member, folder / relative.name, bounded)
                    if len(found) == len(MEMBER_LIMITS):
                        break
    except CheckpointError:
        raise
    # tarfile's parsing of malformed headers (sparse maps, numbers) raises ValueError and IndexError too.
    except (*DAMAGED_ARCHIVE_ERRORS, OSError, ValueError, IndexError) as error:
        if isinstance(error, OSError) and not isinstance(error, gzip.BadGzipFile) and error.filename is not None:
            raise
        raise CheckpointError(
            f"{archive}: not a readable .nemo/tar archive, or truncated or damaged ({error}); is this the checkpoint "
            "file? (copy or download it again)"
        ) from error
    return found


def check_config_size(config: Any, path: Path, where: str) -> None:
    """A CheckpointError when `config` holds more than MAX_CONFIG_VALUES values, each alias counted as
    often as it is used (what building the model would expand); stops counting at the limit."""
    pending, values = [config], 0
    while pending:
        node = pending.pop()
        values += 1
        if values > MAX_CONFIG_VALUES:
            raise CheckpointError(
                f"{path}: {where} holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are "
                "expanded (an alias bomb?); refusing it"
            )
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, (list, tuple)):
            pending.extend(node)


def _check_exists(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give the checkpoint file (.nemo or .ckpt)")
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: checkpoint not found; check the path")


def check_model_config(config: Any, path: Path, where: str) -> dict[str, Any]:
    """`config` if it is a mapping with the module sections every model has; a CheckpointError otherwise."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: {where} is not a YAML mapping; the checkpoint is damaged or not a model")
    check_config_size(config, path, where)
    model = config["model"] if "encoder" not in config and isinstance(config.get("model"), dict) else config
    for section in MODEL_SECTIONS:
        if not isinstance(model.get(section), dict):
            raise CheckpointError(
                f"{path}: {where} has no `{section}` section; the checkpoint is incomplete or not a QuartzNet/NeMo "
                "model (re-export it, or use the original file)"
            )
    return config


def load_nemo(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a `.nemo` file -> (model config as a plain dict, state dict of tensors)."""
    path = Path(path)
    _check_exists(path)
    with tempfile.TemporaryDirectory(prefix="quartznet-nemo-") as folder:
        files = read_needed_members(path, Path(folder))
        for needed in (CONFIG_NAME, WEIGHTS_NAME):
            if needed not in files:
                raise CheckpointError(
                    f"{path}: no {needed} inside; is this a .nemo checkpoint? (found {sorted(files) or 'neither'})"
                )
        try:
            config = yaml.safe_load(files[CONFIG_NAME].read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: nested too deep
            mark = getattr(error, "problem_mark", None)
            problem = getattr(error, "problem", None) or " ".join(str(error).split())
            if mark is not None:
                problem += f" at line {mark.line + 1}, column {mark.column + 1}"
            raise CheckpointError(
                f"{path}: {CONFIG_NAME} inside is not valid YAML ({problem}); the archive is damaged"
            ) from error
        check_model_config(config, path, CONFIG_NAME)
        state_dict = load_weights(files[WEIGHTS_NAME], label=f"{path}:{WEIGHTS_NAME}")
    return config, state_dict


def _load_data(path: str | os.PathLike, label: str) -> Any:
    """`torch.load` as data only: anything carrying code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError (or RuntimeError) for code and garbage alike
        raise CheckpointError(
            f"{label}: refused to load: not a plain tensor checkpoint (weights_only=True rejected it: "
            f"{str(error).splitlines()[0]})"
        ) from error


def _state_dict_of(state: Any, label: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning .ckpt
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{label}: expected a dict of tensors (a state dict); is this a model checkpoint?")
    return state


def load_weights(path: str | os.PathLike, label: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a `torch.save`d file or a Lightning `.ckpt`, loaded as data only."""
    label = label or str(path)
    return _state_dict_of(_load_data(path, label), label)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config, state dict) from a `.nemo`, or from a Lightning `.ckpt` written by train.py."""
    path = Path(path)
    if path.suffix != ".ckpt":
        return load_nemo(path)
    _check_exists(path)
    checkpoint = _load_data(path, str(path))
    if not isinstance(checkpoint, dict) or CKPT_CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"{path}: a Lightning checkpoint without a quartznet model config; was it written by train.py?"
        )
    config = check_model_config(checkpoint[CKPT_CONFIG_KEY], path, CKPT_CONFIG_KEY)
    return config, _state_dict_of(checkpoint, str(path))


def save_nemo(path: str | os.PathLike, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write NeMo's layout: an uncompressed tar with `./model_config.yaml` and `./model_weights.ckpt`."""
    path = Path(path)
    weights = io.BytesIO()
    torch.save({key: value.detach().cpu() for key, value in state_dict.items()}, weights)
    config_bytes = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()
    now = time.time()
    # Never a half-written checkpoint under the final name (replaced_atomically).
    with replaced_atomically(path) as partial, tarfile.open(partial, mode="w") as tar:
        root = tarfile.TarInfo("./")
        root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o755, now
        tar.addfile(root)
        for name, payload in ((CONFIG_NAME, config_bytes), (WEIGHTS_NAME, weights.getvalue())):
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode, info.mtime = len(payload), 0o644, now
            tar.addfile(info, io.BytesIO(payload))
    return path
