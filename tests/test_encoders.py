"""The Transformer encoder's block variants against PyTorch's own layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recsys_cli.errors import ConfigError
from recsys_cli.models.encoders import CausalSelfAttentionBlock, TransformerEncoder


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
    assert isinstance(TransformerEncoder(8, 5).norm, nn.LayerNorm)
    with pytest.raises(ConfigError, match=r"model.encoder.norm='middle'"):
        TransformerEncoder(8, 5, norm="middle")
    with pytest.raises(ConfigError, match=r"model.encoder.activation='tanh'"):
        TransformerEncoder(8, 5, activation="tanh")
