"""``recsys compare``: is run B really better than run A? Paired differences over test cases.

Every run's per-case file (:mod:`recsys_cli.analysis.cases`) gives each test case's metric value;
two runs of the same data and split have the same cases, so each case gives a paired difference
``B - A``. For every metric this module reports the mean difference (exactly the difference of
the runs' metrics), a 95% paired-bootstrap confidence interval (the cases are resampled with
replacement, the same resamples for every metric and run, a fixed seed; percentile interval) and
the p-value of a paired t-test.

Why the t-test: it tests the mean difference, which is the reported quantity (a metric is a mean
over cases), and with hundreds of cases the mean is close to normal whatever the per-case values
look like (mostly zeros and a few hits). The Wilcoxon signed-rank test, also reported in the JSON
output, tests a shift of the median of the non-zero differences, which can disagree with the
sign of the mean difference. With more than two runs every run is compared with the first, and
the p-values of each metric are Holm-corrected over those comparisons (step-down: the i-th
smallest of m p-values is multiplied by ``m - i + 1``, then made monotone).

A contender is a run folder (its ``test_cases.parquet``, or its newest evaluation's), a per-case
file, a sweep folder (each of its runs, in job order) or several of these joined by commas,
whose per-case values are averaged (seeds of one configuration: a paired comparison of the
configurations' seed-averaged metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars

from recsys_cli.analysis.cases import case_metric, find_cases, parse_metric, read_cases
from recsys_cli.errors import RecsysError
from recsys_cli.io import write_json_atomic

# resampled cases held at a time by the bootstrap (int64 indices: 2^24 = 128 MiB)
BOOTSTRAP_ELEMENTS = 2**24


@dataclass
class Contender:
    """One side of a comparison: its name, the per-case files it averages, and its cases."""

    name: str
    files: list[Path]
    keys: polars.DataFrame  # user, item of every case (the same in every file)
    ranks: np.ndarray  # [files, cases] 0-based ranks
    ks: list[int] = field(default_factory=list)

    def values(self, metric: str) -> np.ndarray:
        """[cases] the metric per case, averaged over the contender's files (runs)."""
        name, k = parse_metric(metric)
        return np.mean([case_metric(r, name, k) for r in self.ranks], axis=0)


def _sweep_jobs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def expand(argument: str) -> list[tuple[str, list[Path]]]:
    """The contenders one command-line argument names: (name, per-case files) each.

    A sweep folder gives one contender per job; ``A,B,C`` one contender averaging them."""
    parts = [p for p in str(argument).split(",") if p]
    if len(parts) > 1:
        files = [file for part in parts for _, group in expand(part) for file in group]
        return [(argument, files)]
    path = Path(parts[0]) if parts else Path(argument)
    if not path.exists():
        raise RecsysError(f"{path}: no such run folder, sweep folder or per-case file")
    if path.is_dir() and not (path / "metrics.json").exists() and _sweep_jobs(path):
        return [(f"{path}/{job.name}", [_cases_of(job)]) for job in _sweep_jobs(path)]
    return [(str(path), [_cases_of(path)])]


def _cases_of(run: Path) -> Path:
    found = find_cases(run)
    if found is None:
        raise RecsysError(
            f"{run}: no per-case test results (test_cases.parquet); runs of older versions get them "
            f"with recsys evaluate ckpt={run}/checkpoints/best.ckpt"
        )
    return found


def load_contender(name: str, files: list[Path]) -> Contender:
    """Read the per-case files of one contender; they must hold the same cases."""
    keys, ranks, ks = None, [], None
    for file in files:
        frame, meta = read_cases(file)
        these = frame.select(["user", "item"])
        if keys is None:
            keys, ks = these, [int(k) for k in meta.get("ks") or []]
        else:
            _same_cases(keys, these, files[0], file)
        ranks.append(frame["rank"].to_numpy())
    return Contender(name, files, keys, np.stack(ranks), ks or [10])


def _same_cases(a: polars.DataFrame, b: polars.DataFrame, where_a: Any, where_b: Any) -> None:
    if a.shape != b.shape or not a.equals(b):
        differ = abs(len(a) - len(b)) if a.shape != b.shape else int((a != b).select(polars.any_horizontal(polars.all())).sum().item())
        raise RecsysError(
            f"{where_b} was tested on other cases than {where_a} ({len(b):,} vs {len(a):,} cases, "
            f"{differ:,} differ): compare runs of the same data and split"
        )


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[resamples, M] the means of ``values`` ([cases, M]) over cases resampled with replacement
    (a fixed ``seed``; the same resamples for every column).

    Each resample is drawn as ``n`` case indices, turned into how many times each case was drawn
    ([chunk, n] counts), so that its means are one matrix product ``counts @ values / n``; chunks
    of resamples keep the counts under :data:`BOOTSTRAP_ELEMENTS` whatever the number of cases."""
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_ELEMENTS // max(n, 1))
    out = np.empty((resamples, values.shape[1]))
    for start in range(0, resamples, chunk):
        size = min(resamples, start + chunk) - start
        idx = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)
        out[start : start + size] = counts @ values / n
    return out


def paired_tests(diff: np.ndarray) -> tuple[float, float]:
    """(paired t-test p, Wilcoxon signed-rank p) of per-case differences ``diff`` ([cases]);
    1.0 when every difference is 0 (nothing to test)."""
    from scipy import stats

    if not np.any(diff):
        return 1.0, 1.0
    if np.ptp(diff) == 0:  # a constant, non-zero difference: certain
        return 0.0, 0.0
    t_p = float(stats.ttest_1samp(diff, 0.0).pvalue)
    w_p = float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
    return t_p, w_p


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down correction of ``pvalues`` (family-wise error); same order as given."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def default_metrics(contenders: list[Contender]) -> list[str]:
    """NDCG, HR and MRR at 10, then at every other K of the first run."""
    ks = [10] + sorted(set(contenders[0].ks) - {10})
    return [f"{name}@{k}" for k in ks for name in ("ndcg", "hr", "mrr")]


def compare(
    arguments: list[str],
    metrics: list[str] | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare every contender of ``arguments`` with the first one; returns the result (what
    ``output=FILE.json`` holds): per comparison and metric the two means, the difference, its
    bootstrap interval and the p-values (Holm-corrected when there are several comparisons)."""
    named = [item for argument in arguments for item in expand(argument)]
    if len(named) < 2:
        raise RecsysError("recsys compare needs at least two runs (or a sweep folder with two jobs or more)")
    contenders = [load_contender(name, files) for name, files in named]
    base = contenders[0]
    for other in contenders[1:]:
        _same_cases(base.keys, other.keys, base.name, other.name)
    metrics = list(metrics) if metrics else default_metrics(contenders)
    for metric in metrics:
        parse_metric(metric)
    values = {metric: np.stack([c.values(metric) for c in contenders], axis=1) for metric in metrics}
    stacked = np.concatenate([values[m] for m in metrics], axis=1)  # [cases, metrics * contenders]
    boot = bootstrap_means(stacked, resamples, seed).reshape(resamples, len(metrics), len(contenders))
    alpha = (1.0 - confidence) / 2.0
    rows = []
    for j, other in enumerate(contenders[1:], start=1):
        for i, metric in enumerate(metrics):
            diff = values[metric][:, j] - values[metric][:, 0]
            boot_diff = boot[:, i, j] - boot[:, i, 0]
            low, high = np.quantile(boot_diff, [alpha, 1.0 - alpha])
            t_p, w_p = paired_tests(diff)
            rows.append({
                "run": other.name, "metric": metric, "base": float(values[metric][:, 0].mean()),
                "value": float(values[metric][:, j].mean()), "difference": float(diff.mean()),
                "ci_low": float(low), "ci_high": float(high), "p_ttest": t_p, "p_wilcoxon": w_p,
            })  # fmt: skip
    comparisons = len(contenders) - 1
    for metric in metrics:
        own = [row for row in rows if row["metric"] == metric]
        corrected = holm([row["p_ttest"] for row in own]) if comparisons > 1 else [row["p_ttest"] for row in own]
        for row, p in zip(own, corrected, strict=True):
            row["p_holm"] = p
    return {
        "base": base.name,
        "runs": [{"name": c.name, "files": [str(f) for f in c.files]} for c in contenders],
        "cases": len(base.keys),
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
        "test": "paired t-test" + (", Holm-corrected over the comparisons with the first run" if comparisons > 1 else ""),
        "rows": rows,
    }


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as a text table: one block per compared run."""
    level = round(result["confidence"] * 100)
    p_name = "p (Holm)" if len(result["runs"]) > 2 else "p"
    lines = [
        f"Base: {result['base']} ({result['cases']:,} test cases; {result['resamples']:,} bootstrap "
        f"resamples, seed {result['seed']}; p: {result['test']})"
    ]
    for run in result["runs"][1:]:
        lines += ["", f"{run['name']} vs base", f"{'metric':<10} {'base':>8} {'run':>8} {'diff':>9}  {f'{level}% CI':<21} {p_name:>9}"]
        for row in (r for r in result["rows"] if r["run"] == run["name"]):
            ci = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
            star = " *" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
            lines.append(
                f"{row['metric']:<10} {row['base']:8.4f} {row['value']:8.4f} {row['difference']:+9.4f}  {ci:<21} "
                f"{row['p_holm']:9.2g}{star}"
            )
    lines.append(f"\n* the {level}% interval excludes 0")
    return "\n".join(lines)


def run_compare(cfg: Any) -> dict[str, Any]:
    """``recsys compare`` with its config (``runs``, ``metrics``, ``resamples``, ``seed``,
    ``confidence``, ``output``): prints the table, writes ``output`` when given."""
    runs = [str(r) for r in cfg.runs or []]
    if not isinstance(cfg.resamples, int) or cfg.resamples < 100:
        raise RecsysError(f"resamples={cfg.resamples!r}: use an integer of at least 100 (e.g. 10000)")
    if not 0.5 < float(cfg.confidence) < 1.0:
        raise RecsysError(f"confidence={cfg.confidence!r}: use a level between 0.5 and 1, e.g. 0.95")
    metrics = [str(m) for m in cfg.metrics] if cfg.metrics else None
    result = compare(runs, metrics, int(cfg.resamples), int(cfg.seed), float(cfg.confidence))
    print(format_comparison(result))
    if cfg.output:
        write_json_atomic(Path(str(cfg.output)), result)
        print(f"Written: {cfg.output}")
    return result
