"""What every tuning method's model shares: the pre-trained base it wraps, the user-profile embedding and side
model, the zero-shot position, causal per-position states, scoring and the next-item loss.

A method is one file of this package with a config (a :class:`TuningConfig` subclass when it has settings of its
own) and a :class:`TunedRecommender` subclass that builds its modules (``_build``), encodes a batch
(``_encode``) and may add terms to the loss (``_extra_loss``); ``components.models.tuned.methods`` lists them.
The methods themselves are described in their files and in ``components.models.tuned.methods``.

Every method trains the next-item loss at every labelled position of the cold tuning users' sequences, plus one
zero-shot position per user: the state with no history (prompt alone, or for ``finetune`` the encoder's empty
state) predicts the user's first event, so zero-shot users are tuned for, not only scored.  The batches come from
:func:`components.training.batches.training_batches` with ``zero_shot=True``, which marks that position in the
batch (a labelled column whose input is padding), so its sampled negative is drawn and checked like every other,
and a user whose only training event is that first one is kept.  ``zero_shot_loss: false`` ignores those
positions.

Causality (``sequence_states``): every method's state after event t depends on events <= t and on the user's own
profile only, and a user's states and scores do not depend on the other rows of the batch; a padding column holds
the empty-history state.  ``loss`` scores exactly these states (``tests/tuning/test_leaks.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from components.models import losses
from components.models.base import Batch, ConfigMixin, Recommender, dot_product_chunks
from components.models.tuned.profiles import ProfileEmbedding, profile_table


@dataclass
class TuningConfig(ConfigMixin):
    """The settings every method has; a method with settings of its own subclasses this."""

    method: str
    base_architecture: str
    base_config: dict
    n_items: int  # = base_config["n_items"]; read by the trainer
    target_behaviors: list[int] = field(default_factory=lambda: [1])  # codes the zero-shot position predicts
    profile_fields: list[str] = field(default_factory=list)
    profile_vocab: list[list[str]] = field(default_factory=list)
    profile_dim: int = 16  # embedding size per profile field
    prompt_hidden: int = 64  # hidden size of the side model MLP_a (and of PPR's generator)
    side_model: bool = True  # MLP_a(x_u) added to the user state where profiles exist (methods that have one)
    zero_shot_loss: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these settings (a subclass adds its own checks)."""
        problems = []
        if self.profile_dim < 1:
            problems.append("profile_dim must be >= 1")
        if len(self.profile_vocab) != len(self.profile_fields):
            problems.append("profile_vocab needs one vocabulary per profile field")
        return problems

    @property
    def max_len(self) -> int:
        return int(self.base_config["max_len"])  # every encoder config has one


class TunedRecommender(Recommender):
    """A pre-trained encoder plus a tuning method's modules; scores like the encoders do, given profiles too."""

    uses_profiles = True
    #: Whether the base encoder stays frozen (verified bit-identical after tuning).
    frozen_base: bool = False
    #: Whether the method adds the profile side model ``MLP_a(x_u)`` to the user state (where profiles exist).
    has_side_model: bool = True

    def __init__(self, cfg: TuningConfig, base: nn.Module):
        """``base``: the pre-trained encoder, built from ``cfg.base_architecture`` / ``cfg.base_config``
        (``components.models.registry``; its weights are loaded afterwards)."""
        super().__init__()
        self.config = cfg
        self.base = base
        d = int(cfg.base_config["hidden"])
        has_profile = bool(cfg.profile_fields)
        # New modules start from the config's seed, independent of torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.profile = ProfileEmbedding([len(v) for v in cfg.profile_vocab], cfg.profile_dim) if has_profile else None
            pdim = self.profile.out_dim if has_profile else 0
            self.side = None
            if has_profile and cfg.side_model and self.has_side_model:
                self.side = nn.Sequential(nn.Linear(pdim, cfg.prompt_hidden), nn.ReLU(), nn.Linear(cfg.prompt_hidden, d))
            self._build(cfg, d, pdim)
        self.set_trainable()

    # ---- what a method defines ---------------------------------------------------------------------------------
    def _build(self, cfg: TuningConfig, hidden: int, profile_dim: int) -> None:
        """Create the method's own modules (under the config's seed, after the profile and side modules)."""

    def _encode(self, items: Tensor, behaviors: Tensor, x: Tensor | None,
                event_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """(sequence states [B, N, d], empty-history state [B, d], rows of a regulariser's matrix or None) for
        histories whose profile vector is ``x`` [B, p] (None without profiles); ``event_mask`` [B, N] zeroes those
        events' embeddings (PPR's contrastive views; a method without views refuses it)."""
        raise NotImplementedError

    def _extra_loss(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, h: Tensor, empty: Tensor,
                    extra: Tensor | None) -> Tensor | None:
        """The method's term added to the next-item loss (None: none)."""
        return None

    # ---- which parameters tune ---------------------------------------------------------------------------------
    def set_trainable(self) -> None:
        for name, p in self.named_parameters():
            p.requires_grad_(not (self.frozen_base and name.startswith("base.")))

    def profile_table(self, data) -> np.ndarray:
        """[n_users + 1, n_fields] codes of ``data``'s users in this model's profile vocabulary."""
        return profile_table(data, self.config.profile_fields, self.config.profile_vocab)

    def tuned_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def output_embeddings(self) -> Tensor:
        return self.base.output_embeddings()

    # ---- forward -----------------------------------------------------------------------------------------------
    def _profile_x(self, profiles: Tensor | None, mask: float = 0.0) -> Tensor | None:
        if self.profile is None:
            return None
        if profiles is None:
            raise ValueError(f"{self.config.method}: this model reads user profiles ({self.config.profile_fields}); "
                             "pass profiles=")
        x = self.profile(profiles)
        if mask > 0:
            x = x * (torch.rand_like(x) >= mask).to(x.dtype)  # element-level masking (PPR's prompt augmentation)
        return x

    @contextmanager
    def _base_buffers_kept(self) -> Iterator[None]:
        """With a frozen base in training, the base's buffers (running statistics such as END4Rec's eliminator
        fit statistics, which its forward updates in train mode) are put back after the pass: a frozen base keeps
        every tensor of its state, and reads its pre-trained statistics as at evaluation.  Dropout and the base's
        own sampling (Gumbel noise) still follow the mode.  (Setting those modules to eval mode would not hold: a
        base may switch its own modes inside its forward.)"""
        if not (self.training and self.frozen_base):
            yield
            return
        saved = [(b, b.detach().clone()) for b in self.base.buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)

    def _states(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, *, profile_mask: float = 0.0,
                event_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(sequence states [B, N, d], empty-history state [B, d], side vector or None, the rows of CPL's
        compactness matrix [B, n * d] or None).  The side vector is not yet added; the states at padding columns
        are whatever the encoder leaves there (``sequence_states`` puts the empty-history state in them)."""
        with self._base_buffers_kept():
            return self._method_states(items, behaviors, profiles, profile_mask, event_mask)

    def _method_states(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, profile_mask: float,
                       event_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        x = self._profile_x(profiles, profile_mask)
        side = self.side(x) if self.side is not None else None
        h, empty, extra = self._encode(items, behaviors, x, event_mask)
        return h, empty, side, extra

    def sequence_states(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """Per-position user states [B, N, d], aligned with the input columns: column j is the state after the
        events up to column j, the one ``loss`` scores against the event after j (side vector
        included).  A padding column (before the row's first event) holds the empty-history state, the one a
        zero-shot user gets and the zero-shot position trains.  Column j depends on events <= j and on the
        row's own profile only (``tests/tuning/test_leaks.py``, ``tests/models/test_causality.py``)."""
        start = self._first_used_column(items)
        h, empty, side, _ = self._states(items[:, start:], behaviors[:, start:], profiles)
        return self._with_empty(items, start, h, empty, side)

    @staticmethod
    def _with_empty(items: Tensor, start: int, h: Tensor, empty: Tensor, side: Tensor | None) -> Tensor:
        """States of the trimmed columns ``start:`` -> [B, N, d] over every column: the empty-history state at
        padding, plus the side vector."""
        B, N = items.shape
        full = torch.cat([empty[:, None, :].expand(B, start, h.shape[-1]), h], dim=1) if start else h
        states = torch.where((items != 0)[..., None], full, empty[:, None, :])
        return states + side[:, None, :] if side is not None else states

    def user_state(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """[B, d]: the state after each row's latest event (the empty-history state for an empty row)."""
        start = self._first_used_column(items)
        h, empty, side, _ = self._states(items[:, start:], behaviors[:, start:], profiles)
        has_history = (items != 0).any(dim=1)[:, None]
        state = torch.where(has_history, h[:, -1], empty)
        return state + side if side is not None else state

    @staticmethod
    def _first_used_column(items: Tensor, mask: Tensor | None = None) -> int:
        """First column that is not padding in every row, nor (``mask``) a labelled position of any row (the last
        column if there is none): the columns before it can be dropped with identical results, since positions
        count from each row's first event.  Cold users' windows are mostly padding."""
        used = (items != 0).any(dim=0)
        if mask is not None:
            used = used | mask.any(dim=0)
        return int(used.nonzero()[0]) if used.any() else items.shape[1] - 1

    def score_all(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        scores = self.user_state(items, behaviors, profiles) @ self.output_embeddings().T
        scores[:, 0] = float("-inf")
        return scores

    def score_item_chunks(self, items: Tensor, behaviors: Tensor, chunk: int,
                          profiles: Tensor | None = None) -> Iterator[tuple[int, Tensor]]:
        return dot_product_chunks(self.user_state(items, behaviors, profiles), self.output_embeddings(), chunk)

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor, profiles: Tensor | None = None) -> Tensor:
        h = self.user_state(items, behaviors, profiles)
        scores = (self.output_embeddings()[candidates] * h[:, None, :]).sum(-1)
        return scores.masked_fill(candidates == 0, float("-inf"))

    # ---- training ----------------------------------------------------------------------------------------------
    def loss(self, batch: Batch, kind: str) -> Tensor:
        """The next-item loss of :meth:`sequence_states` at the labelled positions of ``mask``; a labelled
        position whose input is padding is a zero-shot example (``training_batches(..., zero_shot=True)`` marks
        them) and scores the empty-history state.  Plus the method's term (``_extra_loss``)."""
        cfg = self.config
        items, behaviors, labels, mask = batch.items, batch.behaviors, batch.labels, batch.mask
        negatives, profiles = batch.negatives, batch.profiles
        if not cfg.zero_shot_loss:
            mask = mask & (items != 0)
        start = self._first_used_column(items, mask)
        items, behaviors, labels, mask = items[:, start:], behaviors[:, start:], labels[:, start:], mask[:, start:]
        if isinstance(negatives, Tensor):  # one per position (bce / bpr); a sampled loss's shared ones stay whole
            negatives = resample_clashes(negatives[:, start:], labels, mask, cfg.n_items)
        h, empty, side, extra = self._states(items, behaviors, profiles)
        states = self._with_empty(items, 0, h, empty, side)
        loss = losses.next_item_loss(states, self.output_embeddings(), labels, mask, kind, negatives)
        term = self._extra_loss(items, behaviors, profiles, h, empty, extra)
        return loss if term is None else loss + term


def resample_clashes(negatives: Tensor, labels: Tensor, mask: Tensor, n_items: int) -> Tensor:
    """``negatives`` [B, N] with every labelled position's negative redrawn (uniform over 1..n_items) until it
    differs from its label.  The trainer's draws never clash; this guards the contract for any other caller."""
    clash = mask & (negatives == labels)
    if not clash.any():
        return negatives
    if n_items < 2:
        raise ValueError(f"resample_clashes: need at least 2 items to draw a negative, have {n_items}")
    negatives = negatives.clone()
    while clash.any():
        negatives[clash] = torch.randint(1, n_items + 1, (int(clash.sum()),), device=negatives.device,
                                         dtype=negatives.dtype)
        clash = mask & (negatives == labels)
    return negatives
