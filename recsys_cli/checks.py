"""Config checks: what can be checked without data (before a run starts), what needs the prepared
data (before the model is built), and whether a checkpoint can be resumed by this config.

Every check raises a :class:`~recsys_cli.errors.ConfigError` whose one line names the key.
"""

from __future__ import annotations

import inspect
import operator
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recsys_cli.checkpoints import load_run_checkpoint
from recsys_cli.compose import group_options
from recsys_cli.config_paths import CONF_DIR
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.params import declared_hints, problem
from recsys_cli.contract.scales import ScaleSet
from recsys_cli.data.tasks import check_task
from recsys_cli.errors import ConfigError
from recsys_cli.models.text_encoder import check_item_text
from recsys_cli.run_folders import run_folder_of
from recsys_cli.training.buckets import BUCKET_METRICS, FREQUENCY_BUCKETS
from recsys_cli.training.metrics import METRIC_NAMES

# the sections train() builds from (a '~group' override may not remove them)
REQUIRED_SECTIONS = ("paths", "data", "scales", "model", "objective", "optimizer", "trainer", "callbacks", "logger", "metrics")
# parts of the run's config that must match a checkpoint it resumes from (the rest may change,
# e.g. trainer.max_epochs to train longer)
RESUME_MUST_MATCH = (
    "model", "scales", "task", "data.name", "data.reader", "data.preparation", "data.split", "data.max_len", "data.cold_items",
)  # fmt: skip


def _int_at_least(value: Any, key: str, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= low
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"{key}={value!r}: use an integer >= {low}")


def metric_names(ks: list[int]) -> list[str]:
    """Every ranking metric a run computes for cut-offs ``ks``, e.g. ``ndcg@10``, and per bucket of
    the target's training count, e.g. ``cold/ndcg@10``."""
    overall = [f"{name}@{k}" for name in METRIC_NAMES for k in ks]
    buckets = [f"{bucket}/{name}@{k}" for bucket, _ in FREQUENCY_BUCKETS for name in BUCKET_METRICS for k in ks]
    return overall + buckets


def _check_ranking_metric(key: str, metric: str, ks: list[int]) -> None:
    """``metric`` must be ``val/<ranking metric>@K`` (what a run may select checkpoints on)."""
    stage, _, name = str(metric).partition("/")
    if stage != "val" or name not in metric_names(ks):
        k = 10 if 10 in ks else ks[0]
        raise ConfigError(
            f"{key}={metric!r} is not a computed metric; use <stage>/<metric>@K with stage in "
            f"val, metric in {'/'.join(METRIC_NAMES)} and K in metrics.ks={ks} (e.g. val/ndcg@{k})"
        )


def logged_metrics(cfg: DictConfig, ks: list[int], scales: ScaleSet) -> list[str]:
    """Every metric a run of ``cfg`` logs that a callback may monitor: the validation ranking
    metrics, the training loss and each objective term, and each scale's fusion weight."""
    names = [f"val/{m}" for m in metric_names(ks)]
    names += ["train/loss", "train/loss_step", "train/loss_epoch"]
    names += [f"train/{term}" for term, node in cfg.objective.items() if node.get("weight", 1.0) != 0]
    names += [f"scale_weight/{name}" for name in scales.names]
    return names


def _target_nodes(node: DictConfig, key: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(dotted key, node) of every ``_target_`` node under ``node``, parents before children;
    nodes that are references to others (``text: ${item_text}``) are visited where they live."""
    if "_target_" in node:
        yield key, node
    for name in node:
        if name == "hydra" or OmegaConf.is_interpolation(node, name) or OmegaConf.is_missing(node, name):
            continue
        child = node[name]
        if isinstance(child, DictConfig):
            yield from _target_nodes(child, f"{key}.{name}" if key else str(name))


def _source_key(node: DictConfig, key: str, name: str) -> str:
    """The key a user sets for ``key.name``: the one it refers to when it is ``${other.key}``."""
    raw = OmegaConf.to_container(node, resolve=False).get(name)
    ref = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return ref.group(1) if ref else f"{key}.{name}" if key else name


def check_components(cfg: DictConfig) -> None:
    """Every value of every ``_target_`` node against the type and range its component declares
    for that argument (:mod:`recsys_cli.contract.params`), before anything is built; and the
    optimizer's own checks (torch validates lr, betas, eps... when one is built) on a dummy
    parameter. A ConfigError names the key the user sets (``model.dim`` for the encoder's dim)."""
    probe = cfg.copy()
    OmegaConf.set_struct(probe, False)
    probe.paths.run_dir = "RUN_DIR"  # Hydra's, not known yet (see compose.check_resolvable)
    for key, node in _target_nodes(probe):
        try:
            target = get_object(node._target_)
        except Exception:  # noqa: BLE001 - an unknown target: building it reports that
            continue
        for name, (hint, default) in declared_hints(target).items():
            if name not in node:
                continue
            try:
                value = node[name]
            except OmegaConfBaseException:  # '???' or a reference to one: compose.check_resolvable
                continue
            wrong = problem(hint, value, default)
            if wrong:
                raise ConfigError(f"{_source_key(node, key, name)}={value!r}: {wrong}")
    _check_optimizer(probe.optimizer)


def _check_optimizer(node: DictConfig) -> None:
    """Build the (partial) optimizer on one dummy parameter; a value it refuses is found by
    leaving each key to the optimizer's default in turn."""
    import torch
    from hydra.utils import instantiate

    def refusal(settings: dict) -> Exception | None:
        try:
            build = instantiate(settings)
        except Exception:  # noqa: BLE001 - not buildable at all: the run's builder reports it
            return None
        try:
            build([torch.nn.Parameter(torch.zeros(1))])
        except (ValueError, TypeError) as err:
            return err
        return None

    try:
        settings = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:  # reported by compose.check_resolvable
        return
    if not settings.get("_partial_") or (err := refusal(settings)) is None:
        return
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for name in [k for k in settings if not k.startswith("_")]:
        if refusal({k: v for k, v in settings.items() if k != name}) is None:
            known = name in inspect.signature(get_object(settings["_target_"])).parameters
            todo = "use a value it accepts" if known else "remove the key"
            raise ConfigError(
                f"optimizer.{name}={settings[name]!r}: {settings['_target_']} refuses it ({reason}); {todo}"
            )
    raise ConfigError(f"optimizer ({settings['_target_']}): {reason}; check the keys under optimizer")


# config values that become one file or folder name inside a folder (key pattern, what it names)
PATH_NAMES = (
    ("data.name", "the prepared cache's folder <paths.cache_dir>/<name>-<fingerprint>"),
    ("logger.*.name", "a logger's folder inside the run folder"),
    ("logger.*.version", "a logger's folder inside the run folder"),
    ("logger.*.sub_dir", "a logger's folder inside the run folder"),
    ("callbacks.*.filename", "a checkpoint file inside <run>/checkpoints"),
)


def path_name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be one file or folder name confined to its folder (None: it can)."""
    if not isinstance(value, str):
        return None  # a number (a logger version) or null (the component's default)
    if any(sep in value for sep in ("/", "\\", "\0")):
        return "it contains a path separator (it would name a folder outside its own)"
    if value in (".", ".."):
        return f"'{value}' names a folder, not a name in it"
    return None


def check_path_names(cfg: DictConfig) -> None:
    """Every config value that becomes a file or folder name (``PATH_NAMES``) is one plain name:
    no ``/``, ``\\``, ``.`` or ``..``, so nothing is written outside the folder it belongs in."""
    for pattern, names in PATH_NAMES:
        section, _, rest = pattern.partition(".*.")
        parents = [(f"{section}.{child}", node) for child, node in (OmegaConf.select(cfg, section) or {}).items()] if rest else []
        found = [(f"{key}.{rest}", node.get(rest)) for key, node in parents if isinstance(node, DictConfig) and rest in node]
        if not rest:
            found = [(pattern, OmegaConf.select(cfg, pattern, default=None))]
        for key, value in found:
            problem = path_name_problem(value)
            if problem:
                raise ConfigError(f"{key}={value!r} names {names}: {problem}; use a plain name such as 'ml-1m'")


def uses_item_text(cfg: DictConfig) -> bool:
    """Whether the model reads the items' text (a node under ``model`` refers to ``item_text``)."""
    return "${item_text}" in OmegaConf.to_yaml(cfg.model)


def check_paths_and_text(cfg: DictConfig) -> None:
    """What ``recsys train`` and ``recsys prepare`` check before reading data, beyond the
    components' declared ranges: names used in paths, and the item text settings when the model
    reads text (:func:`~recsys_cli.models.text_encoder.check_item_text`)."""
    check_path_names(cfg)
    if uses_item_text(cfg) and "item_text" in cfg:
        check_item_text(OmegaConf.to_container(cfg.item_text, resolve=True))


def _trains(cfg: DictConfig) -> bool:
    """Whether the model of ``cfg`` is trained by gradient steps (count baselines are not)."""
    try:
        return bool(getattr(get_object(cfg.model._target_), "requires_training", True))
    except Exception:  # noqa: BLE001 - an unknown target: building it reports that
        return True


def validate_config(cfg: DictConfig) -> ScaleSet:
    """Checks that need no data: types and ranges of the main keys and of every component's
    arguments (:func:`check_components`), metric names, the checkpoint to resume from. Raises
    ConfigError (one line naming the key) on the first problem; returns the scales, parsed once
    (the run's data module computes their features)."""
    for section in REQUIRED_SECTIONS:
        if section not in cfg.keys():
            options = ", ".join(group_options(section)) if (CONF_DIR / section).is_dir() else ""
            hint = f"; choose one of its options ({options})" if options else ""
            raise ConfigError(f"the config has no '{section}' section (removed with ~{section}?){hint}")
    _int_at_least(OmegaConf.select(cfg, "seed"), "seed", 0)
    check_paths_and_text(cfg)
    check_components(cfg)
    overwrite = OmegaConf.select(cfg, "overwrite")
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite={overwrite!r}: use true (replace the run in hydra.run.dir) or false")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    _int_at_least(epochs, "trainer.max_epochs", -1, allow_none=True)
    if epochs == 0 and _trains(cfg):
        raise ConfigError(
            "trainer.max_epochs=0: the model would not be trained, and its metrics would be those of "
            "its random initial weights; use 1 or more (or -1: until early stopping)"
        )
    compile_model = OmegaConf.select(cfg, "trainer.compile", default=False)
    if not isinstance(compile_model, bool):
        raise ConfigError(f"trainer.compile={compile_model!r}: use true (torch.compile the model) or false")
    threads = OmegaConf.select(cfg, "trainer.threads", default=None)
    _int_at_least(threads, "trainer.threads", 1, allow_none=True)
    ks = cfg.metrics.ks
    if not isinstance(ks, ListConfig) or not ks:
        raise ConfigError(f"metrics.ks={ks!r}: use a non-empty list of cut-offs, e.g. [10, 20]")
    for i, k in enumerate(ks):
        _int_at_least(k, f"metrics.ks[{i}]", 1)
    ks = [int(k) for k in ks]
    if cfg.metrics.filter_seen not in (True, False, "auto"):
        raise ConfigError(f"metrics.filter_seen={cfg.metrics.filter_seen!r}: use true, false or auto")
    scales = ScaleSet.from_config(cfg.scales)
    check_task(cfg, scales)
    # selecting models on test metrics would leak the test set into the choice: validation only
    _check_ranking_metric("optimized_metric", cfg.optimized_metric, ks)
    logged = logged_metrics(cfg, ks, scales)
    for name, callback in cfg.callbacks.items():
        monitor = callback.get("monitor") if isinstance(callback, DictConfig) else None
        if monitor is not None and monitor not in logged:
            if str(monitor).startswith("val/"):
                _check_ranking_metric(f"callbacks.{name}.monitor", monitor, ks)
            others = [m for m in logged if not m.startswith("val/")]
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor!r} is not a metric this run logs; use val/<metric>@K "
                f"(e.g. val/ndcg@{10 if 10 in ks else ks[0]}) or one of {', '.join(others)}"
            )
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file; give a <run>/checkpoints/last.ckpt")
    init_from = OmegaConf.select(cfg, "init_from")
    if init_from is not None:
        if cfg.ckpt_path is not None:
            raise ConfigError(
                "init_from and ckpt_path are both set: ckpt_path resumes the same run, init_from starts a new "
                "one from another run's weights; keep one"
            )
        if not Path(init_from).is_file():
            raise ConfigError(f"init_from={init_from}: no such checkpoint file; give another run's checkpoints/best.ckpt")
    return scales


def check_against_data(cfg: DictConfig, spec: DataSpec, dataset: str, longest_targets: int | None = None) -> None:
    """Config checks that need the prepared data (still before any training). ``longest_targets``:
    the most training targets of one user (training events - 1)."""
    _check_bag_length(cfg, longest_targets)
    too_big = [k for k in cfg.metrics.ks if k > spec.num_items]
    if too_big:
        raise ConfigError(
            f"metrics.ks: K={too_big[0]} is larger than the catalogue ({spec.num_items} items); "
            f"use K <= {spec.num_items}"
        )
    for term, node in cfg.objective.items():
        negatives = node.get("num_negatives") if isinstance(node, DictConfig) else None
        if isinstance(negatives, int) and node.get("weight", 1.0) != 0 and negatives >= spec.num_items:
            # refused, not clamped: sampling as many negatives as there are items (with repeats)
            # costs more than the exact softmax over every item, and still misses some of them
            raise ConfigError(
                f"objective.{term}.num_negatives={negatives}: the catalogue has only {spec.num_items} items, so "
                f"sampling is slower than the exact softmax and less exact; use objective/{term}=full_ce "
                f"(every item) or num_negatives < {spec.num_items}"
            )
    timed = [s.name for s in spec.scales.windows if s.seconds is not None]
    if timed and not spec.has_time:
        raise ConfigError(
            f"scales: {timed} use durations but dataset '{dataset}' has no timestamps; "
            "use count windows ({last: N}) or null, e.g. scales=last_5_20_all"
        )


def _check_bag_length(cfg: DictConfig, longest_targets: int | None) -> None:
    """Mult-VAE encodes a user's whole history as one bag (the paper, and its evaluation here,
    which folds in every earlier event); a training case holds ``data.max_len`` targets, so a
    shorter ``max_len`` cuts a user into several partial bags (ceil(targets / max_len) cases,
    also that many times slower). The minimum is the longest user's training targets."""
    from recsys_cli.models.multvae import MultVAE

    try:
        bag_model = issubclass(get_object(str(cfg.model._target_)), MultVAE)
    except Exception:  # noqa: BLE001 - an unknown target: building it reports that
        return
    max_len = OmegaConf.select(cfg, "data.max_len")
    if not bag_model or longest_targets is None or not isinstance(max_len, int) or max_len >= longest_targets:
        return
    raise ConfigError(
        f"data.max_len={max_len}: model=multvae reads a user's whole history as one bag, but with this "
        f"max_len a training case holds {max_len} of the up to {longest_targets} training targets of a user "
        f"(its history is cut into partial bags); use data.max_len={longest_targets} or more (with scales=none)"
    )


def _flat(cfg: DictConfig, key: str) -> dict[str, Any]:
    """``{dotted key: value}`` for every leaf under ``key`` (resolved)."""
    node = OmegaConf.select(cfg, key)
    if not isinstance(node, DictConfig):
        return {key: OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else node}
    out: dict[str, Any] = {}
    for child in node:
        out.update(_flat(cfg, f"{key}.{child}"))
    return out


def check_resume(cfg: DictConfig) -> int:
    """Raise unless ``cfg.ckpt_path`` is a recsys checkpoint of a run with this model and data;
    returns the number of epochs the checkpoint has finished."""
    ckpt = load_run_checkpoint(cfg.ckpt_path, key="ckpt_path", resume=True)
    stored = OmegaConf.create(ckpt["recsys"]["config"])
    run = run_folder_of(cfg.ckpt_path)
    run_config = run / "config.yaml" if run is not None else None
    # point at the run's config.yaml only where there is one (a checkpoint copied out of its run
    # folder has none beside it)
    where = f"; the run's whole config: {run_config}" if run_config is not None and run_config.is_file() else ""
    for key in RESUME_MUST_MATCH:
        old, new = _flat(stored, key), _flat(cfg, key)
        if key == "task" and old == {"task": None} and str(new.get("task._target_")).endswith(".NextItem"):
            continue  # a run from before tasks existed trained by next item
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                raise ConfigError(
                    f"ckpt_path={cfg.ckpt_path}: the checkpoint's run had {name}={old.get(name)!r} but this "
                    f"config has {new.get(name)!r}; resume with the run's value ({name}={old.get(name)!r}){where}"
                )
    return int(ckpt.get("epoch", -1)) + 1
