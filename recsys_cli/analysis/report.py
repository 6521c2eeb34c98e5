"""``recsys report PATH... [output=DIR]``: the pictures of any set of runs and sweeps, redrawn into
one folder, and one self-contained HTML page (the pictures embedded) with their summary table.

A PATH is a run folder (one with ``metrics.json``) or a sweep folder (numbered job folders): a
run gets ``DIR/<name>/*.png`` (:func:`recsys_cli.analysis.plots.draw_run`), a sweep its chart
``DIR/<name>/sweep.png``, its mean and standard deviation per configuration when it has seeds, and
each job's pictures in ``DIR/<name>/<job>/``. ``DIR/summary.csv`` has one row per run;
``DIR/report.html`` shows the table and every picture.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from recsys_cli.analysis import plots
from recsys_cli.analysis.sweeps import format_groups, seed_groups, sweep_rows, write_rows_csv
from recsys_cli.errors import RecsysError
from recsys_cli.io import write_text_atomic

SUMMARY_METRICS = ("val/ndcg@10", "test/ndcg@10", "test/hr@10", "test/mrr@10")


def _jobs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def run_row(name: str, run: Path) -> dict[str, Any]:
    """One summary row of a run folder: its name, status, epochs and headline metrics."""
    path = run / "metrics.json"
    report = json.loads(path.read_text()) if path.is_file() else {"status": "failed", "error": "no metrics.json"}
    row: dict[str, Any] = {"run": name, "status": report.get("status", "ok"), "epochs": report.get("epochs")}
    for metric in SUMMARY_METRICS:
        stage, _, key = metric.partition("/")
        row[metric] = (report.get(stage) or {}).get(key)
    return row


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def build_report(paths: list[str], out_dir: Path) -> Path:
    """Draw every picture of ``paths`` into ``out_dir`` and write ``summary.csv`` and
    ``report.html`` there; returns the page."""
    if not paths:
        raise RecsysError("recsys report needs at least one run or sweep folder: recsys report RUN [RUN ...] [output=DIR]")
    out_dir = Path(out_dir)
    taken: set[str] = set()
    rows: list[dict[str, Any]] = []
    sections: list[tuple[str, str, list[Path]]] = []  # (title, text above, pictures)
    for given in paths:
        folder = Path(given)
        if not folder.is_dir():
            raise RecsysError(f"{folder}: no such run or sweep folder")
        name = _unique(folder.resolve().name, taken)
        if (folder / "metrics.json").is_file():
            rows.append(run_row(name, folder))
            sections.append((name, "", plots.draw_run(folder, out_dir / name)))
        elif _jobs(folder):
            sweep = sweep_rows(folder)
            groups = seed_groups(sweep)
            metric = "test/ndcg@10"
            chart = plots.draw_sweep(folder, sweep, groups, metric, out_dir / name)
            shown = [m for m in SUMMARY_METRICS if any(m in r for r in sweep)]
            sections.append((name, format_groups(groups, shown), [chart] if chart else []))
            for job in _jobs(folder):
                rows.append(run_row(f"{name}/{job.name}", job))
                sections.append((f"{name}/{job.name}", "", plots.draw_run(job, out_dir / name / job.name)))
        else:
            raise RecsysError(f"{folder}: neither a run folder (metrics.json) nor a sweep folder (numbered runs)")
    write_rows_csv(out_dir / "summary.csv", rows)
    page = out_dir / "report.html"
    write_text_atomic(page, render_html(rows, sections))
    return page


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def render_html(rows: list[dict[str, Any]], sections: list[tuple[str, str, list[Path]]]) -> str:
    """The page: the summary table, then each run's or sweep's pictures (embedded PNGs)."""
    columns = list(rows[0]) if rows else []
    table = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"]
    table += ["<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows]
    table.append("</table>")
    body = ["<h1>recsys report</h1>", *table]
    for title, text, pictures in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            body.append(f"<pre>{html.escape(text)}</pre>")
        body += [_image(p) for p in pictures]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "figure{display:inline-block;margin:0.5em}img{max-width:600px}"
    )
    return f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>recsys report</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
