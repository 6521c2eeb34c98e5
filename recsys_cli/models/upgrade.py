"""What the config and the weights of a sequence model saved before its parts become now.

Before the parts (:mod:`recsys_cli.models.parts`), the recommender built its switches itself from
flat keys (``context``, ``user_embedding``, ``scoring``, ``latent``...) and named their weights
after them; ``model/item=id_text`` chose its fusion by a string. :func:`upgrade_model_config` gives
such a config the part nodes those keys meant (the flat keys stay, as the switches the parts read)
and :func:`upgrade_weight_name` renames the weights to where the parts keep them. The model rebuilt
is the one trained: same modules, same weights, applied in the same order. (One exception: with
both ``context_request_time`` and ``user_embedding`` on, the request's time is now added to the
state before the user vector, not after; the two sums differ in the last bits of a float.)
"""

from __future__ import annotations

import copy
from typing import Any

SEQUENCE_MODEL = "recsys_cli.models.recommender.SequenceRecommender"
ID_TEXT_ITEMS = "recsys_cli.models.text_items.IdTextItems"
PARTS = "recsys_cli.models.parts"

# the switches and the defaults the recommender gave them when a config had no such key (init_std:
# None, the initialisation before the key existed; it only sets initial weights, which a checkpoint
# replaces)
SWITCH_DEFAULTS = {
    "init_std": None,
    "use_event_types": True,
    "use_categories": False,
    "context": [],
    "context_request_time": False,
    "user_embedding": False,
    "user_dropout": 0.1,
}
ID_TEXT_FUSIONS = {
    "add": "recsys_cli.models.item_fusion.AddIdText",
    "concat": "recsys_cli.models.item_fusion.ConcatIdText",
    "gate": "recsys_cli.models.item_fusion.GateIdText",
}
# old weight name (prefix, in the model) -> new
WEIGHT_RENAMES = {
    "type_embedding.": "inputs.event_types.table.",
    "category_embedding.": "inputs.categories.table.",
    "context.": "state.context.",
    "user_embedding.": "state.user.embedding.",
    "latent.": "state.latent.",
    "behaviour_head.": "heads.behaviour_logits.linear.",
    "log_scale": "scoring.log_scale",
    "fixed_log_scale": "scoring.fixed_log_scale",
    "items.mix.": "items.fusion.linear.",
}


def _part(target: str, **settings: Any) -> dict[str, Any]:
    return {"_target_": f"{PARTS}.{target}", "_partial_": True, **settings}


def upgrade_model_config(model: dict[str, Any]) -> dict[str, Any]:
    """A sequence model's config node (``config["model"]``) as this version writes it; any other
    model's, and one already upgraded, as it is."""
    model = copy.deepcopy(model)
    item = model.get("item")
    if isinstance(item, dict) and item.get("_target_") == ID_TEXT_ITEMS and isinstance(item.get("fusion", "add"), str):
        item["fusion"] = {"_target_": ID_TEXT_FUSIONS[item.get("fusion", "add")], "_partial_": True}
    if model.get("_target_") != SEQUENCE_MODEL or "state" in model:
        return model
    for key, default in SWITCH_DEFAULTS.items():
        model.setdefault(key, copy.deepcopy(default))
    model["_switches_"] = list(SWITCH_DEFAULTS)
    context, std = model["context"], model["init_std"]
    model["inputs"] = {
        "event_types": _part("side.EventTypes", use=model["use_event_types"], context=context, init_std=std),
        "categories": _part("side.Categories", use=model["use_categories"], context=context, init_std=std),
    }
    model["state"] = {
        "context": _part(
            "context.ContextFeatures", features=context, request_time=model["context_request_time"], init_std=std
        ),
        "user": _part("user.UserVector", use=model["user_embedding"], dropout=model["user_dropout"]),
    }
    latent = model.pop("latent", None)
    if isinstance(latent, dict) and latent.get("_target_"):
        model["state"]["latent"] = {**latent, "_target_": f"{PARTS}.latent.VariationalLatent"}
    model["heads"] = {"behaviour_logits": _part("behaviour.BehaviourHead")}
    scoring = model.pop("scoring", "dot")
    temperature, learn = model.pop("temperature", 0.1), model.pop("learn_temperature", True)
    model["scoring"] = (
        {"_target_": "recsys_cli.models.scoring.CosineScoring", "_partial_": True, "temperature": temperature,
         "learn_temperature": learn}
        if scoring == "cosine"
        else {"_target_": "recsys_cli.models.scoring.DotScoring", "_partial_": True}
    )  # fmt: skip
    return model


def upgrade_weight_name(name: str) -> str:
    """The name a sequence model's weight ``name`` (relative to the model) has now."""
    for old, new in WEIGHT_RENAMES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name
