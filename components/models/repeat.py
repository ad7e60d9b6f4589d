"""Repeat-aware scoring for any encoder: a learned mixture of a *repeat* mode over the user's own history and an
*explore* mode over the catalogue (after RepeatNet, Ren et al., AAAI 2019).

On e-commerce logs most next buys are items the user already clicked or carted (two thirds of the last buys on
the Taobao head).  A dot-product recommender has to learn "re-rank what this user touched" through its item
table; the history baseline (components.models.history) gets it for free.  This head gives every encoder the
same access: with h_t the encoder's state after event t,

    p_t      = sigmoid(w . h_t + b)                                  probability of the repeat mode
    a_{t,s}  = (W_q h_t) . (W_k h_s + beh_b[b_s]) / sqrt(d),  s <= t   attention over the history so far
    P_r(v|t) = sum over s <= t with item_s = v of softmax_s(a_{t,s})  repeat distribution (history items only)
    P_e(v|t) = softmax_v(h_t . E_v)                                 explore distribution (every item)
    P(v|t)   = p_t P_r(v|t) + (1 - p_t) P_e(v|t)

and the model is trained on -log P(label | t) at every labelled position (the full-softmax ``ce`` loss; the
sampled ``bce``/``bpr`` losses do not apply to a mixture of distributions and are refused).  Scores are
log P(v|t).  ``beh_b`` is a learned key bias per behavior (a cart may predict a buy better than a click).

Choices where RepeatNet differs: RepeatNet's explore mode excludes the history items; here it covers every item
(a pointer-generator style mixture), which keeps the explore normaliser one softmax over the catalogue, computed
in bounded chunks as the plain ``ce`` loss does.  Attention keys are the encoder's causal states, so position t
reads only events <= t and nothing of the other users in the batch (tests/models/test_causality.py).

The wrapped encoder is any architecture of ``components.models.registry.ARCHITECTURES`` (config ``encoder`` and
``encoder_config``); it is used through ``encode`` and ``output_embeddings``.  Encoders with extra training
terms of their own (END4Rec's contrastive and compactness losses, guided stages) train under this head's loss
alone: their denoising forward pass is used, their auxiliary losses are not added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.base import Batch, ConfigMixin, Recommender
from components.models.losses import logsumexp_items


@dataclass
class RepeatAwareConfig(ConfigMixin):
    n_items: int
    n_behaviors: int
    encoder: str = "sasrec"
    encoder_config: dict = field(default_factory=dict)
    mode_bias_init: float = 0.0  # initial logit of the repeat mode (0: p = 0.5)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder == "repeat":
            raise ValueError("RepeatAwareConfig: the encoder cannot itself be 'repeat'")

    def encoder_dict(self) -> dict:
        """The encoder's own config: its settings plus the catalogue sizes and seed this config holds."""
        return {"n_items": self.n_items, "n_behaviors": self.n_behaviors, "seed": self.seed, **self.encoder_config}


class RepeatAware(Recommender):

    def __init__(self, cfg: RepeatAwareConfig, encoder: nn.Module):
        """``encoder``: built from ``cfg.encoder`` and ``cfg.encoder_dict()`` (``components.models.registry``)."""
        super().__init__()
        self.config = cfg
        self.encoder = encoder
        d = self.encoder.config.hidden
        self.hidden = d
        self.mode = nn.Linear(d, 1)
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.behavior_key = nn.Embedding(cfg.n_behaviors + 1, d, padding_idx=0)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        with torch.no_grad():
            for lin in (self.query, self.key):
                lin.weight.copy_(torch.eye(d) + torch.randn(d, d, generator=g) * 0.02)
            self.mode.weight.copy_(torch.randn(1, d, generator=g) * 0.02)
            self.mode.bias.fill_(cfg.mode_bias_init)
            self.behavior_key.weight.copy_(torch.randn(cfg.n_behaviors + 1, d, generator=g) * 0.02)
            self.behavior_key.weight[0].zero_()

    @property
    def max_len(self) -> int:
        return self.encoder.max_len

    def encode(self, items: Tensor, behaviors: Tensor) -> Tensor:
        return self.encoder.encode(items, behaviors)

    def output_embeddings(self) -> Tensor:
        return self.encoder.output_embeddings()

    def _repeat_logits(self, h: Tensor, items: Tensor, behaviors: Tensor) -> Tensor:
        """[B, N, N] attention logits of position t (rows) over history positions s <= t (columns); -inf
        elsewhere (later positions, padding).  A padding row (left padding: nothing before it is real either)
        attends to itself only, so no row is empty and no NaN reaches the gradients; its mass lands on item 0,
        which is never scored or labelled."""
        B, N, d = h.shape
        q = self.query(h)
        valid = items != 0
        k = self.key(h) + self.behavior_key(behaviors.masked_fill(~valid, 0))
        logits = (q @ k.transpose(1, 2)).float() / math.sqrt(d)
        eye = torch.eye(N, dtype=torch.bool, device=h.device)
        allowed = torch.ones(N, N, dtype=torch.bool, device=h.device).tril()[None] & valid[:, None, :]
        allowed = allowed | (eye[None] & ~valid[:, :, None])
        return logits.masked_fill(~allowed, float("-inf"))

    def sequence_states(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """Per-position outputs the loss reads, for the causality tests: the encoder's state, the repeat mode's
        log-probability and the repeat attention's read-out over the history (``[B, N, 2d + 1]``)."""
        h = self.encode(items, behaviors)
        log_p, _, att = self.log_mixture_parts(h, items, behaviors)
        return torch.cat([h, log_p[..., None], att.exp() @ h], dim=-1)

    def log_mixture_parts(self, h: Tensor, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log p [B, N], log (1 - p) [B, N], log repeat attention [B, N, N])."""
        mode = self.mode(h).squeeze(-1).float()
        att = torch.log_softmax(self._repeat_logits(h, items, behaviors), dim=-1)
        return F.logsigmoid(mode), F.logsigmoid(-mode), att

    def loss(self, batch: Batch, kind: str) -> Tensor:
        items, behaviors, labels, mask = batch.items, batch.behaviors, batch.labels, batch.mask
        if kind != "ce":
            raise ValueError(f"the repeat-aware head trains with the full-softmax loss (ce), not {kind!r}")
        h = self.encode(items, behaviors)
        log_p, log_q, att = self.log_mixture_parts(h, items, behaviors)
        table = self.output_embeddings()
        hm, y = h[mask], labels[mask]  # [M, d], [M]
        log_explore = (hm * table[y]).sum(-1).float() - logsumexp_items(hm, table)
        # P_r(y | t): attention mass on the history positions holding the label's item; clamped before the log so
        # a label outside the history (P_r = 0) gives a finite, gradient-free repeat term instead of NaN.
        same = (items[:, None, :] == labels[:, :, None]) & (items != 0)[:, None, :]  # [B, N(t), N(s)]
        repeat_mass = (att.exp() * same).sum(-1)[mask]
        log_repeat = repeat_mass.clamp(min=1e-30).log()
        log_prob = torch.logaddexp(log_p[mask] + log_repeat, log_q[mask] + log_explore)
        return -log_prob.mean()

    def score_all(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories -> [B, n_items + 1] log P(v | history); column 0 (padding) is -inf."""
        h = self.encode(items, behaviors)
        log_p, log_q, att = self.log_mixture_parts(h, items, behaviors)
        last = h[:, -1]
        table = self.output_embeddings()
        log_explore = torch.log_softmax((last @ table[1:].T).float(), dim=-1)
        mass = torch.zeros(items.shape[0], table.shape[0], device=h.device)
        mass.scatter_add_(1, items, att[:, -1].exp().masked_fill(items == 0, 0.0))
        mass[:, 0] = 0.0
        # An empty history (zero-shot) has nothing to repeat: the explore mode takes all the mass.
        empty = items[:, -1:] == 0
        log_p = log_p[:, -1:].masked_fill(empty, float("-inf"))
        log_q = log_q[:, -1:].masked_fill(empty, 0.0)
        scores = torch.full_like(mass, float("-inf"))
        scores[:, 1:] = torch.logaddexp(log_p + mass[:, 1:].log(), log_q + log_explore)
        return scores

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor,
                    profiles: Tensor | None = None) -> Tensor:
        return self.score_all(items, behaviors).gather(1, candidates).masked_fill(candidates == 0, float("-inf"))
