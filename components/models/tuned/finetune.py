"""``finetune``: full fine-tuning, PPR's fair baseline.  Every base weight is tuned, plus the same profile side
model PPR has: ``u = f_seq(s_u) + MLP_a(x_u)``.  No prompt; the zero-shot state is the encoder's state for an
empty history (plus the side model)."""

from __future__ import annotations

from torch import Tensor

from components.models.tuned.base import TunedRecommender


class Finetune(TunedRecommender):
    frozen_base = False

    def _encode(self, items: Tensor, behaviors: Tensor, x: Tensor | None,
                event_mask: Tensor | None) -> tuple[Tensor, Tensor, None]:
        if event_mask is not None:
            raise ValueError("finetune has no contrastive views")
        h = self.base.encode(items, behaviors)
        empty = self.base.encode(items[:, -1:] * 0, behaviors[:, -1:] * 0)[:, -1]
        return h, empty, None
