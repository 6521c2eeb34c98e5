"""NDCG@10 of oracles that know the synthetic log's planted structure: the ceiling for any model.

    python scripts/synthetic_ceiling.py                            # the default synthetic config
    python scripts/synthetic_ceiling.py data.reader.num_users=20000  # any data override

What each oracle knows: recsys_cli/data/synthetic_oracle.py.
"""

from __future__ import annotations

import argparse

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recsys_cli.config_paths import CONF_DIR
from recsys_cli.data.synthetic_oracle import evaluate_oracles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config (data.*)")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", *args.overrides])
    result = evaluate_oracles(
        instantiate(cfg.data.reader), int(cfg.data.preparation.min_user_events)
    )
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


if __name__ == "__main__":
    main()
