"""NDCG@10 of oracles that know the synthetic log's planted structure: the ceiling for any model.

    python scripts/synthetic_ceiling.py                            # the default synthetic config
    python scripts/synthetic_ceiling.py data.reader.num_users=20000  # any data override
    python scripts/synthetic_ceiling.py --grid data.reader.session_focus=0.3,0.9 ...

What each oracle knows: scripts/synthetic_oracle.py. With ``--grid``, overrides may list
several comma-separated values; every combination is generated and gets one row saying what
combining scales can add at most: NDCG@10 of the oracle that infers the session and knows mission
(day scale) and taste (month / all history), against the better of knowing only one of them.
"""

from __future__ import annotations

import argparse
import itertools

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from synthetic_oracle import evaluate_oracles  # scripts/, next to this file

from recsys_cli.config_paths import CONF_DIR


def oracles(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", *overrides])
    return evaluate_oracles(instantiate(cfg.data.reader), int(cfg.data.preparation.min_user_events))


def report(result: dict) -> None:
    go_on, closing, new = result["kinds"]
    print(
        f"{result['users']} test users; test targets: {go_on:.1%} go on the session, "
        f"{closing:.1%} are its closing buy, {new:.1%} open a new session; "
        f"a new session stays in its mission: {result['stay']:.1%}"
    )
    print("| oracle | NDCG@10 | HR@10 | mean log p(target) |")
    print("|---|---|---|---|")
    for name, m in result["oracles"].items():
        print(f"| {name} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {m['loglik']:.3f} |")


def grid(overrides: list[str]) -> None:
    """One row per combination of the comma-separated override values."""
    split = [o.partition("=")[::2] for o in overrides]  # (key, "v1,v2,...")
    choices = [[f"{key}={v}" for v in values.split(",")] for key, values in split]
    keys = [key.rsplit(".", 1)[-1] for key, _ in split]
    names = ["session only", "+ taste", "+ mission", "+ both", "both / best one", "windows / last 50"]
    print("| " + " | ".join([*keys, *names]) + " |")
    print("|" + "---|" * (len(keys) + len(names)))
    for combo in itertools.product(*choices):
        o = {k: v["ndcg@10"] for k, v in oracles(list(combo))["oracles"].items()}
        one = max(o["inferred - taste"], o["inferred - mission"])
        windows = o["plug-in: day + all history"] / o["plug-in: last 50 events"] - 1
        cells = [c.partition("=")[2] for c in combo]
        cells += [f"{o[k]:.4f}" for k in ("inferred - taste - mission", "inferred - mission", "inferred - taste")]
        cells += [f"{o['inferred']:.4f}", f"{o['inferred'] / one - 1:+.1%}", f"{windows:+.1%}"]
        print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config (data.*)")
    parser.add_argument("--grid", action="store_true", help="one row per combination of a,b,c values")
    args = parser.parse_args()
    if args.grid:
        grid(args.overrides)
    else:
        report(oracles(args.overrides))


if __name__ == "__main__":
    main()
