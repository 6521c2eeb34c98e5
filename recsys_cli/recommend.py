"""``recsys recommend``: the top-K of a trained run for its users, or for an ad-hoc history.

Every user's query is their whole known history (:mod:`recsys_cli.data.queries`), scored by the
model exactly as evaluation scores a case (same batch fields, window features, ``last_only``
state, seen-item filter) and ranked as evaluation ranks (score descending, ties by item index).
Users are scored ``batch_size`` at a time and their rows streamed to a Parquet file (a temporary
sibling renamed into place at the end), so memory does not grow with the number of users.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys_cli.data.queries import QueryCases, adhoc_history, find_ids, whole_history_cases
from recsys_cli.errors import ConfigError
from recsys_cli.io import atomic_write
from recsys_cli.runs import LoadedRun
from recsys_cli.training.metrics import mask_seen
from recsys_cli.training.module import EVAL_SCORE_ELEMENTS

# unknown raw ids printed one line each, up to this many (then one line with the count)
SHOWN_UNKNOWN = 100


def rank_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items of each row of ``scores`` [b, N + 1] (column 0 and filtered items
    ``-inf``) in evaluation's order, score descending then item index ascending: (scores [b, k],
    items [b, k]); fewer than ``k`` recommendable items leave item 0 with score ``-inf``."""
    k = min(k, scores.shape[1] - 1)
    values, items = torch.topk(scores, k, dim=1)
    # a row whose k-th score is tied with an item left out, or with another in the list, is
    # ordered exactly by a stable sort of the whole row (rare with float scores)
    kth = values[:, -1:]
    unclear = (scores == kth).sum(dim=1) > 1
    for row in torch.nonzero(unclear).flatten().tolist():
        order = torch.sort(scores[row], descending=True, stable=True).indices[:k]
        values[row], items[row] = scores[row, order], order
    items = torch.where(values > float("-inf"), items, torch.zeros_like(items))
    return values, items


@torch.no_grad()
def score_cases(run: LoadedRun, batch: dict[str, torch.Tensor], filter_seen: bool, k: int, device: torch.device):
    """(scores [B, k], items [B, k]) of a batch of query (or evaluation) cases: the model's
    newest state against every item, seen items filtered when asked, ranked by :func:`rank_top_k`."""
    batch = {name: value.to(device) for name, value in batch.items()}
    output = run.module.model(batch, None, last_only=True)
    best = []
    for rows, scores in output.last_score_chunks(EVAL_SCORE_ELEMENTS):
        scores = mask_seen(scores, batch["seen"][rows]) if filter_seen else scores
        scores[:, 0] = float("-inf")
        best.append(rank_top_k(scores.float(), k))
    return torch.cat([v for v, _ in best]).cpu(), torch.cat([i for _, i in best]).cpu()


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when this machine has one, else the CPU; ``cpu`` / ``cuda``: that one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r}: use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: this machine has no GPU; use device=cpu or auto")
    return torch.device(name)


def read_user_ids(users: object) -> list[str]:
    """Raw user ids from ``users=``: a list, or a file (one id per line; a .csv or .parquet file
    with a ``user_id`` column)."""
    if isinstance(users, list | tuple):
        return [str(u) for u in users]
    path = Path(str(users))
    if not path.is_file():
        raise ConfigError(f"users={users}: no such file; give a file of user ids (one per line) or a list, users=[id1,id2]")
    if path.suffix in (".csv", ".parquet"):
        import polars as pl

        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=0)
        if "user_id" not in frame.columns:
            raise ConfigError(f"users={path}: no user_id column (columns: {', '.join(frame.columns)})")
        return [str(u) for u in frame.get_column("user_id").to_list()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def say_unknown(kind: str, unknown: list[str], total: int) -> None:
    """One line per unknown raw id (the first :data:`SHOWN_UNKNOWN`), then the count, on stderr."""
    for raw in unknown[:SHOWN_UNKNOWN]:
        print(f"Unknown {kind} id {raw!r}: not in the run's data, skipped", file=sys.stderr)
    if len(unknown) > SHOWN_UNKNOWN:
        print(f"... and {len(unknown) - SHOWN_UNKNOWN} more unknown {kind} ids", file=sys.stderr)
    if unknown:
        print(f"Skipped {len(unknown)} of {total} {kind} ids (unknown)", file=sys.stderr)


@dataclass
class RecommendationRows:
    """What a run knows to name its items: raw ids (as strings) and titles (None if unknown)."""

    item_ids: np.ndarray  # [N + 1] object: raw id of item index i (index 0: None)
    titles: np.ndarray | None  # [N + 1] object, or None when the data has no titles

    @classmethod
    def of(cls, run: LoadedRun) -> RecommendationRows:
        ids = np.array([None, *run.item_vocab], dtype=object)
        titles = run.data.item_titles
        return cls(ids, None if titles is None else np.array([None, *titles], dtype=object))


def batches(cases: QueryCases, batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(case ids, batch) of consecutive cases, in order."""
    for start in range(0, len(cases), batch_size):
        ids = np.arange(start, min(start + batch_size, len(cases)))
        yield ids, cases[ids]


def recommend_users(
    run: LoadedRun, users: np.ndarray, k: int, filter_seen: bool, batch_size: int, output: Path, device: torch.device
) -> int:
    """Write the top-``k`` of each user index of ``users`` to ``output`` (Parquet: ``user_id``,
    ``rank`` 1..k, ``item_id``, ``title`` when the data has titles, ``score``), streamed batch by
    batch to a temporary sibling renamed into place. Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    names = RecommendationRows.of(run)
    user_ids = np.array(run.user_vocab, dtype=object)
    cases = whole_history_cases(run.dm, users)
    fields = [("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string())]
    fields += [("title", pa.string())] if names.titles is not None else []
    schema = pa.schema([*fields, ("score", pa.float32())])
    written = 0

    def write(tmp: Path) -> None:
        nonlocal written
        with pq.ParquetWriter(tmp, schema) as writer:
            bar = tqdm(total=len(cases), unit="user", desc="recommend", file=sys.stderr, mininterval=1.0)
            for ids, batch in batches(cases, batch_size):
                scores, items = score_cases(run, batch, filter_seen, k, device)
                keep = (items > 0).numpy()  # [b, k]: a user with fewer recommendable items gets fewer rows
                rows = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
                columns = {
                    "user_id": np.repeat(user_ids[users[ids]], items.shape[1]).reshape(items.shape)[keep],
                    "rank": rows[keep].astype(np.int32),
                    "item_id": names.item_ids[items.numpy()][keep],
                }
                if names.titles is not None:
                    columns["title"] = names.titles[items.numpy()][keep]
                columns["score"] = scores.numpy()[keep].astype(np.float32)
                writer.write_table(pa.table(columns, schema=schema))
                written += int(keep.sum())
                bar.update(len(ids))
            bar.close()

    atomic_write(output, write)
    return written


def user_indices(run: LoadedRun, users: object) -> tuple[np.ndarray, int]:
    """The user indices to recommend for (every user for ``users=null``), and how many ids were
    asked for; unknown ids are said, one line each."""
    if users is None:
        return np.arange(run.data.num_users, dtype=np.int64), run.data.num_users
    raw = read_user_ids(users)
    found, unknown = find_ids(run.user_vocab, raw)
    say_unknown("user", unknown, len(raw))
    return found, len(raw)


def recommend_history(
    run: LoadedRun, items: list, times: list | None, event_types: list | None, k: int, filter_seen: bool, device: torch.device
) -> list[dict]:
    """The top-``k`` of one ad-hoc history (raw item ids, oldest first) as rows ``rank``,
    ``item_id``, ``title`` (when known), ``score``; unknown item ids are said and skipped."""
    query = adhoc_history(run.dm, items, times, event_types)
    say_unknown("item", query.unknown, len(items))
    for note in query.notes:
        print(f"Note: {note}", file=sys.stderr)
    names = RecommendationRows.of(run)
    scores, best = score_cases(run, query.cases[np.array([0])], filter_seen, k, device)
    rows = []
    for rank, (item, score) in enumerate(zip(best[0].tolist(), scores[0].tolist(), strict=True), start=1):
        if item == 0:
            break
        row = {"rank": rank, "item_id": names.item_ids[item]}
        if names.titles is not None:
            row["title"] = names.titles[item]
        rows.append({**row, "score": round(float(score), 6)})
    return rows


def print_json_lines(rows: list[dict]) -> None:
    """One JSON object per line on stdout."""
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
