"""GRU4Rec (Hidasi et al., ICLR 2016): the recurrent next-item model every sequential recommender is compared with.

The session's events are read in order by a stack of GRU layers; the hidden state after event t scores the next
item by dot product with the item table (as every encoder here does).  Differences from the 2016 paper, each a
choice this project makes for all its encoders so that they compare under one protocol:

- the input is the shared behavior-aware embedding (item * sqrt(d) + behavior + position), not a one-hot item;
  the position term is redundant for a recurrent model and harmless;
- training is the trainer's next-item loss at every position (``ce`` full softmax, or ``bce`` / ``bpr`` with a
  sampled negative), not session-parallel mini-batches with in-batch negatives;
- a final LayerNorm, as SASRec's pre-LN stack and EBM have, before scoring.

Causality and padding: windows are left-padded, and a GRU fed padding before the first event would start that
event from a state the padding moved.  Each row is therefore right-aligned before the recurrence (its first
event, or first prompt token, at step 0) and shifted back after, so the state after event t depends on the
events up to t only, whatever the padding, and a row never reads another row.  Prompt tuning works as for the
other encoders: prefix tokens are read first, and ``layer_hook`` replaces their slots before every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from components.models.base import EncoderConfig, NextItemEncoder


@dataclass
class GRU4RecConfig(EncoderConfig):
    """(``n_heads`` is accepted like every encoder option; a GRU has no attention heads.)"""

    n_layers: int = 1  # GRU layers (the paper: 1)

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.n_layers < 1:
            problems.append(f"n_layers={self.n_layers} must be >= 1 (a GRU4Rec without a GRU)")
        return problems


def _shift(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate each row of x [B, L, d] left by its ``shift`` [B, 1] columns (right by a negative shift)."""
    B, L, d = x.shape
    cols = torch.arange(L, device=x.device)[None, :]
    return torch.gather(x, 1, ((cols + shift) % L)[..., None].expand(B, L, d))


class GRU4Rec(NextItemEncoder):
    def __init__(self, cfg: GRU4RecConfig):
        super().__init__()
        self.config = cfg
        self._build_embeddings(cfg.n_items, cfg.n_behaviors, cfg.max_len, cfg.hidden, cfg.dropout, cfg.use_behavior)
        self.grus = nn.ModuleList(nn.GRU(cfg.hidden, cfg.hidden, batch_first=True) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.reset_parameters()

    def _init_extra(self, generator: torch.Generator) -> None:
        """Recurrent weights start orthogonal and input weights Xavier-uniform (the usual RNN start; N(0, 0.02)
        would leave the gates nearly constant and the state barely moving), from the config's seed."""
        with torch.no_grad():
            for gru in self.grus:
                for gate in range(3):  # reset, update, new: one block each of the stacked [3d, d] matrices
                    rows = slice(gate * self.config.hidden, (gate + 1) * self.config.hidden)
                    nn.init.xavier_uniform_(gru.weight_ih_l0[rows], generator=generator)
                    nn.init.orthogonal_(gru.weight_hh_l0[rows], generator=generator)

    @property
    def n_stack_layers(self) -> int:
        return self.config.n_layers

    def head_modules(self) -> list[str]:
        return [f"grus.{len(self.grus) - 1}", "norm"]

    def run_stack(self, x: Tensor, valid: Tensor, behaviors: Tensor,
                  layer_hook: Callable[[int, Tensor], Tensor] | None = None,
                  tokens: Tensor | None = None) -> Tensor:
        if tokens is not None and not torch.equal(tokens.bool(), valid):
            # A recurrence reads every slot it passes; an event that feeds no later position (END4Rec's dropped
            # events) would need a per-step loop.  No caller here does that with a GRU.
            raise ValueError("GRU4Rec: every valid slot must be a token (no dropped events)")
        L = x.shape[1]
        shift = (L - valid.sum(dim=1))[:, None]  # left padding of each row
        keep = valid[..., None].to(x.dtype)
        h = x
        for layer, gru in enumerate(self.grus):
            if layer_hook is not None:
                h = layer_hook(layer, h)
            out, _ = gru(_shift(h * keep, shift))  # events first: step k reads slots 0..k of the row only
            h = self.drop(_shift(out, -shift)) * keep
        return self.norm(h) * keep
