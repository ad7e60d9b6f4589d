"""EBM's mechanics: the FFT filter is differentiable and causal, chunked-diagonal mixing has d*d/k parameters."""

from __future__ import annotations

import pytest
import torch

from components.models.base import ChunkedDiagonalLinear
from components.models.ebm import EBM, EBMConfig, causal_fft_conv

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)


def _model(**kw) -> EBM:
    return EBM(EBMConfig(n_items=40, n_behaviors=3, max_len=16, hidden=16, chunks=4, dropout=0.0, seed=1, **kw))


def _batch(gen: torch.Generator, b: int = 3, n: int = 16):
    items = torch.randint(1, 41, (b, n), generator=gen)
    behaviors = torch.randint(1, 4, (b, n), generator=gen)
    items[0, :5] = 0  # left padding on one row
    behaviors[0, :5] = 0
    return items, behaviors


def test_causal_fft_conv_equals_the_direct_sum():
    gen = torch.Generator().manual_seed(0)
    x, kernel = torch.randn(2, 9, 4, generator=gen), torch.randn(12, 4, generator=gen)
    expected = torch.zeros_like(x)
    for t in range(9):
        for s in range(t + 1):
            expected[:, t] += kernel[t - s] * x[:, s]
    torch.testing.assert_close(causal_fft_conv(x, kernel), expected, atol=1e-5, rtol=1e-5)


def test_gradient_reaches_the_filter_weights():
    model = _model()
    items, behaviors = _batch(torch.Generator().manual_seed(2))
    model.encode(items, behaviors).pow(2).mean().backward()
    for layer in model.layers:
        grad = layer.filter.kernel.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_chunked_diagonal_has_d_squared_over_k_parameters_and_mixes_across_chunks():
    d, k = 64, 8
    lin = ChunkedDiagonalLinear(d, k, bias=False)
    assert lin.weight.numel() == d * d // k
    model = EBM(EBMConfig(n_items=10, n_behaviors=1, hidden=d, chunks=k))
    mixing = [m for m in model.modules() if isinstance(m, ChunkedDiagonalLinear)]
    assert len(mixing) == 3 * model.config.n_layers  # frequency fusion + two feed-forward layers per layer
    assert all(m.weight.numel() == d * d // k for m in mixing)
    # As a dense matrix it is block-diagonal: off-block entries are exactly zero.
    dense = ChunkedDiagonalLinear(d, k, bias=False)
    torch.nn.init.normal_(dense.weight)
    full = dense(torch.eye(d))  # row i = image of basis vector i
    block = torch.block_diag(*[torch.ones(d // k, d // k)] * k).bool()
    assert (full[~block] == 0).all() and (full[block] != 0).all()
    # With the shuffle, two layers reach every output channel from one input channel.
    shuffled = ChunkedDiagonalLinear(d, k, bias=False, shuffle=True)
    torch.nn.init.normal_(shuffled.weight)
    assert (shuffled(shuffled(torch.eye(d)))[0] != 0).all()


def test_outputs_depend_only_on_the_past_and_not_on_left_padding():
    model = _model().eval()
    gen = torch.Generator().manual_seed(3)
    items, behaviors = _batch(gen)
    base = model.encode(items, behaviors)
    changed_items = items.clone()
    changed_items[:, 10:] = torch.randint(1, 41, (3, 6), generator=gen)
    after = model.encode(changed_items, behaviors)
    torch.testing.assert_close(after[:, :10], base[:, :10])  # the future cannot leak into earlier states
    assert not torch.allclose(after[:, 10:], base[:, 10:])
    # The same 11 events with 5 or 0 extra padding on the left give the same final state.
    short_i, short_b = items[1:2, 5:], behaviors[1:2, 5:]
    padded_i = torch.cat([torch.zeros(1, 5, dtype=items.dtype), short_i], 1)
    padded_b = torch.cat([torch.zeros(1, 5, dtype=behaviors.dtype), short_b], 1)
    torch.testing.assert_close(model.user_state(short_i, short_b), model.user_state(padded_i, padded_b),
                               atol=1e-5, rtol=1e-5)


def test_behavior_changes_the_state_and_long_sequences_fit():
    model = _model().eval()
    items, behaviors = _batch(torch.Generator().manual_seed(4))
    other = behaviors.clone()
    other[:, -1] = other[:, -1] % 3 + 1
    assert not torch.allclose(model.user_state(items, behaviors), model.user_state(items, other))
    long_model = EBM(EBMConfig(n_items=40, n_behaviors=3, max_len=1000, hidden=16, chunks=4))
    items = torch.randint(1, 41, (4, 1000))
    out = long_model.encode(items, torch.ones_like(items))
    out.mean().backward()
    assert out.shape == (4, 1000, 16) and torch.isfinite(out).all()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="divisible by chunks"):
        EBMConfig(n_items=5, n_behaviors=1, hidden=30, chunks=8)


def test_a_slot_outside_tokens_gets_a_state_but_feeds_no_other_position():
    """run_stack's ``tokens``: a valid slot that is no token (an event END4Rec dropped) is read by no later
    position at any layer, whatever its input; it still gets a state of its own."""
    model = _model(n_layers=3).eval()
    with torch.no_grad():
        for layer in model.layers:  # a behavior mixer off its identity start: it would carry the slot's behavior
            layer.mixer.beta.weight.normal_()
    items, behaviors = _batch(torch.Generator().manual_seed(5))
    x, valid, beh, _ = model.stack_inputs(items, behaviors)
    tokens = valid.clone()
    tokens[:, 9] = False
    other_x, other_beh = x.clone(), beh.clone()
    other_x[:, 9] = torch.randn(3, 16)
    other_beh[:, 9] = beh[:, 9] % 3 + 1
    with torch.no_grad():
        h = model.run_stack(x * tokens[..., None], valid, beh, tokens=tokens)
        h2 = model.run_stack(other_x * tokens[..., None], valid, other_beh, tokens=tokens)
        rest = torch.ones(16, dtype=torch.bool)
        rest[9] = False
        torch.testing.assert_close(h2[:, rest], h[:, rest], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(h[0, 9], h[1, 9], atol=1e-3)  # its own state reads its row's tokens
        # With every valid slot a token, ``tokens`` changes nothing.
        torch.testing.assert_close(model.run_stack(x, valid, beh, tokens=valid), model.run_stack(x, valid, beh))
