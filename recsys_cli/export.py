"""``recsys export``: a trained sequence model as one ONNX or TorchScript file that maps a batch of
histories to the top-K items (or every item's score), checked against PyTorch.

The exported graph (:class:`ScoringGraph`) takes the fields of an untrimmed query batch
(:func:`recsys_cli.data.queries.query_cases` / ``whole_history_cases`` / ``adhoc_history`` build
them, window features included, with ``trim=False``): memory fields [B, H + L] left-padded with 0,
newest last, ``users`` [B], the window fields of multi-scale models, and ``seen`` [B, P] when seen
items are filtered. The batch size is dynamic (and the width P of ``seen``). ``model.json`` next to
the file lists every input and output with its shape and meaning; ``items.parquet`` maps the
output's item indices to raw ids (and titles).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from recsys_cli.data.queries import QueryCases

SEQUENCE_MODEL = "recsys_cli.models.recommender.SequenceRecommender"
# what each input holds (model.json)
MEANINGS = {
    "items": "item index of each memory event (1..N, 0 = padding), left-padded, newest last",
    "times": "its time (unix seconds, or its position when the data has no timestamps)",
    "event_types": "its behaviour type (1..K, 0 = unknown)",
    "categories": "its category (1..C, 0 = unknown)",
    "context": "its value of each context column (1..V, 0 = missing)",
    "users": "the user's index + 1 when the user was known to training, else 0",
    "window_start": "first event of each scale's window at each encoder position (memory coordinates)",
    "scale_stats": "each window's statistics (names in model.json's stat_names)",
    "seen": "items to never recommend (the user's history), padded with 0",
}
INPUT_ORDER = tuple(MEANINGS)


def export_refusal(cfg: DictConfig) -> str | None:
    """Why this run's model cannot be exported (one line), or None when it can."""
    target = OmegaConf.select(cfg, "model._target_")
    if target != SEQUENCE_MODEL:
        return (
            f"model {target}: only the sequence model (model=sequential) exports; the count baselines "
            "and Mult-VAE score from count tables or bags that the evaluation code computes, not from a "
            "network of their own"
        )
    if OmegaConf.select(cfg, "model.context_request_time", default=False):
        return "model.context_request_time=true: the model reads the time of the request, which a query does not carry"
    return None


class ScoringGraph(nn.Module):
    """The exported function: input fields (in ``fields`` order) -> ``(scores [B, k], items
    [B, k])``, the top-``k`` by score, or ``scores [B, N + 1]`` with ``k=None`` (column 0, the
    padding item, and seen items ``-inf``)."""

    def __init__(self, model: nn.Module, fields: list[str], k: int | None, filter_seen: bool):
        super().__init__()
        self.model, self.fields, self.k, self.filter_seen = model, list(fields), k, filter_seen
        for module in model.modules():  # one group: the split by length is host-side work
            if hasattr(module, "length_groups"):
                module.length_groups = 1

    def forward(self, *inputs: torch.Tensor):
        batch = dict(zip(self.fields, inputs, strict=True))
        output = self.model(batch, None, last_only=True)
        scores = output.states[:, -1] @ output.item_table.T  # [B, D] @ [D, N + 1] -> [B, N + 1]
        scores = torch.cat([torch.full_like(scores[:, :1], float("-inf")), scores[:, 1:]], dim=1)
        if self.filter_seen:
            scores = scores.scatter(1, batch["seen"], float("-inf"))
        if self.k is None:
            return scores
        values, items = torch.topk(scores, self.k, dim=1)
        return values, items


def input_fields(batch: dict[str, torch.Tensor], filter_seen: bool) -> list[str]:
    """The inputs of the exported graph, in :data:`INPUT_ORDER`: what a query batch holds."""
    return [name for name in INPUT_ORDER if name in batch and (name != "seen" or filter_seen)]


def untrimmed(cases: QueryCases) -> QueryCases:
    """The same cases with their full memory width (the exported graph's fixed H + L)."""
    return QueryCases(cases.data, cases.ends, cases.starts, cases.max_len, cases.history_len, True,
                      cases.features, cases.users, trim=False)  # fmt: skip


@dataclass
class Check:
    """The exported model against PyTorch on the same batches."""

    max_abs_diff: float
    top10_agreement: float  # mean share of the eager top-10 in the exported top-10
    latency_ms_batch1: float  # median per user, one user per call
    latency_ms_per_user_batched: float  # median per user, ``batch`` users per call
    eager_ms_batch1: float
    eager_ms_per_user_batched: float


def output_names(k: int | None) -> list[str]:
    """The exported graph's outputs: every item's score, or the top-k scores and item indices."""
    return ["scores"] if k is None else ["top_scores", "top_items"]


def onnx_export(graph: ScoringGraph, example: tuple[torch.Tensor, ...], path: Path) -> list[str]:
    """Write ``graph`` as ONNX (opset 17) with a dynamic batch axis (and ``seen`` width); returns
    its inputs (the exporter leaves out the fields the model does not read)."""
    outputs = output_names(graph.k)
    axes = {name: {0: "batch"} for name in graph.fields}
    if "seen" in axes:
        axes["seen"] = {0: "batch", 1: "seen_width"}
    axes.update({name: {0: "batch"} for name in outputs})
    torch.onnx.export(
        graph, example, str(path), input_names=graph.fields, output_names=outputs,
        dynamic_axes=axes, opset_version=17, dynamo=False,
    )  # fmt: skip
    import onnx

    proto = onnx.load(str(path))
    if bool_eyes_as_float(proto):
        onnx.save(proto, str(path))
    return [value.name for value in proto.graph.input]


def bool_eyes_as_float(proto) -> int:
    """onnxruntime has no boolean ``EyeLike`` (the Transformer's attention mask builds one with
    ``torch.eye(dtype=bool)``): each reads its input cast to float and is cast back to bool, in
    place (the types from ONNX's shape inference). Returns how many were rewritten."""
    from onnx import TensorProto, helper, shape_inference

    types = {v.name: v.type.tensor_type.elem_type for v in shape_inference.infer_shapes(proto).graph.value_info}
    graph, rewritten = proto.graph, 0
    for position in range(len(graph.node) - 1, -1, -1):
        node = graph.node[position]
        if node.op_type != "EyeLike" or types.get(node.output[0]) != TensorProto.BOOL:
            continue
        del node.attribute[:]
        source, out = node.input[0], node.output[0]
        node.input[0], node.output[0] = f"{source}_float", f"{out}_float"
        graph.node.insert(position + 1, helper.make_node("Cast", [f"{out}_float"], [out], to=TensorProto.BOOL))
        graph.node.insert(position, helper.make_node("Cast", [source], [f"{source}_float"], to=TensorProto.FLOAT))
        rewritten += 1
    return rewritten


def torchscript_export(graph: ScoringGraph, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """Write ``graph`` traced to TorchScript (batch size free: no shape is baked in)."""
    with torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


def quantize_onnx(path: Path, out: Path) -> None:
    """int8 dynamic quantisation of the weights (onnxruntime's ``quantize_dynamic``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)


def quantize_torch(graph: ScoringGraph) -> ScoringGraph:
    """int8 dynamic quantisation of the Linear layers (``torch.ao.quantization.quantize_dynamic``);
    an empty one (e.g. a fusion's gate over no scales) stays float: quantised, TorchScript cannot
    load it back."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    layers = {name: default_dynamic_qconfig for name, module in graph.named_modules()
              if isinstance(module, nn.Linear) and module.weight.numel() > 0}  # fmt: skip
    return quantize_dynamic(graph, layers, dtype=torch.qint8)


class Runner:
    """Calls an exported file (or the eager graph) on a tuple of input tensors; returns numpy."""

    def __init__(self, kind: str, path: Path | None = None, graph: ScoringGraph | None = None):
        self.kind = kind
        if kind == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]
        elif kind == "torchscript":
            self.module = torch.jit.load(str(path))
        else:
            self.module = graph

    def __call__(self, fields: list[str], inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        if self.kind == "onnx":
            feed = {name: value.numpy() for name, value in zip(fields, inputs, strict=True) if name in self.names}
            return self.session.run(None, feed)
        with torch.no_grad():
            out = self.module(*inputs)
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def median_ms(call, repeats: int) -> float:
    """Median wall time of ``call()`` in milliseconds, after three warm-up calls (TorchScript's
    profiling executor optimises the graph during its first calls)."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def check_against_eager(
    runner: Runner, eager: Runner, fields: list[str], batches: list[tuple[torch.Tensor, ...]], repeats: int
) -> Check:
    """Max |score difference| and top-10 agreement over ``batches``; latency medians."""
    diffs, agreement = [], []
    for inputs in batches:
        got, want = runner(fields, inputs), eager(fields, inputs)
        finite = np.isfinite(want[0])
        diffs.append(float(np.abs(got[0][finite] - want[0][finite]).max()))
        top_got = got[1][:, :10] if len(got) > 1 else np.argsort(-got[0], axis=1, kind="stable")[:, :10]
        top_want = want[1][:, :10] if len(want) > 1 else np.argsort(-want[0], axis=1, kind="stable")[:, :10]
        agreement += [len(set(a) & set(b)) / len(b) for a, b in zip(top_got.tolist(), top_want.tolist(), strict=True)]
    one = tuple(t[:1] for t in batches[0])
    full = batches[0]
    n = full[0].shape[0]
    return Check(
        max_abs_diff=max(diffs),
        top10_agreement=float(np.mean(agreement)),
        latency_ms_batch1=median_ms(lambda: runner(fields, one), repeats),
        latency_ms_per_user_batched=median_ms(lambda: runner(fields, full), repeats) / n,
        eager_ms_batch1=median_ms(lambda: eager(fields, one), repeats),
        eager_ms_per_user_batched=median_ms(lambda: eager(fields, full), repeats) / n,
    )


def describe(fields: list[str], example: tuple[torch.Tensor, ...], k: int | None, info: dict) -> dict:
    """``model.json``: the inputs (name, dtype, shape with ``B`` for the batch, meaning) and outputs."""
    inputs = []
    for name, value in zip(fields, example, strict=True):
        shape = ["B", *value.shape[1:]] if name != "seen" else ["B", "P"]
        inputs.append({"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": shape,
                       "meaning": MEANINGS[name]})  # fmt: skip
    n = info["num_items"]
    outputs = (
        [{"name": "scores", "dtype": "float32", "shape": ["B", n + 1], "meaning": "score of every item index (0 = padding, -inf)"}]
        if k is None
        else [
            {"name": "top_scores", "dtype": "float32", "shape": ["B", k], "meaning": "the k best scores, best first"},
            {"name": "top_items", "dtype": "int64", "shape": ["B", k], "meaning": "their item indices (items.parquet maps them to raw ids)"},
        ]
    )  # fmt: skip
    return {"inputs": inputs, "outputs": outputs, **info}


def file_size(path: Path) -> int:
    """Bytes of ``path`` and of its external-data file (ONNX weights over 2 GB), if any."""
    extra = Path(f"{path}.data")
    return os.path.getsize(path) + (os.path.getsize(extra) if extra.exists() else 0)


def write_json(path: Path, obj: dict) -> None:
    from recsys_cli.io import write_json_atomic

    write_json_atomic(path, json.loads(json.dumps(obj, default=str)))


def export_inputs(cases: QueryCases, case_ids: np.ndarray, fields: list[str]) -> tuple[torch.Tensor, ...]:
    """The exported graph's inputs for some query cases, in ``fields`` order: the documented way to
    precompute them (window features included) for users of the data
    (:func:`~recsys_cli.data.queries.whole_history_cases`) or an ad-hoc history
    (:func:`~recsys_cli.data.queries.adhoc_history`), e.g.
    ``export_inputs(whole_history_cases(run.dm, users), np.arange(len(users)), fields)``."""
    batch = untrimmed(cases)[np.asarray(case_ids)]
    return tuple(batch[name] for name in fields)


def write_vocabulary(path: Path, item_ids: list[str], titles: list | None) -> None:
    """``items.parquet``: ``index`` (what the model outputs), ``item_id`` (raw), ``title`` if known."""
    import polars as pl

    columns = {"index": list(range(1, len(item_ids) + 1)), "item_id": item_ids}
    if titles is not None:
        columns["title"] = list(titles)
    pl.DataFrame(columns).write_parquet(path)
