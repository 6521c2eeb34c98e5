"""The next-item losses of ``recsys_cli.training.losses``: the streaming full-catalogue
cross-entropy (exact, forward and backward, against the plain one) and the sampled softmax's
popularity sampling, log-Q correction and in-batch negatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from recsys_cli.contract import DataSpec, ModelOutput, ScaleSet
from recsys_cli.errors import ConfigError
from recsys_cli.training.losses import FullSoftmaxCE, SampledSoftmax, streaming_cross_entropy

N, D, M = 11, 5, 13


def _excluded(held: list[int] | None, n: int = N) -> torch.Tensor | None:
    if held is None:
        return None
    mask = torch.zeros(n + 1, dtype=torch.bool)
    mask[held] = True
    return mask


def _case(seed: int, dtype: torch.dtype, held: list[int] | None = None, m: int = M, n: int = N):
    """z [m, D], items [n + 1, D] (leaves), targets [m] among the items that are not held out."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, D, generator=g, dtype=dtype).requires_grad_()
    items = torch.randn(n + 1, D, generator=g, dtype=dtype).requires_grad_()
    allowed = torch.tensor([i for i in range(1, n + 1) if held is None or i not in held])
    targets = allowed[torch.randint(0, len(allowed), (m,), generator=g)]
    return z, items, targets


def _plain(z, items, targets, excluded):
    """The reference: [M, N] logits, excluded items at -inf, one F.cross_entropy."""
    logits = z @ items[1:].T
    if excluded is not None:
        logits = logits.masked_fill(excluded[1:], float("-inf"))
    return F.cross_entropy(logits, targets - 1)


def _value_and_grads(fn, z, items):
    z.grad, items.grad = None, None
    value = fn()
    value.backward()
    return value.detach(), z.grad.clone(), items.grad.clone()


# --- the streaming cross-entropy --------------------------------------------------------------


@pytest.mark.parametrize("held", [None, [2, 7, 11]])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
@pytest.mark.parametrize("item_chunk", [1, 3, N - 1, N, N + 5])
def test_streaming_cross_entropy_equals_the_plain_one_in_value_and_gradients(item_chunk, chunk_size, held):
    z, items, targets = _case(item_chunk * 100 + chunk_size, torch.float64, held)
    excluded = _excluded(held)
    want = _value_and_grads(lambda: _plain(z, items, targets, excluded), z, items)
    got = _value_and_grads(
        lambda: streaming_cross_entropy(z, items, targets, excluded, item_chunk, chunk_size), z, items
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-10)
    grad_items = got[2]
    assert (grad_items[0] == 0).all()  # padding: never a candidate
    if held is not None:
        assert (grad_items[held] == 0).all()  # held out: never a candidate
    assert grad_items[1:].abs().sum() > 0


@pytest.mark.parametrize("item_chunk", [1, 4, 64])
def test_streaming_cross_entropy_in_float32_is_within_1e_5(item_chunk):
    z, items, targets = _case(3, torch.float32, [5], m=40, n=50)
    excluded = _excluded([5], n=50)
    want = _value_and_grads(lambda: _plain(z, items, targets, excluded), z, items)
    got = _value_and_grads(lambda: streaming_cross_entropy(z, items, targets, excluded, item_chunk, 7), z, items)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_streaming_cross_entropy_passes_gradcheck():
    z, items, targets = _case(5, torch.float64, [3], m=4, n=6)
    excluded = _excluded([3], n=6)
    assert torch.autograd.gradcheck(
        lambda a, b: streaming_cross_entropy(a, b, targets, excluded, item_chunk_size=4, chunk_size=3), (z, items)
    )


def test_streaming_cross_entropy_saves_nothing_of_size_positions_by_items():
    """Autograd keeps z, the table, the targets and the per-row LSE: no [M, N] logits or softmax."""
    z, items, targets = _case(6, torch.float32, m=64, n=200)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        streaming_cross_entropy(z, items, targets, None, item_chunk_size=16, chunk_size=8).backward()
    assert saved and max(saved) <= items.numel() < 64 * 200
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _plain(z, items, targets, None)
    assert max(saved) >= 64 * 200  # the plain loss keeps the whole [M, N] (the check can fail)


def test_streaming_cross_entropy_in_bfloat16_and_under_autocast():
    z, items, targets = _case(7, torch.float32, m=20, n=30)
    zb, ib = z.detach().bfloat16().requires_grad_(), items.detach().bfloat16().requires_grad_()
    value = streaming_cross_entropy(zb, ib, targets, None, item_chunk_size=8, chunk_size=6)
    assert value.dtype == torch.float32
    value.backward()
    assert zb.grad.dtype == torch.bfloat16 and ib.grad.dtype == torch.bfloat16
    # the chunks are computed in float32 from the bf16 inputs: the float32 loss of the same numbers
    ref_z, ref_i = zb.detach().float().requires_grad_(), ib.detach().float().requires_grad_()
    ref = _plain(ref_z, ref_i, targets, None)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(zb.grad, ref_z.grad.bfloat16())
    torch.testing.assert_close(ib.grad, ref_i.grad.bfloat16())
    # under autocast the states come out of a layer in bf16; the table stays float32
    layer = torch.nn.Linear(D, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = layer(z)
        assert states.dtype == torch.bfloat16
        loss = streaming_cross_entropy(states, items, targets, None, item_chunk_size=8, chunk_size=6)
    items.grad = None
    loss.backward()
    assert torch.isfinite(loss) and layer.weight.grad is not None and items.grad.dtype == torch.float32


def test_streaming_cross_entropy_of_no_position_is_zero():
    z, items, targets = _case(8, torch.float32, m=0)
    value = streaming_cross_entropy(z, items, targets, None, item_chunk_size=4)
    value.backward()
    assert value.item() == 0.0 and (items.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("held", [None, [4, 9]])
@pytest.mark.parametrize("chunk_size", [1, 5, 4096])
def test_full_ce_of_a_catalogue_in_one_item_chunk_equals_the_plain_loss(chunk_size, held, dtype):
    """The fused loss (softmax in place, one [M, N] matrix kept) against F.cross_entropy on the
    logits: value and both gradients, with and without held-out items, every row chunk."""
    z, items, targets = _case(9, dtype, held, m=23)
    spec = DataSpec(num_items=N, num_users=1, max_len=3, scales=ScaleSet(), held_out_items=None if held is None else np.array(held))
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for item_chunk in (N, 8192):
        term = FullSoftmaxCE(chunk_size=chunk_size, item_chunk_size=item_chunk)
        term.bind(spec)
        got = _value_and_grads(lambda term=term: term.loss(z, targets, items), z, items)
        want = _value_and_grads(lambda: _plain(z, items, targets, _excluded(held)), z, items)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype
            torch.testing.assert_close(g, w, **tol)
        assert got[2][0].abs().sum() == 0  # the padding row gets no gradient
        if held is not None:
            assert got[2][held].abs().sum() == 0  # nor do the held-out items


def test_full_ce_streams_a_catalogue_larger_than_one_item_chunk():
    held = [2, 5]
    states, table = torch.randn(3, 6, D, dtype=torch.float64), torch.randn(N + 1, D, dtype=torch.float64)
    table.requires_grad_()
    targets = torch.randint(0, N + 1, (3, 6))
    targets[torch.isin(targets, torch.tensor(held))] = 0
    spec = DataSpec(num_items=N, num_users=1, max_len=6, scales=ScaleSet(), held_out_items=np.array(held))
    term = FullSoftmaxCE(chunk_size=4, item_chunk_size=3)
    term.bind(spec)
    value, _ = term(ModelOutput(states=states, item_table=table), {"targets": targets})
    assert value.grad_fn is not None and "Streaming" in type(value.grad_fn).__name__
    sel = targets > 0
    torch.testing.assert_close(value, _plain(states[sel], table, targets[sel], _excluded(held)), rtol=1e-10, atol=0)


# --- the sampled softmax ----------------------------------------------------------------------


def _spec(counts: list[int], held: list[int] | None = None) -> DataSpec:
    return DataSpec(
        num_items=len(counts) - 1, num_users=1, max_len=3, scales=ScaleSet(),
        item_train_counts=np.array(counts, dtype=np.int64),
        held_out_items=None if held is None else np.array(held),
    )  # fmt: skip


class _OldSampledSoftmax:
    """SampledSoftmax.loss before popularity sampling, log-Q and in-batch negatives (verbatim)."""

    def __init__(self, num_negatives: int, seed: int, excluded: torch.Tensor | None):
        self.num_negatives, self.excluded = num_negatives, excluded
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, z, targets, items):
        n = items.shape[0] - 1
        neg = torch.randint(1, n + 1, (self.num_negatives,), generator=self.generator).to(z.device)
        pos_logit = (z * items[targets]).sum(-1, keepdim=True)
        neg_logit = z @ items[neg].T
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
        if self.excluded is not None:
            neg_logit = neg_logit.masked_fill(self.excluded[neg][None, :], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))


@pytest.mark.parametrize("held", [None, [3, 8]])
@pytest.mark.parametrize("logq", [True, False])
def test_uniform_sampled_softmax_is_unchanged(logq, held):
    counts = [0, *range(1, N + 1)]
    new = SampledSoftmax(num_negatives=7, seed=3, logq=logq)
    new.bind(_spec(counts, held))
    old = _OldSampledSoftmax(7, 3, _excluded(held))
    for step in range(4):  # the generators advance alike, batch after batch
        z, items, targets = _case(20 + step, torch.float32, held)
        got = _value_and_grads(lambda z=z, t=targets, i=items: new.loss(z, t, i), z, items)
        want = _value_and_grads(lambda z=z, t=targets, i=items: old.loss(z, t, i), z, items)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)
    assert torch.equal(new.generator.get_state(), old.generator.get_state())


def test_log_q_correction_by_hand():
    """2 positions, 4 items with q = .4 .3 .2 .1 (counts 4 3 2 1, alpha 1), K = 3 negatives 2 3 4:
    every logit, the positive's included, is s - log(K q)."""
    q = {1: 0.4, 2: 0.3, 3: 0.2, 4: 0.1}
    term = SampledSoftmax(num_negatives=3, sampling="popularity", alpha=1.0)
    term.bind(_spec([0, 4, 3, 2, 1]))
    torch.testing.assert_close(term.q, torch.tensor([0.0, 0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    term.sample_negatives = lambda n: torch.tensor([2, 3, 4])
    z = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
    item_vec = [0.0, 1.0, 2.0, -1.0, 0.5]
    items = torch.tensor(item_vec, dtype=torch.float64)[:, None]
    targets = torch.tensor([1, 2])  # row 2's target is also the negative 2: that negative is masked

    def row_loss(zr: float, target: int) -> float:
        pos = zr * item_vec[target] - math.log(3 * q[target])
        negs = [zr * item_vec[j] - math.log(3 * q[j]) for j in (2, 3, 4) if j != target]
        return -pos + math.log(math.exp(pos) + sum(math.exp(s) for s in negs))

    # row 1: pos 1.0 - log 1.2; negatives 2.0 - log .9, -1.0 - log .6, 0.5 - log .3
    # row 2: pos 1.0 - log .9;  negatives -0.5 - log .6, 0.25 - log .3 (2 is the target: masked)
    expected = (row_loss(1.0, 1) + row_loss(0.5, 2)) / 2
    assert term.loss(z, targets, items).item() == pytest.approx(expected, rel=1e-12)
    plain = SampledSoftmax(num_negatives=3, sampling="popularity", alpha=1.0, logq=False)
    plain.bind(_spec([0, 4, 3, 2, 1]))
    plain.sample_negatives = lambda n: torch.tensor([2, 3, 4])
    uncorrected = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(-1.0) + math.exp(0.5)) - 1.0
    uncorrected += math.log(math.exp(1.0) + math.exp(-0.5) + math.exp(0.25)) - 1.0
    # (without a correction the logits are float32, as before)
    assert plain.loss(z, targets, items).item() == pytest.approx(uncorrected / 2, rel=1e-6)


def test_popularity_sampling_draws_in_proportion_and_never_held_out_items():
    counts = [0, 0, 1, 5, 20, 100, 3, 7]
    term = SampledSoftmax(num_negatives=200_000, sampling="popularity", alpha=0.75, seed=1)
    term.bind(_spec(counts, held=[6]))
    weights = np.array([0, 1, 1, 5, 20, 100, 0, 7], dtype=float) ** 0.75  # count 0 -> 1; 6 held out
    weights[[0, 6]] = 0
    q = weights / weights.sum()
    np.testing.assert_allclose(term.q.numpy(), q, rtol=1e-12)
    draws = term.sample_negatives(len(counts) - 1)
    assert draws.min() >= 1 and draws.max() <= 7 and not (draws == 6).any()
    freq = np.bincount(draws.numpy(), minlength=8) / len(draws)
    sigma = np.sqrt(q * (1 - q) / len(draws))
    assert (np.abs(freq - q) <= 5 * sigma + 1e-12).all(), (freq, q)
    assert freq[1] > 0  # an item with no training event can be drawn
    again = SampledSoftmax(num_negatives=200_000, sampling="popularity", alpha=0.75, seed=1)
    again.bind(_spec(counts, held=[6]))
    assert torch.equal(again.sample_negatives(7), draws)  # seeded


def test_popularity_sampled_softmax_gives_held_out_items_no_gradient():
    term = SampledSoftmax(num_negatives=40, sampling="popularity", in_batch=True)
    held = [2, 9]
    term.bind(_spec([0, *range(1, N + 1)], held))
    z, items, targets = _case(30, torch.float32, held)
    term.loss(z, targets, items).backward()
    assert (items.grad[[0, *held]] == 0).all() and items.grad.abs().sum() > 0


def test_popularity_sampling_needs_training_counts():
    term = SampledSoftmax(sampling="popularity")
    with pytest.raises(ConfigError, match="training counts"):
        term.bind(DataSpec(num_items=5, num_users=1, max_len=3, scales=ScaleSet()))
    with pytest.raises(ConfigError, match="bind"):
        term.loss(torch.randn(2, 3), torch.tensor([1, 2]), torch.randn(6, 3))


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
@pytest.mark.parametrize("logq", [True, False])
def test_in_batch_negatives_mask_accidental_hits(sampling, logq):
    """Against an explicit [M, 1 + K + M] softmax: every position's target is a column; the
    columns equal to the row's target (itself and repeats) are masked."""
    counts = [0, 3, 9, 1, 4, 6, 2]
    n, k = len(counts) - 1, 4
    term = SampledSoftmax(num_negatives=k, sampling=sampling, logq=logq, in_batch=True, seed=2)
    term.bind(_spec(counts))
    neg = torch.tensor([1, 5, 5, 2])
    term.sample_negatives = lambda n: neg
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, D, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(n + 1, D, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([2, 4, 2, 2, 6, 1])  # 2 three times
    got = _value_and_grads(lambda: term.loss(z, targets, items), z, items)

    def explicit():
        cols = torch.cat([neg, targets])  # the K sampled, then the M in-batch
        logits = torch.cat([(z * items[targets]).sum(-1, keepdim=True), z @ items[cols].T], 1)
        hit = torch.cat([torch.zeros(6, 1, dtype=torch.bool), cols[None, :] == targets[:, None]], 1)
        logits = logits.masked_fill(hit, float("-inf"))
        if logq:
            base = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
            base[0] = 0
            p = base / base.sum()
            q = torch.full_like(p, 1 / n) if sampling == "uniform" else base**0.75 / (base**0.75).sum()
            expected = k * q + 6 * p
            logits = logits - torch.log(expected[torch.cat([targets[:, None], cols[None, :].expand(6, -1)], 1)])
        return F.cross_entropy(logits, torch.zeros(6, dtype=torch.long))

    want = _value_and_grads(explicit, z, items)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["full_ce", "sampled_softmax"])
def test_the_configs_match_the_constructors(name):
    """Every key of the YAML is a declared argument with a valid value, equal to the default (the
    defaults are the behaviour of earlier runs). test_configs composes and builds them."""
    from recsys_cli.config_paths import CONF_DIR
    from recsys_cli.contract.params import declared_hints, problem

    node = yaml.safe_load((CONF_DIR / "objective" / "next_item" / f"{name}.yaml").read_text())
    cls = {"full_ce": FullSoftmaxCE, "sampled_softmax": SampledSoftmax}[name]
    assert node.pop("_target_").endswith(cls.__name__)
    hints = declared_hints(cls)
    for key, value in node.items():
        if key == "seed":  # ${seed}
            continue
        hint, default = hints[key]
        assert problem(hint, value, default) is None and value == default, key
    if name == "sampled_softmax":
        assert {"sampling", "alpha", "logq", "in_batch"} <= set(node)
        assert problem(hints["sampling"][0], "zipf") is not None
        assert problem(hints["in_batch"][0], "yes") is not None
    else:
        assert node["item_chunk_size"] == 8192
