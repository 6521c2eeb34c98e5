"""Context columns (``data.columns.context``): read, coded like event types, carried through every
reordering and filter of preparation, cached, and gathered into the batch field ``context``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_recsys
from fixtures_formats import write_bytes

from recsys_cli.builders import build_datamodule
from recsys_cli.compose import compose_train
from recsys_cli.data.formats import RecBoleReader, TabularReader
from recsys_cli.data.prepare import prepare, prepare_events
from recsys_cli.data.prepared_cache import load_prepared
from recsys_cli.data.prepared_data import PreparationConfig
from recsys_cli.data.splits import training_view
from recsys_cli.errors import ConfigError, DataError

T0 = 1_700_000_000
# (user, item, seconds after T0, device, channel); in file order, not time order
ROWS = [
    ("u1", "a", 30, "phone", "web"),
    ("u1", "b", 10, "", "app"),  # no device
    ("u1", "a", 30, "tablet", "web"),  # duplicate of the first row: dropped, and 'tablet' with it
    ("u1", "c", 20, "desk", "web"),
    ("u1", "d", 40, "phone", "mail"),
    ("u1", "e", 50, "desk", "app"),
    ("u2", "b", 11, "phone", "app"),
    ("u2", "c", 15, "", "web"),  # no device
    ("u2", "a", 12, "desk", "app"),
    ("u2", "d", 41, "phone", "web"),
    ("u3", "a", 60, "tv", "app"),  # a user with a single event: dropped, and 'tv' with it
]
# after preparation, per user in time order: (item, device code, channel code);
# devices desk=1, phone=2 (tablet and tv are gone), channels app=1, mail=2, web=3
EXPECTED = {
    "u1": [("b", 0, 1), ("c", 1, 3), ("a", 2, 3), ("d", 2, 2), ("e", 1, 1)],
    "u2": [("b", 2, 1), ("a", 1, 1), ("c", 0, 3), ("d", 2, 3)],
}
COLUMNS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}


def write_log(folder: Path, rows=ROWS) -> Path:
    lines = ["user_id,item_id,timestamp,device_type,channel"]
    lines += [f"{u},{i},{T0 + s},{d},{c}" for u, i, s, d, c in rows]
    return write_bytes(folder / "log.csv", "\n".join(lines) + "\n")


def reader(path: Path, context) -> TabularReader:
    return TabularReader(str(path), {**COLUMNS, "context": context}, timestamp_unit="s")


def by_user(data) -> dict:
    """{user: [(item, device, channel)]} from prepared data (device before channel)."""
    out = {}
    for u, user in enumerate(data.user_vocab):
        span = range(data.offsets[u], data.offsets[u + 1])
        out[user] = [
            (data.item_vocab[data.items[e] - 1], *(int(c[e]) for c in data.context.values()))
            for e in span
        ]
    return out


def test_codes_vocab_and_nulls_follow_dedup_kcore_and_time_order(tmp_path):
    raw = reader(write_log(tmp_path), {"device": "device_type", "channel": "channel"}).read()
    assert raw.context == ("device", "channel")
    data = prepare_events(raw, PreparationConfig())
    assert data.stats["duplicates_dropped"] == 1 and data.stats["users_dropped"] == 1
    assert list(data.context) == list(data.context_vocab) == ["device", "channel"]
    assert data.context_vocab == {"device": ["desk", "phone"], "channel": ["app", "mail", "web"]}
    assert by_user(data) == EXPECTED
    assert all(c.dtype == np.int64 and len(c) == data.num_events for c in data.context.values())
    assert data.stats["context_columns"] == {"device": 2, "channel": 3}
    # the newest events per user only: the codes go with their events
    capped = prepare_events(raw, PreparationConfig(max_events_per_user=3))
    assert by_user(capped) == {u: rows[-3:] for u, rows in EXPECTED.items()}


def test_no_context_column_named(tmp_path):
    for context in (None, {}, {"device": None}):
        data = prepare_events(reader(write_log(tmp_path), context).read(), PreparationConfig())
        assert data.context == {} and data.context_vocab == {}
        assert "context_columns" not in data.stats


def test_the_cache_round_trips_the_context(tmp_path):
    make = reader(write_log(tmp_path), {"device": "device_type", "channel": "channel"})
    built = prepare(make, PreparationConfig(), tmp_path / "cache", "log")
    loaded = load_prepared(Path(built.stats["cache"]), built.fingerprint)
    assert list(loaded.context) == ["device", "channel"]
    assert loaded.context_vocab == built.context_vocab
    for name, codes in built.context.items():
        np.testing.assert_array_equal(loaded.context[name], codes)
        assert loaded.context[name].dtype == np.int64
    again = prepare(make, PreparationConfig(), tmp_path / "cache", "log")
    assert by_user(again) == EXPECTED
    # another context mapping is another cache entry
    other = prepare(
        reader(make.path, {"device": "device_type"}), PreparationConfig(), tmp_path / "cache", "log"
    )
    assert other.fingerprint != built.fingerprint and list(other.context) == ["device"]


def test_the_training_view_keeps_the_context_with_its_events(tmp_path):
    data = prepare_events(
        reader(write_log(tmp_path), {"device": "device_type"}).read(), PreparationConfig()
    )
    held = np.array([data.item_vocab.index("a") + 1])
    view, _ = training_view(data, data.offsets[1:].copy(), held)
    assert by_user(view) == {
        u: [r[:2] for r in rows if r[0] != "a"] for u, rows in EXPECTED.items()
    }


def datamodule(tmp_path, *overrides: str):
    cfg = compose_train(
        [
            "data=tabular",
            f"data.path={write_log(tmp_path)}",
            "data.reader.timestamp_unit=s",
            "data.max_len=3",
            f"paths.run_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *overrides,
        ]
    )
    dm = build_datamodule(cfg)
    dm.load()
    return dm


def all_batches(dm, stage: str) -> list[dict]:
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}
    return list(loader[stage]())


# without scales the memory is the L encoder inputs; with, H older events precede them
@pytest.mark.parametrize(("cold", "scales"), [(0.0, "none"), (0.2, "session_day_month_all")])
def test_batches_carry_the_codes_at_the_memory_positions(tmp_path, cold, scales):
    # config order (channel first) is the order of the last axis, not the alphabetical one
    dm = datamodule(
        tmp_path,
        "data.columns.context={site: channel, device: device_type}",
        f"data.cold_items={cold}",
        f"scales={scales}",
    )
    spec, data = dm.spec(), dm.data
    assert dict(spec.context_columns) == {"site": 3, "device": 2}
    assert list(spec.context_columns) == ["site", "device"]
    # every event is identified by its (item, time): its expected codes
    expected = {
        (int(i), int(t)): (int(s), int(d))
        for i, t, s, d in zip(
            data.items, data.times, data.context["site"], data.context["device"], strict=True
        )
    }
    checked = 0
    for stage in ("train", "val", "test"):
        for batch in all_batches(dm, stage):
            context = batch["context"].numpy()
            items, times = batch["items"].numpy(), batch["times"].numpy()
            assert context.shape == (*items.shape, 2) and context.dtype == np.int64
            assert (context[items == 0] == 0).all()  # padding
            for b, t in zip(*np.nonzero(items), strict=True):
                assert tuple(context[b, t]) == expected[(items[b, t], times[b, t])]
                checked += 1
    assert checked > 10
    assert (dm.spec().history_len > 0) == (scales != "none")
    if cold:
        assert len(dm.held_out) and dm.train_data is not data


def test_no_context_field_without_context_columns(tmp_path):
    dm = datamodule(tmp_path, "scales=none")
    assert dict(dm.spec().context_columns) == {}
    for stage in ("train", "val"):
        assert "context" not in all_batches(dm, stage)[0]


def test_a_missing_column_is_one_line_naming_file_column_and_key(tmp_path):
    path = write_log(tmp_path)
    with pytest.raises(DataError) as err:
        reader(path, {"device": "device"}).read()
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'device'" in msg
    assert "data.columns.context.device" in msg
    # through the command line: the one line, exit status 2
    result = run_recsys(
        ["prepare", "data=tabular", f"data.path={path}", "data.columns.context={device: dev}",
         f"paths.cache_dir={tmp_path / 'cache'}"]
    )  # fmt: skip
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert result.code == 2 and len(lines) == 1
    assert (
        str(path) in lines[0] and "'dev'" in lines[0] and "data.columns.context.device" in lines[0]
    )


@pytest.mark.parametrize("name", ["hour", "weekday", "gap", "event_type", "category", "user_id"])
def test_a_name_clashing_with_a_builtin_one_is_one_line(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        reader(tmp_path / "log.csv", {name: "device_type"})
    msg = str(err.value)
    assert "\n" not in msg and f"data.columns.context.{name}" in msg and "clashes" in msg


def test_bad_context_values(tmp_path):
    with pytest.raises(ConfigError, match=r"data.columns.context.my-device: a context name is"):
        reader(tmp_path / "log.csv", {"my-device": "device_type"})
    with pytest.raises(ConfigError, match=r"data.columns.context=.*expected a mapping"):
        reader(tmp_path / "log.csv", "device_type")
    # a list names columns by themselves
    assert reader(tmp_path / "log.csv", ["channel"]).context == {"channel": "channel"}


def test_recbole_inter_fields_as_context(tmp_path):
    inter = (
        "user_id:token\titem_id:token\ttimestamp:float\tdevice:token\ttags:token_seq\n"
        "u1\ta\t1700000000\tphone\tx y\nu1\tb\t1700000100\t\tx\n"
        "u2\ta\t1700000200\tdesk\ty\nu2\tc\t1700000300\tphone\tx\n"
    )
    write_bytes(tmp_path / "toy.inter", inter)
    data = prepare_events(
        RecBoleReader(str(tmp_path), context={"dev": "device"}).read(), PreparationConfig()
    )
    assert data.context_vocab == {"dev": ["desk", "phone"]}
    assert data.context["dev"].tolist() == [2, 0, 1, 2]
    with pytest.raises(
        DataError, match=r"field 'tags' \(data.columns.context.tags\) has type token_seq"
    ):
        RecBoleReader(str(tmp_path), context=["tags"]).read()
    with pytest.raises(DataError, match=r"missing field 'os' \(data.columns.context.os\)"):
        RecBoleReader(str(tmp_path), context={"os": "os"}).read()


def test_the_model_embeds_a_named_column_as_context_of_past_events(tmp_path):
    from recsys_cli.builders import build_module

    dm = datamodule(tmp_path, "scales=none", "data.columns.context={device: device_type}", "model.dim=8")
    cfg = compose_train(
        [
            "data=tabular", f"data.path={tmp_path / 'log.csv'}", "data.reader.timestamp_unit=s", "data.max_len=3",
            f"paths.cache_dir={tmp_path / 'cache'}", "scales=none", "data.columns.context={device: device_type}",
            "model.dim=8", "model.context=[device,gap]", "metrics.ks=[1,3]",
        ]
    )  # fmt: skip
    module = build_module(cfg, dm, {})
    step = module.training_loss(all_batches(dm, "train")[0])
    assert np.isfinite(float(step.loss))
    model = module.model.eval()
    batch = all_batches(dm, "test")[0]
    other = dict(batch, context=batch["context"] % 2 + 1)  # other devices on the past events
    assert (batch["context"] != other["context"]).any()
    scores, changed = model(batch).last_scores(), model(other).last_scores()
    assert not np.allclose(scores.detach().numpy(), changed.detach().numpy())
    cfg.model.context = ["screen"]
    with pytest.raises(ConfigError, match=r"unknown feature\(s\) 'screen'.*the data's context columns: device"):
        build_module(cfg, dm, {})
