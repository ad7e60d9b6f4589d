"""``ppr_light`` / ``ppr_full``: PPR (Wu et al., TKDE 2024), personalized prompts generated from user profiles.

The generator ``P_u = W2 relu(W1 x_u + b1) + b2`` (x_u = concatenated profile-field embeddings; ``n_prompts``
tokens, PPR uses 1) is prefixed to the sequence, and the side model is added: ``u = f_seq([P_u; s_u]) + MLP_a(x_u)``
(``components.models.tuned.prompting`` says where the tokens go).  ``ppr_light`` tunes only the profile
embeddings, the generator and MLP_a, every base weight frozen (and verified bit-identical after tuning);
``ppr_full`` tunes the base as well.

Both add prompt-oriented contrastive learning: two augmented views of each user (profile-embedding elements
masked with ratio ``profile_mask``, events' embeddings zero-masked with ratio ``item_mask``), InfoNCE between the
original and each view's sequence state with cosine similarity and temperature ``cl_tau`` over the batch,
weighted ``cl_weight`` (PPR: 0.2, 0.2, 0.1; the paper gives no temperature: we use 1.0, CL4SRec's default, on
which PPR builds).

PPR's prompts are generated from user profiles; on data without any (the Taobao slice) it refuses with a
:class:`~components.models.tuned.profiles.ProfileError` naming ``cpl`` as the method that works without them
(its user encoder reads the behavior-type sequence), rather than silently using an empty profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.tuned.base import TunedRecommender, TuningConfig
from components.models.tuned.profiles import ProfileError
from components.models.tuned.prompting import prompted_states


@dataclass
class PPRConfig(TuningConfig):
    n_prompts: int = 1  # prompt tokens (PPR: 1)
    cl_weight: float = 0.1
    cl_tau: float = 1.0
    profile_mask: float = 0.2
    item_mask: float = 0.2

    def problems(self) -> list[str]:
        if not self.profile_fields:
            raise ProfileError(
                f"tuning: {self.method} generates its prompts from user profiles, and the data has no profile "
                f"fields (or none were selected); use tuning: cpl (its user encoder reads the behavior-type "
                f"sequence) or finetune, or give the data a profile table")
        problems = super().problems()
        if self.n_prompts < 1:
            problems.append("n_prompts must be >= 1")
        if not (0 <= self.profile_mask < 1 and 0 <= self.item_mask < 1):
            problems.append("profile_mask and item_mask must lie in [0, 1)")
        if self.cl_tau <= 0:
            problems.append(f"cl_tau={self.cl_tau} must be > 0")
        return problems


class PPR(TunedRecommender):
    config: PPRConfig

    def _build(self, cfg: PPRConfig, hidden: int, profile_dim: int) -> None:
        self.generator = nn.Sequential(nn.Linear(profile_dim, cfg.prompt_hidden), nn.ReLU(),
                                       nn.Linear(cfg.prompt_hidden, cfg.n_prompts * hidden))

    def _encode(self, items: Tensor, behaviors: Tensor, x: Tensor | None,
                event_mask: Tensor | None) -> tuple[Tensor, Tensor, None]:
        generated = self.generator(x).view(items.shape[0], self.config.n_prompts, -1)
        h, empty = prompted_states(self.base, items, behaviors, generated, event_mask=event_mask)
        return h, empty, None

    def _extra_loss(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, h: Tensor, empty: Tensor,
                    extra: Tensor | None) -> Tensor | None:
        if self.config.cl_weight <= 0:
            return None
        latest = torch.where((items[:, -1] != 0)[:, None], h[:, -1], empty)
        return self.config.cl_weight * self._contrastive(items, behaviors, profiles, latest)

    def _contrastive(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, anchor: Tensor) -> Tensor:
        """PPR's prompt-oriented contrastive loss: InfoNCE of each user's latest state (the empty-history one for
        a user with no input event) against two augmented views of it."""
        cfg = self.config
        if anchor.shape[0] < 2:
            return anchor.new_zeros(())
        has_history = (items[:, -1] != 0)[:, None]
        h1, e1, *_ = self._states(items, behaviors, profiles, profile_mask=cfg.profile_mask)
        event_mask = (torch.rand(items.shape, device=items.device) < cfg.item_mask) & (items != 0)
        h2, e2, *_ = self._states(items, behaviors, profiles, event_mask=event_mask)
        a = F.normalize(anchor.float(), dim=-1)
        labels = torch.arange(a.shape[0], device=a.device)
        loss = anchor.new_zeros((), dtype=torch.float32)
        for view in (torch.where(has_history, h1[:, -1], e1), torch.where(has_history, h2[:, -1], e2)):
            logits = a @ F.normalize(view.float(), dim=-1).T / cfg.cl_tau  # [B, B]
            loss = loss + F.cross_entropy(logits, labels)
        return loss / 2


class PPRLight(PPR):
    frozen_base = True


class PPRFull(PPR):
    frozen_base = False
