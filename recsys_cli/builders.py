"""Build a run's parts from its config: data module, data spec, model, objective, module, trainer.

Each part is built from the ``_target_`` its YAML names (this module knows no particular dataset,
model or encoder); sizes known only after preparation come from the :class:`DataSpec`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from recsys_cli.compose import group_options
from recsys_cli.config_paths import CONF_DIR
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.scales import ScaleSet
from recsys_cli.data.datamodule import SequenceDataModule
from recsys_cli.data.prepare_stats import repeat_share
from recsys_cli.data.prepared_data import PreparedData
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.training.callbacks import AtomicCheckpointIO, RandomState
from recsys_cli.training.clock import TrainClock
from recsys_cli.training.divergence import DivergenceGuard
from recsys_cli.training.module import RecommenderModule
from recsys_cli.training.objective import Objective

log = logging.getLogger(__name__)

# metrics.filter_seen=auto filters seen items when fewer events than this repeat an item of the user
AUTO_FILTER_SEEN_MAX_REPEAT_SHARE = 0.05


# a node's keys that its parts read (``${model.KEY}``) and its ``_target_`` does not take: the
# short switches of the sequence model (conf/model/sequential.yaml)
SWITCHES_KEY = "_switches_"


def without_switches(node: Any) -> Any:
    """``node`` without the keys its ``_switches_`` lists (nor that list), resolved: what its
    ``_target_`` is built from (its parts have read the switches)."""
    if not isinstance(node, DictConfig) or SWITCHES_KEY not in node:
        return node
    dropped = {*node[SWITCHES_KEY], SWITCHES_KEY}
    resolved = OmegaConf.to_container(node, resolve=True)
    return OmegaConf.create({key: value for key, value in resolved.items() if key not in dropped})


def build(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with user errors as one-line ConfigErrors naming ``where``.

    The keys a node lists in ``_switches_`` are left out (:func:`without_switches`). Keyword values that are not config values (a :class:`DataSpec`, a :class:`ScaleSet`) are passed
    to the constructor as they are (Hydra would turn a dataclass into a config node). A RecsysError
    raised by the constructor passes through unchanged; a wrong argument name or type (TypeError)
    or a setting Lightning rejects (MisconfigurationException, e.g. a GPU accelerator on a machine
    without one) becomes a ConfigError; anything else is a bug and propagates.
    """
    objects = {k: v for k, v in kwargs.items() if isinstance(v, (DataSpec, ScaleSet))}
    plain = {k: v for k, v in kwargs.items() if k not in objects}
    node = without_switches(node)
    try:
        if not objects:
            return instantiate(node, **plain)
        return instantiate(node, _partial_=True, **plain)(**objects)
    except (InstantiationException, TypeError, MisconfigurationException) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if isinstance(cause, RecsysError):
            raise cause from None
        if isinstance(cause, (TypeError, MisconfigurationException)):
            target = node.get("_target_") if isinstance(node, DictConfig) else None
            raise ConfigError(f"{where} ({target}): {cause}; check the keys under {where}") from None
        raise


def build_datamodule(cfg: DictConfig, scales: ScaleSet | None = None) -> SequenceDataModule:
    """The data module (it computes the scales' features); ``scales``: ``cfg.scales`` as the run's
    checks parsed it (parsed here when not given)."""
    if scales is None:
        scales = ScaleSet.from_config(cfg.scales)
    return build(cfg.data, "data", _recursive_=True, scales=scales)


def model_option(cfg: DictConfig) -> str:
    """The ``model=`` option whose file builds ``cfg.model``'s class (``multvae``...), for messages;
    the class's path when no option file names it."""
    target = str(cfg.model.get("_target_"))
    for option in group_options("model"):
        node = OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml")
        if OmegaConf.select(node, "_target_") == target or OmegaConf.select(node, "model._target_") == target:
            return option
    return target


def _model_class(cfg: DictConfig) -> type | None:
    """The class ``cfg.model`` builds (None for a target that does not import: building it says so)."""
    try:
        return get_class(str(cfg.model.get("_target_")))
    except Exception:  # noqa: BLE001 - a wrong target is reported by build(), with its config key
        return None


def build_model(cfg: DictConfig, spec: DataSpec, objective: Objective | None = None) -> Any:
    """The model of ``cfg.model`` for the prepared data described by ``spec``.

    With an ``objective``: a model whose constructor takes ``outputs`` is asked for the auxiliary
    outputs the terms read (it builds the parts that give them), and every term's outputs must be
    among the model's ``outputs`` (one line naming the term otherwise)."""
    needed = sorted(objective.required_outputs()) if objective is not None else []
    model_class = _model_class(cfg)
    takes = model_class is not None and "outputs" in inspect.signature(model_class).parameters
    model = build(cfg.model, "model", spec=spec, **({"outputs": needed} if needed and takes else {}))
    if objective is not None:
        objective.check_outputs(getattr(model, "outputs", frozenset()), model_option(cfg))
    return model


def build_objective(cfg: DictConfig, spec: DataSpec | None = None) -> Objective:
    """The objective: every term of ``cfg.objective`` (name -> term config with a ``weight``),
    bound to the data it trains on (``spec``: e.g. the items held out of training)."""
    terms = {str(name): build(node, f"objective.{name}") for name, node in cfg.objective.items()}
    if spec is not None:
        for term in terms.values():
            term.bind(spec)
    return Objective(terms)


def resolve_filter_seen(setting: bool | str, data: PreparedData) -> bool:
    """``metrics.filter_seen``: true / false as given; ``auto`` filters the items a user already had
    unless users repeat items (shop logs: viewed again, carted, bought), where filtering would make
    every repeated target impossible to hit."""
    if setting != "auto":
        return bool(setting)
    share = data.stats.get("repeat_share")  # a preparation statistic, stored with the cache
    if share is None:  # data built without preparation (e.g. by hand)
        share = repeat_share(data)
    filtered = share < AUTO_FILTER_SEEN_MAX_REPEAT_SHARE
    log.info(
        "metrics.filter_seen=auto: %.1f%% of events repeat an item of the user, so seen items are %s",
        100 * share,
        "filtered from the ranking" if filtered else "kept in the ranking (set metrics.filter_seen=true to filter)",
    )
    return filtered


def is_trained(cfg: DictConfig) -> bool:
    """Whether ``cfg.model`` trains by gradient (count baselines are fitted instead)."""
    model_class = _model_class(cfg)
    return model_class is None or bool(getattr(model_class, "requires_training", True))


def build_module(cfg: DictConfig, dm: SequenceDataModule, run_info: dict) -> RecommenderModule:
    """The LightningModule of ``cfg`` on the (loaded) data of ``dm``: the objective first (its
    terms say which outputs the model must give and which metrics evaluation adds), then the model."""
    data = dm.load()
    spec = dm.spec()
    objective = build_objective(cfg, spec) if is_trained(cfg) else None
    model = build_model(cfg, spec, objective)
    if objective is not None and OmegaConf.select(cfg, "trainer.compile", default=False):
        # in place (nn.Module.compile): the weights keep their names, checkpoints are unchanged;
        # dynamic shapes, since batches vary in size and in length (trimmed padding)
        model.compile(dynamic=True)
    return RecommenderModule(
        model=model,
        objective=objective,
        optimizer=build(cfg.optimizer, "optimizer"),
        ks=cfg.metrics.ks,
        num_items=spec.num_items,
        filter_seen=resolve_filter_seen(cfg.metrics.filter_seen, data),
        run_info=run_info,
        item_train_counts=spec.item_train_counts,
        evaluations=objective.evaluations(spec) if objective is not None else (),
    )


def trainer_settings(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer`` without the keys that are ours, not the Trainer's (``compile``: see
    :func:`build_module`; ``threads``: see :func:`apply_threads`)."""
    settings = cfg.trainer.copy()
    with open_dict(settings):
        settings.pop("compile", None)
        settings.pop("threads", None)
    return settings


def apply_threads(cfg: DictConfig) -> None:
    """``trainer.threads``: the CPU threads of this process's tensor operations, when set."""
    threads = OmegaConf.select(cfg, "trainer.threads", default=None)
    if threads is not None:
        torch.set_num_threads(int(threads))


def build_trainer(cfg: DictConfig, run_dir: Path, with_callbacks: bool = True) -> pl.Trainer:
    """The Lightning trainer of ``cfg.trainer`` with the configured callbacks and loggers.

    Not choices of the config, so added here: checkpoints are written atomically and read
    weights-only (:class:`AtomicCheckpointIO`), every checkpoint carries the random generators'
    state that makes a resumed run repeat the uninterrupted one (:class:`RandomState`), and a
    run whose loss, gradients or weights stop being finite stops (:class:`DivergenceGuard`), and
    the training seconds of every epoch are logged for time to quality (:class:`TrainClock`).
    """
    callbacks = [build(c, f"callbacks.{name}") for name, c in cfg.callbacks.items()] if with_callbacks else []
    callbacks += [RandomState(), DivergenceGuard(), TrainClock()] if with_callbacks else []
    loggers = [build(c, f"logger.{name}") for name, c in cfg.logger.items()]
    return build(
        trainer_settings(cfg),
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
    )


def close_loggers(trainer: pl.Trainer | None, status: str) -> None:
    """Flush and close every logger, so that the next job of a sweep starts a fresh run (wandb
    keeps one global run per process otherwise)."""
    if trainer is None:
        return
    for logger in trainer.loggers:
        try:
            logger.finalize(status)
        except Exception as err:  # noqa: BLE001 - a logger that cannot flush must not hide the result
            log.warning("Could not finalize logger %s: %s", type(logger).__name__, err)
        finish: Callable | None = getattr(getattr(logger, "_experiment", None), "finish", None)
        if finish is not None:
            finish()


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The path kept by the monitoring ModelCheckpoint (the first one with a ``monitor``), if it is
    a file in that callback's own folder: what this run wrote, or copied there when it resumed.
    A path from anywhere else (e.g. restored from a checkpoint's callback state) is never loaded."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path and callback.dirpath:
            path = Path(callback.best_model_path)
            if path.is_file() and path.resolve().parent == Path(callback.dirpath).resolve():
                return callback.best_model_path
    return None
