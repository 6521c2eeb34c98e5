"""Run files: atomic writes (a reader never sees a half-written report, cache or checkpoint) and
safe checkpoint reading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys_cli.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary sibling of ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def load_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """Read a recsys checkpoint safely (``weights_only``: tensors and plain containers only).

    ``key`` is the config key the path came from, named in the error messages. Raises
    ConfigError for a missing file, a file that is not a PyTorch checkpoint, and a checkpoint
    written by another program (no ``recsys`` section).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.is_dir() and (path / "checkpoints").is_dir():
            hint = f"; did you mean {path / 'checkpoints' / 'best.ckpt'}?"
        elif path.is_dir():
            hint = "; it is a folder: give a checkpoint file such as <run>/checkpoints/best.ckpt"
        raise ConfigError(f"{key}={path}: no such checkpoint file{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means "not a checkpoint we can read"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{key}={path}: not a readable PyTorch checkpoint ({first[:160]}); "
            "give a checkpoints/best.ckpt or last.ckpt from a recsys run directory"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("recsys"), dict) or "state_dict" not in ckpt:
        raise ConfigError(
            f"{key}={path}: not a recsys checkpoint (no 'recsys' section: written by another program?); "
            "give a checkpoints/best.ckpt or last.ckpt from a recsys run directory"
        )
    if "config" not in ckpt["recsys"]:
        raise ConfigError(f"{key}={path}: the checkpoint's 'recsys' section has no run config; it is damaged")
    return ckpt
