"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), with behavior embeddings.

Input is a LEFT-padded window of a user's most recent events (0 = padding): item ids [B, N] and behavior codes
[B, N].  Each position attends causally to itself and the positions before it; the output at position t is the
user's state after event t, and the score of item v is the dot product with v's embedding, which is the same table
as the input embedding (weight tying, as in the paper: it halves the parameters and ties "what follows" to "what
was seen").  Multi-behavior data adds a behavior embedding to every event (E = item + behavior + position, as in
END4Rec/DPCPL); ``use_behavior=False`` gives plain SASRec.

Choices the paper leaves open, made here:
- Positions count from the first real event of the window (0, 1, 2, ...), so the encoding of a prefix does not
  depend on how much padding sits to its left or on what follows it: the state a training position sees is the
  state inference computes for the same prefix, and more left padding changes nothing.
- Pre-norm blocks by default (``norm_first``), as in the paper: each sublayer g maps x to
  ``x + Dropout(g(LayerNorm(x)))``; this trains stably without warm-up.  ``norm_first=False`` gives the original
  Transformer's post-norm layout, ``LayerNorm(x + Dropout(g(x)))``, which the paper does not use.
- The FFN is two Linear layers (the public code's Conv1d with kernel 1 is the same map, written less plainly).
- Padded positions are zeroed after every block.  A query at a padded position may attend to itself, so no
  attention row is ever fully masked (a fully masked softmax row is NaN).  A fully padded row (a zero-shot user)
  therefore ends as LayerNorm(0) = the final norm's bias: a finite, learned "no history" state.
- Training on CPU runs the blocks on the real events only (``SASRec._run_packed``): the same states, without the
  padding's share of the work (tests/models/test_packed.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.base import EncoderConfig, NextItemEncoder


@dataclass
class SASRecConfig(EncoderConfig):
    hidden: int = 50
    norm_first: bool = True
    ffn_mult: int = 1  # FFN inner size = ffn_mult * hidden (the paper uses hidden -> hidden)

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.n_heads >= 1 and self.hidden % self.n_heads != 0:
            problems.append(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        if self.ffn_mult < 1:
            problems.append(f"ffn_mult={self.ffn_mult} must be >= 1")
        return problems


def dropout_keep_mask(shape: tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """bool mask of ``shape``, each entry False (dropped) with probability ``round(p * 2**16) / 2**16`` (within
    2**-17 of p), following torch's global generator of ``device`` (``_random_int16``): four 16-bit draws per
    64-bit random number, which on CPU costs a quarter of ``bernoulli_``'s (the attention weights' dropout mask is [B, heads, N, N],
    the largest random draw of a training step)."""
    return _random_int16(shape, device) >= round(p * 65536) - 32768


def dropout_keep_float(shape: tuple[int, ...], p: float, device: torch.device, dtype: torch.dtype,
                       scale: float = 1.0) -> Tensor:
    """``dropout_keep_mask`` (the same draws) as ``scale`` (kept) / 0 (dropped) in ``dtype``: applied by one
    multiplication, which on CPU runs several times faster than ``masked_fill`` or ``where`` with a bool mask
    (measured on [128, 1, 200, 200]: 3.8 ms against 18-21 ms, one thread), forward and backward alike."""
    keep = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(_random_int16(shape, device), round(p * 65536) - 32768, out=keep)  # written as 1.0 / 0.0
    return keep if scale == 1.0 else keep.mul_(scale)


def _random_int16(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Uniform int16 values of ``shape``, four per 64-bit draw, following torch's global generator of ``device``
    (``torch.manual_seed`` makes them repeat).  On CPU the bits come from numpy's SFC64, seeded by one draw of
    torch's generator: torch's CPU generator (mt19937, with a 64-bit modulo for a full-range ``randint``) took
    7.4 ms for 1.28M 64-bit values, SFC64 1.5 ms (one thread), and these masks are a training step's largest
    random draws."""
    n = math.prod(shape)
    words = (n + 3) // 4
    if torch.device(device).type == "cpu":
        seed = int(torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64))
        bits = torch.from_numpy(np.random.SFC64(seed).random_raw(words).view(np.int16))
    else:
        bits = torch.randint(-2**63, 2**63 - 1, (words,), dtype=torch.int64, device=device).view(torch.int16)
    return bits[:n].view(shape)


class Dropout(nn.Module):
    """``nn.Dropout`` with its mask from ``dropout_keep_mask`` on CPU (a quarter of the random draws, one pass
    fewer); ``F.dropout`` elsewhere."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":  # a fused kernel there
            return F.dropout(x, self.p, training=True)
        return x * dropout_keep_float(x.shape, self.p, x.device, x.dtype, scale=1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)  # q, k, v in one matmul
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = cfg.dropout
        self.resid_drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor, allowed: Tensor | None, bias: Tensor | None = None) -> Tensor:
        # x [B, N, d]; allowed [B, 1, N, N] bool, True where query i may attend to key j; bias: the same as
        # 0 / -inf floats (``attention_bias``), given instead of ``allowed`` when the CPU dropout path runs
        B, N, d = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).split(d, dim=2))  # 3 x [B, nh, N, hs]
        if self.training and self.dropout > 0 and x.device.type == "cpu":  # (GPUs: SDPA's fused kernels)
            y = self._attend_with_dropout(q, k, v, attention_bias(allowed, q.dtype) if bias is None else bias)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                               dropout_p=self.dropout if self.training else 0.0)  # [B, nh, N, hs]
        y = y.transpose(1, 2).contiguous().view(B, N, d)  # [B, N, d]
        return self.resid_drop(self.proj(y))

    def forward_packed(self, h: Tensor, rows: Tensor, B: int, L: int, key_bias: Tensor) -> Tensor:
        """The same map on the packed real tokens h [T, d] of a [B, L] batch (``rows``: their flat indices): q, k, v
        are made for the T tokens only and placed in a [B, L] grid (zeros at padding) for attention, whose output
        is read back at the T rows.  ``key_bias`` [B, L]: ``key_padding_bias`` (real keys 0, padding a large
        negative).  Used by ``SASRec.run_stack`` on the CPU training path (see ``SASRec._run_packed``)."""
        d = h.shape[1]
        # Each of q, k, v gets a zero grid of its own (in place: no clone): a shared [B * L, 3d] grid would make
        # the backward pass concatenate three [B, L, d] gradients, padding included.
        q, k, v = (self._heads(h.new_zeros(B * L, d).index_copy_(0, rows, t).view(B, L, d))
                   for t in self.qkv(h).split(d, dim=1))
        y = self._attend_with_dropout(q, k, v, key_bias)  # [B, nh, L, hs]
        y = y.transpose(1, 2).reshape(B * L, d).index_select(0, rows)  # [T, d]
        return self.resid_drop(self.proj(y))

    def _heads(self, t: Tensor) -> Tensor:
        """[B, N, d] -> [B, nh, N, hs] (a view)."""
        B, N, d = t.shape
        return t.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2)

    def _attend_with_dropout(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor,
                             query_blocks: int | None = None) -> Tensor:
        """softmax(q k^T / sqrt(hs) + bias) with dropout on the weights, @ v: what
        ``scaled_dot_product_attention(..., dropout_p)`` computes, in less work and fewer passes over the
        [B, nh, N, N] weights on CPU (whose SDPA then takes its unfused path; the weights are the largest tensors
        of a step and every elementwise pass over them costs about as much as their matmuls).

        - The scale and the 0 / -inf bias enter the scores' matmul itself (``baddbmm``): no masking pass forward,
          none in the backward pass, where the softmax's zero weights already give blocked keys a zero gradient.
        - Causality skips work: the queries are cut into ``query_blocks`` row blocks (default
          ``query_blocks_for(N)``), and a block's scores, softmax, dropout and matmul with v cover only the keys up
          to its last row; the keys after it are blocked for every query of the block, so each row's softmax is
          the same.  Two blocks do 3/4 of the work: measured at B128, N200, one thread, attention forward and
          backward 53 ms against 74 ms for one block; at N = 100 there was no gain (``query_blocks_for``).
        - The dropout mask, drawn by ``dropout_keep_float`` block by block ([B * nh, rows, keys up to the block's
          last row], in block order), is one multiplication each way; the 1 / (1 - p) rescaling is applied to v
          ([B, nh, N, hs], hs << N).  Without dropout (p = 0) there is no mask.
        - ``bias`` is either the full [B, 1, N, N] 0 / -inf mask (``attention_bias``, ``causal_key_bias``: any
          mask) or the keys' [B, N] ``key_padding_bias`` (SASRec's own mask, when every real query is also a key):
          then no [B, N, N] bias is built; the keys' row broadcasts into the scores' matmul and the causal -inf
          goes in place into each block's diagonal square only.  A padding query then reads the padding keys
          before it (a finite bias, so no row is all -inf) instead of only itself; padding rows are zeroed after
          every block (or never computed: ``SASRec._run_packed``), and real rows are the same."""
        B, H, N, hs = q.shape
        by_key = bias.dim() == 2
        if by_key:  # [B, N] -> [B * nh, 1, N]
            bias = bias.repeat_interleave(H, dim=0).unsqueeze(1) if H > 1 else bias.unsqueeze(1)
            causal = torch.full((N, N), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        else:
            bias = bias.expand(B, H, N, N).reshape(B * H, N, N)  # a view when H = 1
        q, k = q.reshape(B * H, N, hs), k.reshape(B * H, N, hs)
        v = (v * (1.0 / (1.0 - self.dropout)) if self.dropout > 0 else v).reshape(B * H, N, hs)
        per_block = math.ceil(N / (query_blocks or query_blocks_for(N)))
        out = []
        for start in range(0, N, per_block):
            end = min(N, start + per_block)  # queries start..end-1 see keys 0..end-1 at most
            scores = torch.baddbmm(bias[:, :, :end] if by_key else bias[:, start:end, :end], q[:, start:end],
                                   k[:, :end].transpose(1, 2), alpha=1.0 / math.sqrt(hs))
            if by_key:  # keys start..end-1: the causal triangle of this block's queries
                scores[:, :, start:end].add_(causal[start:end, start:end])
            weights = torch.softmax(scores, dim=-1)
            if self.dropout > 0:  # this block's mask only: the keys after it are never read
                weights = weights * dropout_keep_float(weights.shape, self.dropout, q.device, q.dtype)
            out.append(weights @ v[:, :end])  # [B * nh, end - start, hs]
        return (out[0] if len(out) == 1 else torch.cat(out, dim=1)).view(B, H, N, hs)


def query_blocks_for(n: int) -> int:
    """Row blocks of causal attention on CPU (``CausalSelfAttention._attend_with_dropout``) for a window of n: two
    from 128 positions on (3/4 of the work), one below, where the smaller matmuls' overhead ate the saving
    (measured at N = 100: no gain; N = 50: 10% slower)."""
    return 2 if n >= 128 else 1


def key_padding_bias(keys: Tensor, dtype: torch.dtype) -> Tensor:
    """keys [B, N] bool -> [B, N]: 0 for a key, half the dtype's lowest value for padding: after the softmax's
    max subtraction its weight is exactly 0 next to any real key, and a row with no real key stays finite."""
    return torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill_(~keys, torch.finfo(dtype).min / 2)


def attention_bias(allowed: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, 1, N, N] bool (True: may attend) -> the same shape of 0 (allowed) / -inf (blocked) in ``dtype``."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def causal_key_bias(keys: Tensor, dtype: torch.dtype) -> Tensor:
    """``attention_bias`` of SASRec's mask, (causal & keys) | eye, from keys [B, N] bool, in one broadcast add
    instead of passes over a [B, N, N] bool mask: a [N, N] causal bias plus each row's [N] key bias, then 0 on
    the diagonal (every query sees itself, so no row is all -inf)."""
    B, N = keys.shape
    causal = torch.full((N, N), float("-inf"), dtype=dtype, device=keys.device).triu_(1)  # 0 on and below
    key = torch.zeros((B, N), dtype=dtype, device=keys.device).masked_fill_(~keys, float("-inf"))
    bias = causal + key[:, None, :]  # [B, N, N]
    bias.diagonal(dim1=-2, dim2=-1).zero_()
    return bias.unsqueeze(1)  # [B, 1, N, N]


class FeedForward(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        inner = cfg.ffn_mult * cfg.hidden
        self.fc = nn.Linear(cfg.hidden, inner)
        self.out = nn.Linear(inner, cfg.hidden)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.out(self.drop(F.relu(self.fc(x)))))


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.ffn = FeedForward(cfg)

    def forward(self, x: Tensor, allowed: Tensor | None, bias: Tensor | None = None) -> Tensor:
        return self._layout(x, lambda h: self.attn(h, allowed, bias))

    def forward_packed(self, x: Tensor, rows: Tensor, B: int, L: int, key_bias: Tensor) -> Tensor:
        """``forward`` on the packed real tokens x [T, d] (see ``CausalSelfAttention.forward_packed``)."""
        return self._layout(x, lambda h: self.attn.forward_packed(h, rows, B, L, key_bias))

    def _layout(self, x: Tensor, attend: Callable[[Tensor], Tensor]) -> Tensor:
        """Pre-norm (``norm_first``) or post-norm residual sublayers around ``attend`` and the FFN."""
        if self.norm_first:
            x = x + attend(self.ln1(x))
            return x + self.ffn(self.ln2(x))
        x = self.ln1(x + attend(x))
        return self.ln2(x + self.ffn(x))


class SASRec(NextItemEncoder):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.config = cfg
        self._build_embeddings(cfg.n_items, cfg.n_behaviors, cfg.max_len, cfg.hidden, cfg.dropout, cfg.use_behavior)
        self.emb_drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.reset_parameters()

    @property
    def n_stack_layers(self) -> int:
        return len(self.blocks)

    def head_modules(self) -> list[str]:
        if not self.blocks:
            return super().head_modules()
        return [f"blocks.{len(self.blocks) - 1}", "ln_f"]

    def run_stack(self, x: Tensor, valid: Tensor, behaviors: Tensor,
                  layer_hook: Callable[[int, Tensor], Tensor] | None = None,
                  tokens: Tensor | None = None) -> Tensor:
        """Causal self-attention blocks + final LayerNorm over embedded tokens x [B, L, d] -> [B, L, d].  Keys are
        the ``tokens`` (default: ``valid``; see ``NextItemEncoder.run_stack``)."""
        L = x.shape[1]
        keys = valid if tokens is None else tokens if tokens.dtype == torch.bool else tokens > 0.5
        if (self.training and x.device.type == "cpu" and layer_hook is None
                and (keys is valid or torch.equal(keys, valid))):
            return self._run_packed(x, valid)
        mask = valid.unsqueeze(-1).to(x.dtype)  # [B, L, 1]
        # Query i may see key j if j <= i and j is a real token; every query may see itself, so no row is empty.
        # The CPU training path (attention with dropout) reads this mask only as a bias inside the scores' matmul,
        # built once for every block; the other paths (SDPA) read it as a bool mask.
        allowed = bias = None
        if self.training and self.config.dropout > 0 and x.device.type == "cpu":
            bias = causal_key_bias(keys, x.dtype)  # [B, 1, L, L]
        else:
            causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()  # [L, L]
            eye = torch.eye(L, dtype=torch.bool, device=x.device)
            allowed = ((causal & keys[:, None, :]) | eye).unsqueeze(1)  # [B, 1, L, L], broadcast over heads
        for layer, block in enumerate(self.blocks):
            if layer_hook is not None:
                x = layer_hook(layer, x)
            x = block(x, allowed, bias) * mask
        return self.ln_f(x)  # [B, L, d]

    def _run_packed(self, x: Tensor, valid: Tensor) -> Tensor:
        """``run_stack`` for CPU training without hooks, where the keys are the valid events: the blocks run on the
        T real tokens only, packed as [T, d] (the linear layers, norms, FFN, dropout and residuals of a
        left-padded batch otherwise spend ~46% of their work on padding at ML-1M's window of 200); attention
        places them in the [B, L] grid (``CausalSelfAttention.forward_packed``).  Real positions get the states
        of the padded layout: a real query reads only real keys in both.  Padding positions get the state of
        no input, ln_f(0), as in the padded layout.  Dropout draws other masks than the padded layout (one per
        real token), so seeded training runs differ from it."""
        B, L, d = x.shape
        rows = valid.reshape(-1).nonzero().squeeze(1)  # [T] flat indices of the real tokens
        key_bias = key_padding_bias(valid, x.dtype)  # [B, L], once for every block
        h = x.reshape(B * L, d).index_select(0, rows)  # [T, d]
        for block in self.blocks:
            h = block.forward_packed(h, rows, B, L, key_bias)
        empty = self.ln_f(x.new_zeros(1, d)).expand(B * L, d)  # the state of a padding position
        return empty.index_copy(0, rows, self.ln_f(h)).view(B, L, d)
