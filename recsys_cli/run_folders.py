"""Run folders: unique names taken atomically, one run per folder, and a checkpoint's run folder.

- **Unique names.** ``hydra.run.dir`` and ``hydra.sweep.dir`` (``conf/hydra/default.yaml``) go
  through the ``unique_dir`` resolver: the folder named after the start time is created with
  ``mkdir`` (atomic: of several processes only one can create a name), and a process that finds
  it taken tries ``<name>_2``, ``<name>_3``... So runs or sweeps started in the same second, by
  several terminals or a scheduler, each get a folder of their own.
- **One run per folder.** A folder that already holds a run (its ``config.yaml``,
  ``metrics.json``, checkpoints or claim) is not written into unless the run resumes that same
  folder (``ckpt_path=<folder>/checkpoints/last.ckpt``) or ``overwrite=true`` is given. The claim
  (``.recsys-run``, created with ``O_EXCL``) makes two runs started at once in one explicit folder
  exclusive too. Only the first process of a run checks and claims: the other ranks of a DDP run
  (started by Lightning, torchrun or srun, which give them the same ``hydra.run.dir``) join it.
- **A checkpoint's run folder** (:func:`run_folder_of`): the folder holding the run's
  ``config.yaml`` and ``checkpoints/``, found from the checkpoint's path, or None.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path

from omegaconf import OmegaConf

from recsys_cli.errors import ConfigError
from recsys_cli.io import STALE_SECONDS, writer_alive, writer_tag

# what a finished or running recsys run leaves in its folder (Hydra's own .hydra/ and train.log
# are not listed: Hydra writes them before the run starts)
CLAIM = ".recsys-run"
RUN_FILES = (CLAIM, "config.yaml", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt")
# what overwrite=true removes of the run it replaces (the rest is rewritten by the new run)
REPLACED = ("metrics.json", "scale_weights.json", "checkpoints", "evaluations", "test_cases.parquet", "plots")
# environment variables that give a process's rank in a run of several processes (Lightning's
# DDP children, torchrun, srun)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")

# the folder each name template was given in this process (a multirun resolves its sweep folder
# once per job; each time it must be the same folder)
_claimed: dict[str, str] = {}


def unique_dir(base: str) -> str:
    """``base``, or ``base_2``, ``base_3``... : the first of them this call creates (``mkdir`` is
    atomic, so concurrent processes never get the same one). The same ``base`` gives the same
    folder for the rest of this Hydra run (see :func:`forget_claimed_dirs`)."""
    if base in _claimed:
        return _claimed[base]
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = base if n == 1 else f"{base}_{n}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _claimed[base] = candidate
        return candidate
    raise ConfigError(f"hydra.run.dir: {base} and 9,999 numbered variants exist already; clean up {Path(base).parent}")


def forget_claimed_dirs() -> None:
    """A new Hydra run in this process (tests run several) takes new folders."""
    _claimed.clear()


def register_resolver() -> None:
    """Make ``${unique_dir:...}`` available to Hydra's config (idempotent). Cached per config:
    Hydra copies a multirun's cache into every job's config, so a job run by another process
    (the submitit launcher) reads the sweep folder the launcher took instead of taking a new one."""
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)


register_resolver()  # at import: a launcher's job process imports this module with the task


def launched_rank() -> int:
    """This process's rank in a run of several processes, from the launcher's environment
    (Lightning's DDP children, torchrun, srun); 0 for the first process or a single one."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def _claim_alive(claim: Path) -> bool:
    """Whether the run that wrote ``claim`` may still be running: its process exists (on this
    machine), or it started less than ``STALE_SECONDS`` ago (on another one, or unreadable)."""
    try:
        owner = json.loads(claim.read_text())
        pid, space, started = int(owner["pid"]), str(owner["space"]), float(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return time.time() - claim.stat().st_mtime < STALE_SECONDS
        except OSError:
            return False
    return writer_alive(pid, space, time.time() - started)


def run_contents(folder: Path) -> list[str]:
    """The files of a recsys run found in ``folder`` (empty: no run there). A claim alone counts
    while its run may be alive: one that died before writing anything leaves a free folder."""
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if found == [CLAIM] and not _claim_alive(folder / CLAIM):
        return []
    return found


def release_claim(folder: Path) -> None:
    """Give the folder back: the run ends before it wrote anything of its own (a data error)."""
    if not any((folder / name).exists() for name in RUN_FILES if name != CLAIM):
        (folder / CLAIM).unlink(missing_ok=True)


def run_folder_of(ckpt: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to: the folder holding it when that folder has the
    run's ``config.yaml``, or the parent of its ``checkpoints/`` folder; None for a checkpoint
    elsewhere (copied out of its run)."""
    folder = Path(ckpt).resolve().parent
    if (folder / "config.yaml").is_file():
        return folder
    if folder.name == "checkpoints":
        return folder.parent
    return None


def same_folder(a: Path | None, b: Path) -> bool:
    return a is not None and a.resolve() == b.resolve()


def check_run_folder(folder: Path, overwrite: bool, resumes: str | None, key: str = "hydra.run.dir") -> None:
    """Raise a one-line ConfigError if ``folder`` holds another run and neither ``overwrite`` nor a
    resume of that same folder (``resumes``: the ``ckpt_path``) allows writing there."""
    found = run_contents(folder)
    if not found or overwrite or (resumes is not None and same_folder(run_folder_of(resumes), folder)):
        return
    raise ConfigError(
        f"{key}={folder} already holds a run ({', '.join(found)}); choose another folder, resume that run "
        f"with ckpt_path={folder / 'checkpoints' / 'last.ckpt'}, or replace it with overwrite=true"
    )


def claim_run_folder(folder: Path, overwrite: bool, resumes: str | None) -> None:
    """Take ``folder`` for this run: create its claim atomically, after checking that it holds
    no other run (:func:`check_run_folder`; a claim left by a run that is still starting counts).
    With ``overwrite`` the previous run's results are removed first (``REPLACED``), so none of
    them can be mistaken for this run's. Called by the first process of a run only."""
    folder.mkdir(parents=True, exist_ok=True)
    resuming_here = resumes is not None and same_folder(run_folder_of(resumes), folder)
    check_run_folder(folder, overwrite, resumes)
    if overwrite and not resuming_here and run_contents(folder):
        removed = [name for name in REPLACED if (folder / name).exists()]
        for name in removed:
            target = folder / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        print(f"overwrite=true: replacing the run in {folder} (removed {', '.join(removed) or 'nothing'})")
    if (folder / CLAIM).exists() and not _claim_alive(folder / CLAIM):
        (folder / CLAIM).unlink(missing_ok=True)  # left by a run that died before writing anything
    pid, space = writer_tag().split("-")  # this process, and its machine and PID namespace
    claim = json.dumps({"pid": int(pid), "space": space, "host": socket.gethostname(), "started": time.time()})
    flags = os.O_WRONLY | os.O_CREAT | (0 if overwrite or resuming_here else os.O_EXCL)
    try:
        fd = os.open(folder / CLAIM, flags | os.O_TRUNC, 0o644)
    except OSError as err:
        if err.errno != errno.EEXIST:
            raise
        raise ConfigError(
            f"hydra.run.dir={folder}: another run has just started in this folder; give each run its own "
            "folder (or leave hydra.run.dir to recsys: every run gets a new one)"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(claim + "\n")
