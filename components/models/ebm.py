"""EBM, the Efficient Behavior Miner (END4Rec, DPCPL): frequency-domain filtering instead of self-attention.

Per layer, on behavior-aware embeddings (item + behavior + position, as every encoder here):

1. **Global filter** (after FMLP-Rec): the sequence is taken to the frequency domain with ``torch.fft.rfft``,
   multiplied by a learnable complex filter (one value per frequency and channel) and brought back with
   ``irfft``: O(N log N) against attention's O(N^2).  Everything stays in torch, so the filter gets gradients (the
   authors' public code goes through numpy and loses them).
2. **Frequency fusion with the Chunked Diagonal Mechanism**: the filtered channels are mixed by a block-diagonal
   d x d matrix (k chunks of d/k: d*d/k parameters).  A real matrix that is the same at every frequency commutes
   with the FFT, so it is applied after ``irfft``, where it costs N instead of N+1 complex products.
3. Dropout, residual, LayerNorm; then a chunked-diagonal feed-forward (two block-diagonal layers with a channel
   shuffle between chunks), again with residual and LayerNorm.
4. **Behavior mixer** (reconstruction; the summaries name it without a formula): each event's channels are scaled
   and shifted by its behavior, x * (1 + gamma_b) + beta_b, starting as the identity.  This lets a layer treat a
   click and a buy of the same item differently at every depth, not only at the input.

Choice made here, where the papers and FMLP-Rec differ from what next-item training needs: **the filter is
causal.**  FMLP-Rec multiplies the spectrum by a free complex weight, i.e. a *circular* convolution in which every
position sees the whole window, including the events after it.  FMLP-Rec's own trainer is not affected: it
expands every sequence into its prefixes and scores only the last position of each, so the window never holds an
event after the one predicted.  We train on every position's next item in one pass (as SASRec does), where a
circular filter would let each position read its label.  Here the learnable filter is the spectrum of a
causal kernel of length ``max_len`` (the kernel is the parameter; its rFFT is the per-frequency, per-channel
complex filter), and the transform is zero-padded to 2N so the product is a linear, not circular, convolution:
output t depends on events <= t only, which ``tests/models/test_ebm.py`` and ``test_causality.py`` check.  With
left padding (padding events are zero vectors) the output for a prefix does not depend on how much padding
precedes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.base import ChunkedDiagonalLinear, EncoderConfig, NextItemEncoder


@dataclass
class EBMConfig(EncoderConfig):
    """(``n_heads`` is accepted like every encoder option; EBM mixes positions with FFT filters, it has no
    attention heads.)"""

    chunks: int = 8  # k of the Chunked Diagonal Mechanism (DPCPL: 8..12 best; END4Rec's code: 4)
    behavior_mixer: bool = True

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.chunks < 1 or self.hidden % self.chunks != 0:
            problems.append(f"hidden={self.hidden} must be divisible by chunks={self.chunks}")
        return problems


def causal_fft_conv(x: Tensor, kernel: Tensor) -> Tensor:
    """y[:, t] = sum_{s <= t} kernel[t - s] * x[:, s], per channel, through the FFT.

    x [B, N, d], kernel [K, d] with K >= N (only its first N taps can reach inside the window).  Zero-padding both
    to 2N makes the spectral product a linear convolution; computed in float32 (FFTs in half precision need
    power-of-two sizes and lose accuracy) and returned in x's dtype."""
    n = x.shape[1]
    size = 2 * n
    spec_x = torch.fft.rfft(x.float(), n=size, dim=1)  # [B, n+1, d] complex
    spec_k = torch.fft.rfft(kernel[:n].float(), n=size, dim=0)  # [n+1, d]: the per-frequency complex filter
    return torch.fft.irfft(spec_x * spec_k, n=size, dim=1)[:, :n].to(x.dtype)


class FilterLayer(nn.Module):
    """Learnable causal global filter + chunked-diagonal frequency fusion, residual, LayerNorm."""

    def __init__(self, cfg: EBMConfig):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(cfg.max_len, cfg.hidden))  # time-domain taps, one set per channel
        self.fusion = ChunkedDiagonalLinear(cfg.hidden, cfg.chunks, shuffle=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.ln = nn.LayerNorm(cfg.hidden)

    def forward(self, x: Tensor, tokens: Tensor | None = None) -> Tensor:
        """x [B, N, d]; ``tokens`` [B, N, 1] (0/1): only those slots are mixed into other positions (default: all;
        padding is already zero)."""
        source = x if tokens is None else x * tokens
        return self.ln(x + self.drop(self.fusion(causal_fft_conv(source, self.kernel))))


class ChunkedFeedForward(nn.Module):
    def __init__(self, cfg: EBMConfig):
        super().__init__()
        self.fc = ChunkedDiagonalLinear(cfg.hidden, cfg.chunks, shuffle=True)
        self.out = ChunkedDiagonalLinear(cfg.hidden, cfg.chunks, shuffle=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.ln = nn.LayerNorm(cfg.hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x + self.drop(self.out(self.drop(F.gelu(self.fc(x))))))


class BehaviorMixer(nn.Module):
    """x * (1 + gamma[b]) + beta[b] per event, by its behavior b (0 = padding: identity)."""

    def __init__(self, cfg: EBMConfig):
        super().__init__()
        self.gamma = nn.Embedding(cfg.n_behaviors + 1, cfg.hidden, padding_idx=0)
        self.beta = nn.Embedding(cfg.n_behaviors + 1, cfg.hidden, padding_idx=0)

    def forward(self, x: Tensor, behaviors: Tensor) -> Tensor:
        return x * (1 + self.gamma(behaviors)) + self.beta(behaviors)


class EBMLayer(nn.Module):
    def __init__(self, cfg: EBMConfig):
        super().__init__()
        self.filter = FilterLayer(cfg)
        self.ffn = ChunkedFeedForward(cfg)
        self.mixer = BehaviorMixer(cfg) if cfg.behavior_mixer and cfg.use_behavior else None

    def forward(self, x: Tensor, behaviors: Tensor, mask: Tensor, tokens: Tensor | None = None) -> Tensor:
        x = self.ffn(self.filter(x, tokens))
        if self.mixer is not None:
            x = self.mixer(x, behaviors)
        return x * mask


class EBM(NextItemEncoder):
    """Behavior-aware embedding -> n_layers EBM layers -> LayerNorm; scores by dot product with the item table."""

    def __init__(self, cfg: EBMConfig):
        super().__init__()
        self.config = cfg
        self._build_embeddings(cfg.n_items, cfg.n_behaviors, cfg.max_len, cfg.hidden, cfg.dropout, cfg.use_behavior)
        self.layers = nn.ModuleList(EBMLayer(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.reset_parameters()

    def _init_extra(self, generator: torch.Generator) -> None:
        for layer in self.layers:
            if layer.mixer is not None:  # the behavior mixer starts as the identity
                layer.mixer.gamma.weight.zero_()
                layer.mixer.beta.weight.zero_()

    @property
    def n_stack_layers(self) -> int:
        return len(self.layers)

    def head_modules(self) -> list[str]:
        if not self.layers:
            return super().head_modules()
        return [f"layers.{len(self.layers) - 1}", "ln_f"]

    def run_stack(self, x: Tensor, valid: Tensor, behaviors: Tensor,
                  layer_hook: Callable[[int, Tensor], Tensor] | None = None,
                  tokens: Tensor | None = None) -> Tensor:
        """EBM layers + final LayerNorm over embedded tokens x [B, L, d] -> [B, L, d].  The filter is the only
        place positions mix, so a slot outside ``tokens`` (see ``NextItemEncoder.run_stack``) is zeroed in the
        filter's input at every layer and nowhere else."""
        mask = valid.unsqueeze(-1).to(x.dtype)
        tok = None
        if tokens is not None and tokens is not valid:
            tok = tokens.unsqueeze(-1).to(x.dtype)
        for i, layer in enumerate(self.layers):
            if layer_hook is not None:
                x = layer_hook(i, x)
            x = layer(x, behaviors, mask, tok)
        return self.ln_f(x)
