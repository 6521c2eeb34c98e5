"""Time inside attention: HSTU's gap buckets, TiSASRec's intervals, per-head windows, and the
causal property of every causal encoder with every time setting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_cli.contract import DataSpec, ScaleSet
from recsys_cli.contract.encoder_input import EncoderInput
from recsys_cli.errors import ConfigError
from recsys_cli.models.encoders import RNNEncoder, TransformerEncoder
from recsys_cli.models.fusion import GateFusion
from recsys_cli.models.items import IdEmbedding
from recsys_cli.models.recommender import SequenceRecommender
from recsys_cli.models.time_attention import head_window_mask, hstu_buckets, tisasrec_intervals

# every time setting of the Transformer (name -> its keyword arguments)
TIME_SETTINGS = {
    "none": {},
    "hstu": {"time_bias": "hstu"},
    "tisasrec": {"time_bias": "tisasrec", "time_span": 16},
    "head_windows": {"head_windows": ["30m", "1d"]},
    "hstu+head_windows": {"time_bias": "hstu", "head_windows": ["1h", None]},
    "tisasrec+head_windows": {"time_bias": "tisasrec", "head_windows": [None, "2h"]},
}


def test_hstu_buckets_of_hand_computed_gaps():
    """floor(log(max(|gap|, 1 s)) / 0.301), clipped at 128: worked out by hand."""
    gaps = torch.tensor([0, 1, 2, 60, 3600, 86400, -86400, 30 * 86400, 10**12, 2**62])
    # log(2) / 0.301 = 2.30; log(60) = 4.09 -> 13.6; log(3600) = 8.19 -> 27.2; log(86400) = 11.37
    # -> 37.8; log(2592000) = 14.77 -> 49.1; log(1e12) = 27.63 -> 91.8; log(2^62) = 42.98 -> 142.8
    assert hstu_buckets(gaps, 128).tolist() == [0, 0, 2, 13, 27, 37, 37, 49, 91, 128]
    for gap in (5, 777, 123456):
        assert int(hstu_buckets(torch.tensor([gap]), 128)) == math.floor(math.log(gap) / 0.301)


def test_tisasrec_intervals_of_hand_computed_gaps():
    """|t_i - t_j| over the smallest non-zero consecutive gap up to i (causal), clipped; without
    a gap yet the unit is 1 s. Padding (times 0, masked) is no gap."""
    times = torch.tensor([[0, 0, 100, 110, 130, 130, 200]])
    mask = torch.tensor([[False, True, True, True, True, True, True]])  # position 0: padding
    got = tisasrec_intervals(times, mask, time_span=8, causal=True)[0]
    # gaps before positions 2..6: 100, 10, 20, 0 (not counted), 70; running minimum: 100, then 10
    assert got[1, 1].item() == 0  # no gap yet: unit 1 s
    assert got[2, 1:3].tolist() == [1, 0]  # unit 100: 100 / 100
    assert got[3, 1:4].tolist() == [8, 1, 0]  # unit 10: 110 / 10 = 11 -> 8, 10 / 10 = 1
    assert got[6, 1:7].tolist() == [8, 8, 8, 7, 7, 0]  # unit 10: 100 -> 8, 90 -> 8, 70 / 10 = 7
    whole = tisasrec_intervals(times, mask, time_span=8, causal=False)[0]
    assert whole[3, 2].item() == 1  # the row's smallest gap (10) for every query alike


def test_head_window_masks_of_hand_built_times():
    """Head h may attend to key j from query i when t_i - t_j <= its window (null: any)."""
    times = torch.tensor([[0, 1000, 1060, 87000]])
    got = head_window_mask(times, [60, 86400, None], causal=True)[0]  # [H, L, L]
    assert got[0, 2].tolist() == [False, True, True, True]  # 1060 - 1000 = 60 <= 60 (later: < 0)
    assert got[0, 3].tolist() == [False, False, False, True]
    assert got[1, 3].tolist() == [False, True, True, True]  # 87000 - 0 > 1 day >= 87000 - 1000
    assert got[2, 3].all()
    both = head_window_mask(times, [60], causal=False)[0, 0]  # bidirectional: |t_i - t_j|
    assert both[1].tolist() == [False, True, True, False]


def test_each_head_attends_only_inside_its_window(monkeypatch):
    """The mask the attention runs under, per head: the causal mask of valid keys cut to each
    head's window (hand-built times), one [B, H, L, L] mask for every block."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def record(q, k, v, attn_mask=None, **kwargs):
        seen.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", record)
    encoder = TransformerEncoder(8, 5, num_heads=2, dropout=0.0, head_windows=["1m", "1d"]).eval()
    times = torch.tensor([[0, 100, 7200, 7230, 7260], [0, 0, 10, 50, 100000]])
    mask = torch.tensor([[True] * 5, [False, True, True, True, True]])
    encoder(EncoderInput(torch.randn(2, 5, 8), mask, times))
    assert len(seen) == 2 and all(torch.equal(m, seen[0]) for m in seen)
    allowed = seen[0]
    assert allowed.shape == (2, 2, 5, 5)
    # case 0, head 0 (1 minute): the newest event reads 7230 and 7260 (30 s each), not 7200 (60 s
    # back from 7260 is inside: 7260 - 7200 = 60); head 1 (1 day) reads everything before it
    assert allowed[0, 0, 4].tolist() == [False, False, True, True, True]
    assert allowed[0, 1, 4].tolist() == [True] * 5
    assert allowed[0, 0, 1].tolist() == [False, True, False, False, False]  # 100 s > 1 minute
    # case 1: the padded row attends to itself only; head 1 of the last event: 100000 - 50 > 1 day
    assert allowed[1, :, 0].tolist() == [[True, False, False, False, False]] * 2
    assert allowed[1, 1, 4].tolist() == [False, False, False, False, True]
    assert allowed[1, 1, 3].tolist() == [False, True, True, True, False]  # never a later event


def _case(B: int = 4, L: int = 9, D: int = 8, seed: int = 0, gap: bool = True):
    """Left-padded rows of different lengths (with ``gap``, one with a padded step inside: the
    attention masks it as a key), increasing times."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g)
    lengths = torch.tensor([L, L - 3, 2, L - 1])[:B]
    mask = torch.arange(L)[None] >= (L - lengths)[:, None]
    mask[0, 3] = not gap
    times = torch.cumsum(torch.randint(0, 5000, (B, L), generator=g), 1) * mask
    return x, mask, times


@pytest.mark.parametrize("setting", sorted(TIME_SETTINGS))
@pytest.mark.parametrize("groups", [1, 2])
def test_no_state_of_a_causal_transformer_reads_a_later_event(setting, groups):
    """Change every event from t + 1 on (its vector and its time): the states up to t stay, with
    every time setting, in length groups or not."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 9, num_heads=2, dropout=0.0, length_groups=groups, **TIME_SETTINGS[setting]).eval()
    assert encoder.causal
    x, mask, times = _case()
    base = encoder(EncoderInput(x, mask, times))
    g = torch.Generator().manual_seed(1)
    for t in range(x.shape[1] - 1):
        x2, times2 = x.clone(), times.clone()
        x2[:, t + 1 :] = torch.randn(x2[:, t + 1 :].shape, generator=g)
        times2[:, t + 1 :] = (times2[:, t + 1 :] + torch.randint(-3000, 900000, times2[:, t + 1 :].shape, generator=g)) * mask[:, t + 1 :]
        out = encoder(EncoderInput(x2, mask, times2))
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_no_state_of_a_recurrent_encoder_reads_a_later_event(cell):
    """The recurrent encoders are causal and ignore the times they are given (histories are
    left-padded: the recurrence rotates the padding behind them)."""
    torch.manual_seed(0)
    encoder = RNNEncoder(8, cell=cell).eval()
    assert encoder.causal
    x, mask, times = _case(gap=False)
    base = encoder(EncoderInput(x, mask, times))
    torch.testing.assert_close(encoder(EncoderInput(x, mask, None)), base)
    for t in range(x.shape[1] - 1):
        x2 = x.clone()
        x2[:, t + 1 :] += 1.0
        out = encoder(EncoderInput(x2, mask, times + 7))
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1])


@pytest.mark.parametrize("setting", sorted(TIME_SETTINGS))
def test_a_bidirectional_transformer_reads_both_sides(setting):
    """``causal=false``: the state of an event changes with a later event, and with an earlier
    one; its states stay the same with length groups and with trimmed padding."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 9, num_heads=2, dropout=0.0, causal=False, **TIME_SETTINGS[setting]).eval()
    assert not encoder.causal
    x, mask, times = _case()
    base = encoder(EncoderInput(x, mask, times))
    later, earlier = x.clone(), x.clone()
    later[:, -1] += 1.0
    earlier[:, -3] += 1.0
    assert not torch.allclose(encoder(EncoderInput(later, mask, times))[:, -2], base[:, -2])
    assert not torch.allclose(encoder(EncoderInput(earlier, mask, times))[:, -2], base[:, -2])
    grouped = TransformerEncoder(8, 9, num_heads=2, dropout=0.0, causal=False, length_groups=2, **TIME_SETTINGS[setting]).eval()
    grouped.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(grouped(EncoderInput(x, mask, times)), base, rtol=1e-5, atol=1e-5)
    trimmed = encoder(EncoderInput(x[2:3, -2:], mask[2:3, -2:], times[2:3, -2:]))  # row 2: 2 events
    torch.testing.assert_close(trimmed, base[2:3, -2:], rtol=1e-5, atol=1e-5)


def test_windows_shorter_than_every_gap_leave_each_event_alone():
    """Every head's window under the gaps between events: each state is the state of its event
    read alone; an unlimited head reads the others again."""
    torch.manual_seed(0)
    x, mask = torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool)
    times = torch.tensor([[0, 3600, 7200, 10800]])
    alone = TransformerEncoder(8, 4, num_heads=2, dropout=0.0, head_windows=["1m", "1m"]).eval()
    last_only = torch.tensor([[False, False, False, True]])
    torch.testing.assert_close(
        alone(EncoderInput(x, mask, times))[:, -1], alone(EncoderInput(x, last_only, times))[:, -1]
    )
    mixed = TransformerEncoder(8, 4, num_heads=2, dropout=0.0, head_windows=["1m", None]).eval()
    mixed.load_state_dict(alone.state_dict())
    assert not torch.allclose(mixed(EncoderInput(x, mask, times))[:, -1], mixed(EncoderInput(x, last_only, times))[:, -1])


def test_the_hstu_bias_reads_gaps_and_positions():
    """Same events at other times give other states (the gap buckets differ); the bias tables
    are one per block, per head and bucket / relative position."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 6, num_layers=2, num_heads=2, dropout=0.0, time_bias="hstu").eval()
    assert encoder.blocks[0].time.time_weight.shape == (2, 129)
    assert encoder.blocks[1].time.position_weight.shape == (2, 11)
    x, mask = torch.randn(1, 6, 8), torch.ones(1, 6, dtype=torch.bool)
    near, far = torch.arange(6)[None] * 10, torch.arange(6)[None] * 100000
    assert not torch.allclose(encoder(EncoderInput(x, mask, near)), encoder(EncoderInput(x, mask, far)))


def test_time_settings_off_build_nothing_and_draw_nothing():
    """Off, an encoder has exactly the weights (names and initial values) it had before."""
    torch.manual_seed(3)
    plain = TransformerEncoder(8, 6)
    after_plain = torch.rand(1)
    torch.manual_seed(3)
    off = TransformerEncoder(8, 6, time_bias=None, head_windows=None, causal=True)
    assert torch.equal(torch.rand(1), after_plain)
    assert list(plain.state_dict()) == list(off.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values(), strict=True))
    assert not any("time" in name for name in plain.state_dict())


def _spec(has_time: bool) -> DataSpec:
    return DataSpec(num_items=20, num_users=5, max_len=6, scales=ScaleSet(), has_time=has_time,
                    item_train_counts=np.ones(21, dtype=np.int64))  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"time_bias": "hstu"}, "model.encoder.time_bias=hstu"), ({"time_bias": "tisasrec"}, "model.encoder.time_bias=tisasrec"),
     ({"head_windows": ["1h", None]}, "model.encoder.head_windows")],
)  # fmt: skip
def test_time_inside_attention_on_data_without_timestamps_is_one_error_line(settings, key):
    def build(has_time: bool) -> SequenceRecommender:
        return SequenceRecommender(
            _spec(has_time), 8, encoder=lambda: TransformerEncoder(8, 6, num_heads=2, **settings),
            fusion=GateFusion, item=IdEmbedding,
        )  # fmt: skip

    build(True)
    with pytest.raises(ConfigError, match=rf"^{key}: the data has no timestamps") as err:
        build(False)
    assert "\n" not in str(err.value)


def test_bad_time_settings_are_one_error_line():
    with pytest.raises(ConfigError, match=r"head_windows has 3 windows for model.encoder.num_heads=2"):
        TransformerEncoder(8, 6, num_heads=2, head_windows=["1h", "1d", None])
    with pytest.raises(ConfigError, match=r"head_windows='soon' is not a duration"):
        TransformerEncoder(8, 6, num_heads=2, head_windows=["soon", None])
    with pytest.raises(ConfigError, match=r"model.encoder.time_bias='alibi'"):
        TransformerEncoder(8, 6, num_heads=2, time_bias="alibi")
