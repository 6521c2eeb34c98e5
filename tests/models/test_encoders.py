"""The Transformer encoder: its block variants against PyTorch's own layer, and length groups."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from recsys_cli.contract.encoder_input import EncoderInput
from recsys_cli.errors import ConfigError
from recsys_cli.models.encoders import (
    CausalSelfAttentionBlock,
    TransformerEncoder,
    in_length_groups,
    length_split,
)


@pytest.mark.parametrize(
    ("norm", "activation"), [("post", "relu"), ("pre", "gelu"), ("pre", "relu"), ("post", "gelu")]
)
def test_a_block_computes_what_torch_s_encoder_layer_computes(norm, activation):
    """``norm=post`` is nn.TransformerEncoderLayer's default (SASRec's block), ``norm=pre`` its
    ``norm_first=True``; same weights, same causal mask, same outputs."""
    torch.manual_seed(0)
    dim, heads, L = 16, 2, 7
    ours = CausalSelfAttentionBlock(
        dim, heads, dropout=0.0, ffn_mult=2, norm=norm, activation=activation
    )
    theirs = nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation=activation,
        batch_first=True, norm_first=norm == "pre",
    )  # fmt: skip
    with torch.no_grad():
        theirs.self_attn.in_proj_weight.copy_(ours.qkv.weight)
        theirs.self_attn.in_proj_bias.copy_(ours.qkv.bias)
        theirs.self_attn.out_proj.weight.copy_(ours.proj.weight)
        theirs.self_attn.out_proj.bias.copy_(ours.proj.bias)
        for a, b in ((theirs.linear1, ours.ffn[0]), (theirs.linear2, ours.ffn[3])):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        for a, b in ((theirs.norm1, ours.norm1), (theirs.norm2, ours.norm2)):
            a.weight.copy_(torch.randn(dim))  # not the identity: the norms' order must matter
            a.bias.copy_(torch.randn(dim))
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    x = torch.randn(3, L, dim)
    allowed = torch.ones(L, L, dtype=torch.bool).tril()
    ours.eval(), theirs.eval()
    with torch.no_grad():
        got = ours(x, allowed[None, None])
        want = theirs(x, src_mask=~allowed)  # torch: True = may not attend
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_post_norm_encoder_adds_no_final_norm_and_bad_values_are_one_line():
    assert isinstance(TransformerEncoder(8, 5, norm="post").norm, nn.Identity)
    assert isinstance(TransformerEncoder(8, 5, norm="pre").norm, nn.LayerNorm)
    with pytest.raises(ConfigError, match=r"model.encoder.norm='middle'"):
        TransformerEncoder(8, 5, norm="middle")
    with pytest.raises(ConfigError, match=r"model.encoder.activation='tanh'"):
        TransformerEncoder(8, 5, activation="tanh")


@pytest.mark.parametrize("groups", [2, 4, 8])
def test_length_groups_give_the_same_states_and_gradients(groups):
    """A batch encoded in groups of similar length (each cut to its longest row) has the states
    and the gradients of the whole batch at once, also with a gap inside a history."""
    torch.manual_seed(0)
    B, L, D = 37, 20, 16
    x = torch.randn(B, L, D)
    lengths = torch.randint(0, L + 1, (B,))
    lengths[0] = L
    mask = torch.arange(L)[None] >= (L - lengths)[:, None]
    mask[3, L - 2] = False  # a padded step inside a history
    weights = TransformerEncoder(D, L, num_heads=2, dropout=0.0, norm="post").state_dict()
    results = []
    for g in (1, groups):
        enc = TransformerEncoder(D, L, num_heads=2, dropout=0.0, norm="post", length_groups=g).eval()
        enc.load_state_dict(weights)
        xg = x.clone().requires_grad_()
        out = enc(EncoderInput(xg, mask))
        (out * torch.linspace(-1, 1, D)).sum().backward()
        results.append((out.detach(), xg.grad, enc.blocks[0].qkv.weight.grad))
    for whole, split in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def test_length_groups_run_whole_when_the_split_saves_little():
    """Rows of about the same length: splitting would save under MIN_SAVED_SHARE of the
    positions, so the encoder runs once on the whole batch."""
    calls = []

    def encode(inputs):
        calls.append(inputs.x.shape)
        return inputs.x * inputs.mask.unsqueeze(-1)

    x = torch.randn(16, 10, 4)
    alike = torch.ones(16, 10, dtype=torch.bool)
    alike[:4, 0] = False  # four rows one event shorter: 2.5% of the positions
    in_length_groups(encode, EncoderInput(x, alike), 4)
    assert calls == [(16, 10, 4)]
    calls.clear()
    unlike = torch.arange(10)[None] >= torch.arange(16)[:, None].clamp(max=9)  # 10 .. 1 events
    out = in_length_groups(encode, EncoderInput(x, unlike), 4)
    # lengths 1 x 7, 2, 3, ..., 10: the fewest positions are 7x1 + 3x4 + 3x7 + 3x10 = 70 of 160
    assert sorted((c[0], c[1]) for c in calls) == [(3, 4), (3, 7), (3, 10), (7, 1)]
    torch.testing.assert_close(out, x * unlike.unsqueeze(-1))


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=2, max_size=9), data=st.data())
def test_the_length_split_computes_the_fewest_positions(lengths, data):
    """The cut points found by dynamic programming against every possible split."""
    lengths = np.sort(np.array(lengths))
    B = len(lengths)
    groups = data.draw(st.integers(1, B))

    def positions(ends):
        return sum((e - s) * int(lengths[e - 1]) for s, e in zip([0, *ends[:-1]], ends, strict=True))

    ends = length_split(lengths, groups)
    assert len(ends) == groups and ends[-1] == B and all(np.diff([0, *ends]) > 0)
    every = (positions([*cuts, B]) for cuts in itertools.combinations(range(1, B), groups - 1))
    assert positions(ends) == min(every)


def test_attention_projections_start_as_torch_s_multihead_attention():
    """Xavier-uniform input projections and zero biases, as nn.MultiheadAttention initialises
    them (the feed-forward layers keep nn.Linear's default)."""
    torch.manual_seed(0)
    block = CausalSelfAttentionBlock(64, 2, dropout=0.0)
    bound = (6 / (64 + 3 * 64)) ** 0.5
    assert float(block.qkv.weight.abs().max()) <= bound
    assert float(block.qkv.weight.abs().max()) > 0.9 * bound
    assert torch.all(block.qkv.bias == 0) and torch.all(block.proj.bias == 0)
    assert not torch.all(block.ffn[0].bias == 0)


@pytest.mark.parametrize("std", [0.02, None])
def test_embedding_tables_start_at_model_init_std(std):
    """Item vectors and learned positions start N(0, init_std^2) (model.init_std, 0.02); None is the
    scheme before 2026-12-06: unit-norm item rows (std D^-0.5) and nn.Embedding's N(0, 1) positions."""
    from recsys_cli.contract import DataSpec
    from recsys_cli.contract.scales import ScaleSet
    from recsys_cli.models.items import IdEmbedding

    torch.manual_seed(0)
    D = 64
    items = IdEmbedding(DataSpec(num_items=3000, num_users=1, max_len=200, scales=ScaleSet()), D, init_std=std)
    positions = TransformerEncoder(D, 200, position_init_std=std).positions.weight
    table = items().detach()
    assert torch.all(table[0] == 0)  # padding
    want_items, want_positions = (std, std) if std is not None else (D**-0.5, 1.0)
    assert float(table[1:].std()) == pytest.approx(want_items, rel=0.05)
    assert float(positions.std()) == pytest.approx(want_positions, rel=0.05)


def test_the_class_defaults_are_the_config_defaults():
    """``TransformerEncoder``'s block defaults are the YAML's, so that a model built in code is the
    one a run builds (checkpoints saved before the keys existed get theirs filled in)."""
    import inspect

    import yaml
    from conftest import REPO

    config = yaml.safe_load((REPO / "conf" / "model" / "encoder" / "transformer.yaml").read_text())
    signature = inspect.signature(TransformerEncoder).parameters
    for key in ("norm", "activation", "ffn_mult", "num_layers", "num_heads"):
        assert signature[key].default == config[key], key
