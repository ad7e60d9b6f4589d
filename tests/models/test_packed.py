"""SASRec's CPU training path runs its blocks on the real tokens only (``SASRec._run_packed``; issue 13: a
left-padded ML-1M batch is ~46% padding).  It must compute what the padded layout computes: the same states at
every position (real ones, and ln_f(0) at padding) and the same gradients, for pre- and post-norm blocks, several
heads, one or two causal query blocks, and rows with no event at all.  Dropout off, so both layouts are exact;
with dropout the packed path only draws other masks (checked: its masks keep 1 - p, and its states are finite).
"""

from __future__ import annotations

import pytest
import torch

from components.models.sasrec import SASRec, SASRecConfig, key_padding_bias

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)


def _batch(B: int, N: int, n_items: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (B, N), generator=g)
    behaviors = torch.randint(1, 4, (B, N), generator=g)
    lengths = torch.randint(0, N + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, N  # a row with no event (zero-shot), a full row
    pad = torch.arange(N)[None, :] < (N - lengths)[:, None]  # left padding
    return items.masked_fill(pad, 0), behaviors.masked_fill(pad, 0)


@pytest.mark.parametrize("N,heads,norm_first", [(9, 1, True), (9, 2, False), (130, 1, True), (130, 2, True)])
def test_packed_training_path_equals_the_padded_layout(N, heads, norm_first):
    cfg = SASRecConfig(n_items=40, n_behaviors=3, max_len=N, hidden=8, n_heads=heads, n_layers=2, dropout=0.0,
                       norm_first=norm_first)
    torch.manual_seed(0)
    model = SASRec(cfg)
    items, behaviors = _batch(6, N, 40, seed=N + heads)
    assert (items == 0).any() and (items != 0).any()
    weights = torch.randn(6, N, 8, generator=torch.Generator().manual_seed(1))

    def states_and_grads(train: bool):
        model.zero_grad()
        model.train(train)  # train: the packed path (CPU, no hook); eval: the padded layout (SDPA)
        h = model.encode(items, behaviors)
        (h * weights).sum().backward()
        return h.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    packed, g_packed = states_and_grads(True)
    padded, g_padded = states_and_grads(False)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    assert set(g_packed) == set(g_padded)
    for name in g_packed:
        torch.testing.assert_close(g_packed[name], g_padded[name], atol=1e-5, rtol=1e-4, msg=name)
    # Padding positions, the zero-shot row's included, hold the state of no input.
    empty = model.ln_f(torch.zeros(1, 8)).detach()
    torch.testing.assert_close(packed[items == 0], empty.expand(int((items == 0).sum()), 8))


def test_packed_path_is_taken_only_where_it_applies():
    """Training on CPU without hooks: packed.  A layer hook (prompt tuning) or keys other than the valid events
    (END4Rec's dropped events) keep the padded layout."""
    model = SASRec(SASRecConfig(n_items=20, n_behaviors=3, max_len=6, hidden=8, dropout=0.1)).train()
    items, behaviors = _batch(3, 6, 20, seed=2)
    calls = []
    original = SASRec._run_packed

    def spy(self, x, valid):
        calls.append(x.shape)
        return original(self, x, valid)

    SASRec._run_packed = spy
    try:
        x, valid, b, tokens = model.stack_inputs(items, behaviors)
        model.run_stack(x, valid, b, tokens=tokens)
        assert len(calls) == 1
        model.run_stack(x, valid, b, layer_hook=lambda layer, h: h, tokens=tokens)
        fewer = tokens.clone()
        fewer[2, -1] = False
        model.run_stack(x, valid, b, tokens=fewer)
        model.eval()
        model.run_stack(x, valid, b, tokens=tokens)
        assert len(calls) == 1
    finally:
        SASRec._run_packed = original


def test_packed_path_with_dropout_trains_finite_states():
    model = SASRec(SASRecConfig(n_items=30, n_behaviors=3, max_len=140, hidden=8, dropout=0.3)).train()
    items, behaviors = _batch(4, 140, 30, seed=3)
    torch.manual_seed(0)
    a = model.encode(items, behaviors)
    torch.manual_seed(1)
    b = model.encode(items, behaviors)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    real = items != 0
    assert not torch.allclose(a[real], b[real])  # dropout is on
    torch.testing.assert_close(a[~real], b[~real])  # padding: ln_f(0), whatever the masks


def test_key_padding_bias_blocks_padding_exactly_and_keeps_empty_rows_finite():
    keys = torch.tensor([[False, False, True, True], [False, False, False, False]])
    scores = torch.randn(2, 4) * 10 + key_padding_bias(keys, torch.float32)
    weights = torch.softmax(scores, dim=-1)
    assert (weights[0, :2] == 0).all() and torch.isclose(weights[0].sum(), torch.tensor(1.0))
    assert torch.isfinite(weights[1]).all()
