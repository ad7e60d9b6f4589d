"""``pomrec``: PoMRec as a tuning head: :class:`components.models.pomrec.MultiInterest` (its PF/PG prompt tables,
K interests, mean + lam * std with ``interest_lam`` chosen on ``cold_valid``, attention + MLP
weights) over the frozen encoder's hidden states,
scored against the frozen item table, plus the profile side model where the data has profiles (our
choice, so that a zero-shot user's answer depends on its profile as it does for the other methods).
The paper trains with BPR (``training.loss: bpr``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from components.models.pomrec import MultiInterest
from components.models.tuned.base import TunedRecommender, TuningConfig


@dataclass
class PoMRecTuningConfig(TuningConfig):
    n_interests: int = 3
    interest_prompts: int = 4
    interest_lam: float = 0.0  # chosen on cold_valid (components.models.pomrec's docstring; the paper: 3)


class PoMRecHead(TunedRecommender):
    config: PoMRecTuningConfig
    frozen_base = True

    def _build(self, cfg: PoMRecTuningConfig, hidden: int, profile_dim: int) -> None:
        self.head = MultiInterest(hidden, cfg.n_interests, cfg.interest_prompts, cfg.interest_lam)

    def _encode(self, items: Tensor, behaviors: Tensor, x: Tensor | None,
                event_mask: Tensor | None) -> tuple[Tensor, Tensor, None]:
        # Nothing upstream of the head tunes when the base is frozen: no graph through the encoder.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_base):
            states = self.base.encode(items, behaviors)
        h, empty = self.head(states, items != 0)
        return h, empty, None
