"""Run files: atomic writes (a reader never sees a half-written report, cache or checkpoint), the
removal of what a killed writer left, and safe checkpoint reading."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys_cli.errors import ConfigError

# Leftovers of a writer on another machine, or named without a writer tag, are removed when older.
STALE_SECONDS = 6 * 3600
# the end of a tagged temporary name: "<pid>-<8 hex digits: the machine and PID namespace>", then
# the 8 random characters of tempfile (".best.ckpt.123-9f86d081.k2j4_x9a.tmp", ".x.tmp-123-9f86d081-q1w2e3r4")
_TAG = re.compile(r"[.-](\d+)-([0-9a-f]{8})[.-][a-z0-9_]{8}(?:\.tmp)?$")
# names written before writer tags: ".best.ckpt.k2j4_x9a.tmp", ".x.tmp-k2j4_x9a" (a cache folder)
_UNTAGGED = re.compile(r"^\..+(?:\.[a-z0-9_]{8}\.tmp|\.tmp-.+)$")


@functools.lru_cache(maxsize=1)
def _process_space() -> str:
    """This machine and PID namespace (a PID names a process only there), as 8 hex digits."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:8]


def writer_tag() -> str:
    """What a writer puts in the names of its temporary files and folders, so that the next writer
    can tell whether it is still alive (see :func:`remove_dead_leftovers`)."""
    return f"{os.getpid()}-{_process_space()}"


def writer_alive(pid: int, space: str | None, age: float) -> bool:
    """Whether the writer ``pid`` of the machine and PID namespace ``space`` (see
    :func:`writer_tag`) may still be writing: its process exists, when it is this machine's;
    else (another machine, or no ``space`` known) whether it wrote less than ``STALE_SECONDS`` ago."""
    if space != _process_space():
        return age < STALE_SECONDS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _writer_alive(name: str, age: float) -> bool:
    match = _TAG.search(name)
    if match is None:
        return age < STALE_SECONDS  # an untagged name: by age
    return writer_alive(int(match.group(1)), match.group(2), age)


def remove_dead_leftovers(folder: str | Path, pattern: str) -> list[Path]:
    """Remove the temporary files and folders matching ``pattern`` in ``folder`` whose writer is
    dead (killed mid-write): its process is gone, or, for another machine's writer or a name
    without a writer tag, the leftover is older than ``STALE_SECONDS``. A live writer's files stay.
    Returns what was removed."""
    removed = []
    now = time.time()
    for leftover in Path(folder).glob(pattern):
        if _TAG.search(leftover.name) is None and not _UNTAGGED.match(leftover.name):
            continue  # not a name this program writes
        try:
            if _writer_alive(leftover.name, now - leftover.lstat().st_mtime):
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError:  # gone already (another run cleaned it), or not ours to remove
            continue
        removed.append(leftover)
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary sibling of ``path``, then rename it into place.

    The temporary name carries the writer's tag; temporary files of writers that died in this
    folder (a killed checkpoint save) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(path.parent, ".*.tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (non-JSON values as strings)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def load_checkpoint(path: str | Path, key: str = "ckpt", shown: str | Path | None = None) -> dict[str, Any]:
    """Read a recsys checkpoint safely (``weights_only``: tensors and plain containers only).

    ``key`` is the config key the path came from, named in the error messages (with ``shown``, or
    ``path``, as the file: a copy being checked is named after its original). Raises ConfigError
    for a missing file, a file that is not a PyTorch checkpoint, and a checkpoint written by
    another program (no ``recsys`` section). ``weights_only=True`` is passed explicitly, so that
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (which only changes loads that leave it unset) cannot
    make this read unpickle code.
    """
    import torch

    path = Path(path)
    name = path if shown is None else shown
    if not path.is_file():
        hint = ""
        if path.is_dir() and (path / "checkpoints").is_dir():
            hint = f"; did you mean {path / 'checkpoints' / 'best.ckpt'}?"
        elif path.is_dir():
            hint = "; it is a folder: give a checkpoint file such as <run>/checkpoints/best.ckpt"
        raise ConfigError(f"{key}={name}: no such checkpoint file{hint}")
    kind = _not_a_checkpoint(path)
    if kind is not None:
        raise ConfigError(
            f"{key}={name}: not a checkpoint ({kind}); give a checkpoints/best.ckpt or last.ckpt from a "
            "recsys run directory"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means "not a checkpoint we can read"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{key}={name}: not a readable PyTorch checkpoint ({first[:160]}); "
            "give a checkpoints/best.ckpt or last.ckpt from a recsys run directory"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("recsys"), dict) or "state_dict" not in ckpt:
        raise ConfigError(
            f"{key}={name}: not a recsys checkpoint (no 'recsys' section: written by another program?); "
            "give a checkpoints/best.ckpt or last.ckpt from a recsys run directory"
        )
    if "config" not in ckpt["recsys"]:
        raise ConfigError(f"{key}={name}: the checkpoint's 'recsys' section has no run config; it is damaged")
    return ckpt


# the first bytes of what torch.save writes: a zip archive (since torch 1.6), or a pickle (the
# legacy format; protocol 2 or later starts with 0x80)
_CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")


def _not_a_checkpoint(path: Path) -> str | None:
    """What ``path`` is when its first bytes show it is not a file torch.save wrote (None: it may
    be one): an empty file, a text file (quoted), or another binary file."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "the file is empty"
    if head.startswith(_CHECKPOINT_STARTS):
        return None
    if any(byte < 0x20 and byte not in b"\t\r\n" for byte in head):
        return f"its first bytes {head[:8]!r} are neither a zip archive nor a pickle, as torch.save writes"
    first = " ".join(head.decode("utf-8", errors="ignore").split())[:40]
    return f"a text file, starting {first!r}"
