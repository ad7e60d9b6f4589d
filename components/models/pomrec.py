"""PoMRec: prompt-based multi-interest learning (reconstruction from the paper's summary and methods.md).

Two learnable prompt tables are prepended to the user's sequence: PF for the multi-interest **extractor**, PG for
the interest-weight **aggregator** (public code: 4 prompts each).

- Extractor: self-attention soft-clusters the PF-augmented sequence into K interests.  Where the summary gives no
  formula we use the structured self-attention of ComiRec-SA / Lin et al. 2017, which multi-interest models build
  on: logits ``A = W2 tanh(W1 s_t)`` [K per token]; interest k's weights are ``softmax_t(A_k)``.  Each interest is
  the weighted **mean** of the tokens plus ``lam`` times their weighted **standard deviation** (per dimension):
  centrality plus dispersion (the public code: ``lam = 3``; ours is chosen on validation, see below).
- Aggregator: attention pooling over the PG-augmented sequence (``softmax_t(w tanh(W s_t))``) and an MLP give K
  logits, softmaxed into interest weights; the user vector is the weighted sum of the K interests.

Every position gets a state, so the model trains on every next item of a sequence like the other encoders (one
pass, no per-prefix recomputation): the attention logits do not depend on the query position, so the causal
softmax over the prefix ``prompts + s_1..s_t`` is a running sum, and so are the weighted mean and second moment.
A sequence with no events (a zero-shot user) is summarised by the prompts alone.

``lam``, chosen on validation targets only (``python -m bench.pomrec_lam standalone|tuning``; sampled-99 NDCG@10,
the project's model-selection metric).  The public code's 3 makes the dispersion term dominate when the model
reads raw item embeddings: the per-dimension standard deviation is non-negative, so ``3 * std`` pulls every
interest towards the same all-positive direction and the ranking towards popularity.
- Standalone (``PoMRecConfig.lam``): Taobao head, ``tests/models/test_learning_real.py``'s setting (5 epochs),
  warm users' ``valid`` targets (n = 141), mean of seeds 0-2, NDCG@10 (HR@10): lam 0: 0.731 (0.832), 0.1: 0.726
  (0.837), 0.3: 0.654 (0.816), 0.5: 0.566 (0.778), 1: 0.398 (0.643), 3: 0.294 (0.534).  Default 0: the interests
  are the attention-weighted means.  (The earlier default 0.3 had been read off *test* HR@10; superseded.)
- Tuning head (``TuningConfig.interest_lam``, over a frozen encoder's LayerNorm-ed states): ML-1M cold-start
  (``configs/ml1m.pomrec.yaml``, SASRec pre-trained 6 epochs, seed 0), ``cold_valid`` (n = 1,933), NDCG@10:
  lam 0: 0.4299, 0.1: 0.4296, 0.3: 0.4299, 1: 0.4277, 3 (the paper's): 0.4275.  Default 0, the best, but the
  whole range is 0.0024, well inside one standard error (about 0.01): validation barely tells the values apart.

:class:`MultiInterest` is the part shared by the standalone model (:class:`PoMRec`, architecture ``pomrec``: over
the behavior-aware item embeddings) and the prompt-tuning head (``components.models.tuned.methods``, ``tuning: pomrec``:
over a frozen pre-trained encoder's hidden states).  The paper trains with BPR: set ``training.loss: bpr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from components.models.base import EncoderConfig, NextItemEncoder


def _prefix_softmax_pool(logits: Tensor, x: Tensor, valid: Tensor, bound: Tensor) -> tuple[Tensor, Tensor]:
    """Causal attention pooling with position-independent logits.

    logits [B, L, K], x [B, L, d], valid [B, L] -> (mean [B, L, K, d], second moment [B, L, K, d]): for every
    position t and head k, the softmax over s <= t (valid s only) of logits[:, s, k] weighting x_s and x_s^2.

    ``bound`` [K] >= |logits| (from the weights: the logits are a bias-free linear map of a tanh).  Subtracting
    it instead of the row's maximum keeps exp() from overflowing without a statistic of the whole window: the
    maximum over the row would read the events after t and, through rounding and underflow, move the state at t
    (a future leak: up to 5e-3 with large logits).  With ``bound`` every weight lies in [exp(-2 bound), 1]; the
    sums run in float64 when that range leaves float32's (a choice made from the weights, never from the data)."""
    bound = bound.detach().float()
    dtype = torch.float64 if float(bound.max()) > 40.0 else torch.float32
    w = torch.exp(logits.to(dtype) - bound.to(dtype)) * valid[..., None].to(dtype)  # [B, L, K], 0 at invalid tokens
    xf = x.to(dtype)
    den = w.cumsum(dim=1).clamp(min=1e-300 if dtype == torch.float64 else 1e-30)[..., None]  # [B, L, K, 1]
    mean = (w[..., None] * xf[:, :, None, :]).cumsum(dim=1) / den
    second = (w[..., None] * (xf * xf)[:, :, None, :]).cumsum(dim=1) / den
    return mean.float(), second.float()


class MultiInterest(nn.Module):
    """Prompt-augmented multi-interest extractor + aggregator over a sequence of vectors (see module docstring)."""

    def __init__(self, hidden: int, n_interests: int = 3, n_prompts: int = 4, lam: float = 3.0,
                 attn_hidden: int | None = None):
        super().__init__()
        a = attn_hidden or 4 * hidden
        self.n_prompts, self.lam = n_prompts, lam
        self.pf = nn.Parameter(torch.randn(n_prompts, hidden) * 0.02)  # extractor prompts
        self.pg = nn.Parameter(torch.randn(n_prompts, hidden) * 0.02)  # aggregator prompts
        self.ext_in = nn.Linear(hidden, a)
        self.ext_out = nn.Linear(a, n_interests, bias=False)
        self.agg_in = nn.Linear(hidden, a)
        self.agg_out = nn.Linear(a, 1, bias=False)
        self.agg_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_interests))

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, N, d] (left-padded, padding anywhere is ignored), valid [B, N] -> (states [B, N, d]: the user
        vector after each position, prompt-only state [B, d]: the user vector of an empty history)."""
        B, N, d = x.shape
        p = self.n_prompts
        ones = torch.ones(B, p, dtype=torch.bool, device=x.device)
        v = torch.cat([ones, valid], dim=1)  # [B, p+N]
        xf = torch.cat([self.pf.to(x.dtype).expand(B, p, d), x], dim=1)
        xg = torch.cat([self.pg.to(x.dtype).expand(B, p, d), x], dim=1)
        ext_bound = self.ext_out.weight.abs().sum(dim=1)  # [K] >= |logit|: tanh lies in [-1, 1]
        mean, second = _prefix_softmax_pool(self.ext_out(torch.tanh(self.ext_in(xf))), xf, v, ext_bound)
        std = (second - mean * mean).clamp(min=0).add(1e-8).sqrt()
        interests = mean + self.lam * std  # [B, p+N, K, d]
        agg_bound = self.agg_out.weight.abs().sum(dim=1)  # [1]
        pooled, _ = _prefix_softmax_pool(self.agg_out(torch.tanh(self.agg_in(xg))), xg, v, agg_bound)  # [B,p+N,1,d]
        weights = torch.softmax(self.agg_mlp(pooled[:, :, 0]).float(), dim=-1)  # [B, p+N, K]
        user = (weights[..., None] * interests).sum(dim=2).to(x.dtype)  # [B, p+N, d]
        return user[:, p:], user[:, p - 1]


@dataclass
class PoMRecConfig(EncoderConfig):
    """(``n_layers`` and ``n_heads`` are accepted like every encoder option; PoMRec reads the embedded events
    directly: one interest layer, no attention heads.)"""

    max_len: int = 50
    n_layers: int = 1
    n_interests: int = 3
    n_prompts: int = 4
    lam: float = 0.0  # chosen on valid (module docstring); the paper's code uses 3, which swamps the mean here

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.n_interests < 1 or self.n_prompts < 1:
            problems.append(f"n_interests={self.n_interests} and n_prompts={self.n_prompts} must be >= 1")
        return problems


class PoMRec(NextItemEncoder):
    """Standalone PoMRec: behavior-aware item embeddings -> :class:`MultiInterest`; scores by dot product."""

    def __init__(self, cfg: PoMRecConfig):
        super().__init__()
        self.config = cfg
        self._build_embeddings(cfg.n_items, cfg.n_behaviors, cfg.max_len, cfg.hidden, cfg.dropout, cfg.use_behavior)
        self.interest = MultiInterest(cfg.hidden, cfg.n_interests, cfg.n_prompts, cfg.lam)
        self.reset_parameters()

    @property
    def n_stack_layers(self) -> int:
        return 1

    def encode(self, items: Tensor, behaviors: Tensor) -> Tensor:
        x, valid = self.embed(items, behaviors)
        # Padding adds nothing to the running sums, so a position with no event at or before it (left padding, or
        # a zero-shot row) already holds the prompt-only state.
        return self.interest(x, valid)[0]
