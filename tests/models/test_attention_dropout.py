"""SASRec's CPU training path for attention with dropout (``CausalSelfAttention._attend_with_dropout``) computes
exactly what the textbook formula does with the same dropout mask: softmax over the allowed keys of the scaled
scores, weights zeroed where the mask drops them and rescaled by 1 / (1 - p), times v; gradients included, and
however many causal row blocks it cuts the queries into.  The
path exists for speed (issue 13: fewer passes over the [B, heads, N, N] weights), so its numbers must not drift.
"""

from __future__ import annotations

import math

import torch

from components.models.sasrec import (CausalSelfAttention, SASRecConfig, attention_bias, causal_key_bias,
                                     dropout_keep_float, dropout_keep_mask, key_padding_bias)

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)


def _inputs(heads: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, N, hs = 3, 7, 4
    q, k, v = (torch.randn(B, heads, N, hs, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[0, :3] = False  # left padding in the first row
    allowed = (torch.ones(N, N, dtype=torch.bool).tril() & valid[:, None, :]) | torch.eye(N, dtype=torch.bool)
    return q, k, v, allowed.unsqueeze(1)


def _reference(q, k, v, allowed, keep, p):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return (weights * keep / (1 - p)) @ v


def test_cpu_attention_dropout_matches_the_formula_with_the_same_mask():
    for heads in (1, 2):
        attn = CausalSelfAttention(SASRecConfig(n_items=5, n_behaviors=1, hidden=4 * heads, n_heads=heads, dropout=0.3)).train()
        q, k, v, allowed = _inputs(heads)
        torch.manual_seed(11)
        keep = dropout_keep_mask((q.shape[0], heads, q.shape[2], q.shape[2]), 0.3, q.device)
        for blocks in (1, 2, 3, 7):  # causal row blocks: whole, halves, uneven thirds, one query per block
            if blocks > 1:  # each block draws its own mask, in block order, over the keys up to its last row
                torch.manual_seed(11)
                keep = torch.zeros_like(keep)
                rows = math.ceil(q.shape[2] / blocks)
                for start in range(0, q.shape[2], rows):
                    end = min(q.shape[2], start + rows)
                    block = dropout_keep_mask((q.shape[0] * heads, end - start, end), 0.3, q.device)
                    keep[:, :, start:end, :end] = block.view(q.shape[0], heads, end - start, end)
            want = _reference(q, k, v, allowed, keep, 0.3)
            g_want = torch.autograd.grad(want.sum(), (q, k, v))
            torch.manual_seed(11)
            got = attn._attend_with_dropout(q, k, v, attention_bias(allowed, q.dtype), query_blocks=blocks)
            assert torch.allclose(got, want, atol=1e-12)
            g_got = torch.autograd.grad(got.sum(), (q, k, v))
            for a, b in zip(g_got, g_want):
                assert torch.allclose(a, b, atol=1e-12)


def test_the_keep_mask_keeps_one_minus_p():
    torch.manual_seed(0)
    keep = dropout_keep_mask((1000, 1000), 0.2, torch.device("cpu"))
    assert abs(float(keep.float().mean()) - 0.8) < 0.002


def test_blocked_keys_get_no_weight_and_no_gradient():
    attn = CausalSelfAttention(SASRecConfig(n_items=5, n_behaviors=1, hidden=4, n_heads=1, dropout=0.1)).train()
    q, k, v, allowed = _inputs(1, seed=3)
    torch.manual_seed(0)
    out = attn._attend_with_dropout(q, k, v, attention_bias(allowed, q.dtype))
    # Row 0's first three keys are padding: no real query may read them (a padding query reads only itself), so
    # the real queries' outputs give their k and v no gradient.
    gk, gv = torch.autograd.grad(out[0, :, 3:].sum() + out[1:].sum(), (k, v))
    assert torch.isfinite(out).all()
    assert (gk[0, :, :3] == 0).all() and (gv[0, :, :3] == 0).all()


def test_the_float_mask_is_the_bool_mask_from_the_same_draws():
    torch.manual_seed(5)
    keep = dropout_keep_mask((4, 3, 50), 0.3, torch.device("cpu"))
    torch.manual_seed(5)
    scaled = dropout_keep_float((4, 3, 50), 0.3, torch.device("cpu"), torch.float32, scale=1 / 0.7)
    assert torch.equal(scaled, keep.float() / 0.7)


def test_the_broadcast_bias_equals_the_bias_of_the_bool_mask():
    g = torch.Generator().manual_seed(0)
    keys = torch.rand(5, 9, generator=g) > 0.4
    keys[0] = False  # a row with no real token: every query sees only itself
    N = keys.shape[1]
    allowed = (torch.ones(N, N, dtype=torch.bool).tril() & keys[:, None, :]) | torch.eye(N, dtype=torch.bool)
    assert torch.equal(causal_key_bias(keys, torch.float32), attention_bias(allowed.unsqueeze(1)))


def test_the_keys_bias_gives_the_full_mask_s_outputs_at_real_queries():
    """SASRec's packed path passes only the keys' [B, N] bias (``key_padding_bias``) and puts the causal -inf in
    each block's diagonal square: every real query's output and gradients are the full mask's, whatever the
    blocks; padding queries read padding keys instead of only themselves (finite, and zeroed by the model)."""
    for heads in (1, 2):
        attn = CausalSelfAttention(SASRecConfig(n_items=5, n_behaviors=1, hidden=4 * heads, n_heads=heads,
                                                dropout=0.3)).train()
        q, k, v, allowed = _inputs(heads, seed=7)
        valid = allowed[:, 0].diagonal(dim1=-2, dim2=-1) & allowed[:, 0, -1]  # the keys the last query sees
        real = valid[:, None, :, None].expand_as(q)
        for blocks in (1, 2, 3):
            outs = []
            for bias in (attention_bias(allowed, q.dtype), key_padding_bias(valid, q.dtype)):
                torch.manual_seed(3)
                out = attn._attend_with_dropout(q, k, v, bias, query_blocks=blocks)
                grads = torch.autograd.grad(out[real].sum(), (q, k, v))
                outs.append((out, grads))
            (full, g_full), (by_key, g_key) = outs
            assert torch.isfinite(by_key).all()
            assert torch.allclose(by_key[real], full[real], atol=1e-12)
            for a, b in zip(g_key, g_full):
                assert torch.allclose(a, b, atol=1e-12)
