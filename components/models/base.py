"""The model contract, and the pieces every next-item encoder shares.

:class:`Recommender` is the whole interface that training, evaluation and serving use: a ``config`` (a dataclass
with ``to_dict``), ``max_len``, ``loss(batch, kind)`` on a :class:`Batch`, ``score_all`` / ``score_items``, and
three hooks with defaults: ``profile_table`` (models that read user profiles), ``training_stages`` /
``set_stage`` (staged training).  Every model of the project derives from it: the encoders (through
:class:`NextItemEncoder`), the tuned models, the repeat-aware head and the baselines; the trainer, the evaluator and
the served model call nothing else.

An encoder subclasses :class:`NextItemEncoder`, keeps ``item_emb`` / ``behavior_emb`` / ``pos_emb`` / ``emb_drop``
modules (built by :meth:`NextItemEncoder._build_embeddings`) and implements ``run_stack`` (``encode(items,
behaviors)`` -> [B, N, d]); it then gets ``loss``, ``user_state``, ``score_all``, ``score_items`` and
``output_embeddings`` (the item table is both input and output layer).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

import components.models.losses as losses
from components.settings import from_dict


@dataclass
class Batch:
    """One training batch, as the trainer hands it to :meth:`Recommender.loss`.

    ``items`` / ``behaviors`` [B, N] left-padded histories (0 = padding); ``labels`` [B, N] the item after each
    position; ``mask`` [B, N] bool, the positions whose label counts (a labelled position whose input is padding
    is a zero-shot example); ``negatives`` [B, N] one sampled item per position (losses ``bce`` / ``bpr``), the
    batch's ``losses.SharedNegatives`` (loss ``sampled``) or None (``ce``); ``profiles`` [B, n_fields] the rows' profile codes (models with a ``profile_table``; else None).
    """

    items: Tensor
    behaviors: Tensor
    labels: Tensor
    mask: Tensor
    negatives: Tensor | losses.SharedNegatives | None = None
    profiles: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                        for f in fields(self)})


class Recommender(nn.Module):
    """What every model offers the trainer, the evaluator and the server (see the module docstring).

    ``score_all`` / ``score_items`` take ``profiles`` [B, n_fields] (or None): only models whose
    ``profile_table`` returns a table read them; the others ignore the argument."""

    config: Any
    #: Whether the model reads user profiles (then ``profile_table`` returns the codes the callers pass on).
    uses_profiles: bool = False

    @property
    def max_len(self) -> int | None:
        """Longest history window the model reads (None: whole histories)."""
        return self.config.max_len

    def profile_table(self, data: Any) -> np.ndarray | None:
        """[n_users + 1, n_fields] profile codes of ``data``'s users for models that read profiles; None here."""
        return None

    def training_stages(self) -> list[int] | None:
        """Epochs of each training stage for staged training (END4Rec's guided mode): the trainer calls
        ``set_stage(s)`` before stage s = 1, 2, ... and ``set_stage(len(stages))`` after the last (the last stage
        is the model as it serves); None: one ordinary run."""
        return None

    def set_stage(self, stage: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no training stages")

    def sparse_item_table(self) -> nn.Embedding | None:
        """The item table whose gradient, under the ``sampled`` loss, touches only the rows a batch uses (the
        trainer then switches it to sparse gradients and updates it with a sparse optimizer, so a step's cost does
        not grow with the catalogue); None: no such table, every parameter is updated densely."""
        return None

    def loss(self, batch: Batch, kind: str) -> Tensor:
        """The training loss of ``batch`` (``kind``: ``components.models.losses.LOSSES``)."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient descent")

    def score_all(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories -> [B, n_items + 1] scores; column 0 (padding) is -inf."""
        raise NotImplementedError

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor,
                    profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories, candidates [B, C] item ids -> [B, C] scores."""
        raise NotImplementedError

    def score_item_chunks(self, items: Tensor, behaviors: Tensor, chunk: int,
                          profiles: Tensor | None = None) -> Iterator[tuple[int, Tensor]]:
        """``score_all`` in column chunks: (first item id, scores [B, c]) for ids 0..c-1, c..2c-1, ... (id 0, the
        padding, scores -inf), so that full ranking of a large catalogue holds [B, chunk] scores at a time.  Here:
        slices of ``score_all`` (no memory saved); dot-product models compute the user state once and score each
        slice of the item table."""
        scores = self.score_all(items, behaviors, profiles)
        for lo in range(0, scores.shape[1], chunk):
            yield lo, scores[:, lo:lo + chunk]


def dot_product_chunks(state: Tensor, table: Tensor, chunk: int) -> Iterator[tuple[int, Tensor]]:
    """(first item id, ``state`` [B, d] @ ``table[lo:lo + chunk]``.T) over the item table [n_items + 1, d]; the
    padding column (id 0) is -inf."""
    for lo in range(0, table.shape[0], chunk):
        scores = state @ table[lo:lo + chunk].T
        if lo == 0:
            scores[:, 0] = float("-inf")
        yield lo, scores


class ConfigMixin:
    """``to_dict`` / ``from_dict`` for model config dataclasses; ``from_dict`` refuses keys it does not know
    (``components.settings.from_dict``, the project's one unknown-key check)."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict) -> Any:
        return from_dict(cls, d, where=f"{cls.__name__}.from_dict")  # type: ignore[type-var]


@dataclass
class EncoderConfig(ConfigMixin):
    """The options every encoder takes under the same names (README, *Models*), so that changing ``name:`` alone
    switches encoders.  An encoder's config subclasses this: it re-declares a field to give it another default
    and adds its own checks in ``problems`` (an option it has no use for, e.g. heads in a GRU, is accepted and
    checked all the same)."""

    n_items: int
    n_behaviors: int
    max_len: int = 200  # longest window fed to the model; also the size of the position table
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    use_behavior: bool = True  # add a behavior embedding to each event
    seed: int = 0  # initialisation seed: the same config gives the same initial weights

    def problems(self) -> list[str]:
        """What is wrong with these settings (a subclass adds its own)."""
        problems = []
        if self.n_items < 1 or self.n_behaviors < 1:
            problems.append(f"n_items={self.n_items} and n_behaviors={self.n_behaviors} must be >= 1")
        if self.max_len < 1 or self.hidden < 1 or self.n_heads < 1 or self.n_layers < 0:
            problems.append(f"max_len={self.max_len}, hidden={self.hidden} and n_heads={self.n_heads} must be >= 1, "
                            f"n_layers={self.n_layers} >= 0")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must lie in [0, 1)")
        return problems

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))


def positions_from_first_event(valid: Tensor) -> Tensor:
    """[B, N] bool (True = real event, left padding) -> position of each event counted from the first real one.

    The encoding of a prefix then does not depend on how much padding sits to its left: a training position sees
    the same state inference computes for that prefix."""
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0)


class NextItemEncoder(Recommender):
    """Base class: behavior-aware embedding E = item * sqrt(d) + behavior + position, and dot-product scoring."""


    def _build_embeddings(self, n_items: int, n_behaviors: int, max_len: int, hidden: int, dropout: float,
                          use_behavior: bool = True) -> None:
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.behavior_emb = nn.Embedding(n_behaviors + 1, hidden, padding_idx=0) if use_behavior else None
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Initialise every weight from ``config.seed`` (N(0, 0.02) as in GPT-2/nanoGPT; LayerNorm gains 1, biases
        0), independent of torch's global RNG, so a config alone fixes the starting point.  Subclasses may then
        overwrite what needs another start (``_init_extra``)."""
        g = torch.Generator().manual_seed(self.config.seed)
        norm_gains = {id(m.weight) for m in self.modules() if isinstance(m, nn.LayerNorm) and m.weight is not None}
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif id(p) in norm_gains:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            self.item_emb.weight[0].zero_()  # padding rows stay zero (padding_idx also blocks their gradient)
            if self.behavior_emb is not None:
                self.behavior_emb.weight[0].zero_()
            self._init_extra(g)

    def _init_extra(self, generator: torch.Generator) -> None:
        """Hook for parameters whose start is not N(0, 0.02); default: none."""

    def embed(self, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor]:
        """items, behaviors [B, N] left-padded -> (embedded events [B, N, d] with padding zeroed, valid [B, N])."""
        B, N = items.shape
        if N > self.config.max_len:
            raise ValueError(f"{type(self).__name__}: sequence length {N} exceeds max_len={self.config.max_len}")
        valid = items != 0
        # sqrt(d) scaling (as in the SASRec code) keeps the shared item table, which is also the output layer and
        # so kept small, from being drowned by position and behavior embeddings.
        x = self.item_emb(items) * math.sqrt(self.config.hidden) + self.pos_emb(positions_from_first_event(valid))
        if self.behavior_emb is not None:
            x = x + self.behavior_emb(behaviors.masked_fill(~valid, 0))
        return self.emb_drop(x) * valid.unsqueeze(-1).to(x.dtype), valid

    def encode(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """items, behaviors [B, N] left-padded (0 = padding), N <= max_len -> hidden states [B, N, d]."""
        x, valid, behaviors, tokens = self.stack_inputs(items, behaviors)
        return self.run_stack(x, valid, behaviors, tokens=tokens)

    # ---- the two halves of ``encode``, apart so prompt tuning (components/tuning) can insert tokens between them --
    def stack_inputs(self, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """What ``run_stack`` reads: (embedded events [B, N, d], valid [B, N] bool, behaviors with padding zeroed
        [B, N], tokens [B, N]).  ``tokens`` marks the slots later positions may read: ``valid`` here; END4Rec's
        eliminator takes the events it drops out of it (a float 0/1 mask carrying its straight-through gradient).
        Encoders that transform the embedded sequence before their stack (END4Rec's denoising) do it here."""
        x, valid = self.embed(items, behaviors)
        return x, valid, behaviors.masked_fill(~valid, 0), valid

    def embed_for_prompting(self, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The first three of :meth:`stack_inputs` (kept for callers that do not pass ``tokens`` on)."""
        x, valid, behaviors, _ = self.stack_inputs(items, behaviors)
        return x, valid, behaviors

    def run_stack(self, x: Tensor, valid: Tensor, behaviors: Tensor,
                  layer_hook: Callable[[int, Tensor], Tensor] | None = None,
                  tokens: Tensor | None = None) -> Tensor:  # pragma: no cover
        """The encoder stack and final norm over already-embedded vectors x [B, L, d] (``valid`` [B, L] marks the
        positions that get a state; L may exceed max_len when prompt tokens were added).  ``layer_hook(l, x)`` is
        called before layer l and returns the tensor layer l reads (layer-wise prompts replace their slots there).
        ``tokens`` [B, L] (bool or float 0/1; default ``valid``) marks the slots that other positions may read:
        a valid slot that is no token (an event END4Rec's eliminator dropped) still gets a state, the one after
        the tokens up to it (what the model predicts after a dropped event), but never feeds another position,
        at any layer."""
        raise NotImplementedError

    @property
    def n_stack_layers(self) -> int:
        """How many layers ``run_stack`` runs (how many times it calls ``layer_hook``)."""
        raise NotImplementedError

    def head_modules(self) -> list[str]:
        """Names of the modules the daily refresh re-tunes (``components.training.refresh``): the last layer of
        the stack and the final norm, e.g. ``["blocks.1", "ln_f"]`` for a 2-block SASRec."""
        raise NotImplementedError(f"{type(self).__name__} has no head to re-tune (no stack of layers and final norm)")

    # ---- scoring ------------------------------------------------------------------------------------------------
    def user_state(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """[B, N] histories -> [B, d]: the state after the most recent event (the last column, by left padding)."""
        return self.encode(items, behaviors)[:, -1, :]

    def output_embeddings(self) -> Tensor:
        """[n_items + 1, d] table that hidden states are scored against (row 0 = padding)."""
        return self.item_emb.weight

    def sparse_item_table(self) -> nn.Embedding | None:
        """The shared input/output item table: an encoder reads it only through ``item_emb`` lookups and, in
        ``loss``, the sampled loss's row lookups (a subclass that reads the whole table elsewhere in training must
        return None; the trainer also checks that the gradient it gets is sparse)."""
        return self.item_emb

    def loss(self, batch: Batch, kind: str) -> Tensor:
        """Next-item loss of the encoded sequence at the labelled positions."""
        hidden = self.encode(batch.items, batch.behaviors)
        return losses.next_item_loss(hidden, self.output_embeddings(), batch.labels, batch.mask, kind,
                                     batch.negatives)

    def score_all(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories -> [B, n_items + 1] scores; column 0 (padding) is -inf."""
        scores = self.user_state(items, behaviors) @ self.output_embeddings().T  # [B, n_items+1]
        scores[:, 0] = float("-inf")
        return scores

    def score_item_chunks(self, items: Tensor, behaviors: Tensor, chunk: int,
                          profiles: Tensor | None = None) -> Iterator[tuple[int, Tensor]]:
        return dot_product_chunks(self.user_state(items, behaviors), self.output_embeddings(), chunk)

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor,
                    profiles: Tensor | None = None) -> Tensor:
        """[B, N] histories, candidates [B, C] item ids -> [B, C] scores (padding candidates get -inf)."""
        h = self.user_state(items, behaviors)  # [B, d]
        scores = (self.output_embeddings()[candidates] * h[:, None, :]).sum(-1)  # [B, C]
        return scores.masked_fill(candidates == 0, float("-inf"))


class ChunkedDiagonalLinear(nn.Module):
    """The Chunked Diagonal Mechanism: a d x d map restricted to k diagonal blocks of size d/k.

    Parameters and FLOPs are d*d/k instead of d*d.  Blocks never exchange channels, so stacks of them interleave
    chunks with ``shuffle=True`` (channel c of chunk j goes to chunk c mod k) as ShuffleNet does; without it, k
    chunks would be k separate narrow models."""

    def __init__(self, dim: int, chunks: int, bias: bool = True, shuffle: bool = False):
        super().__init__()
        if dim % chunks != 0:
            raise ValueError(f"ChunkedDiagonalLinear: dim={dim} is not divisible by chunks={chunks}")
        self.chunks, self.size, self.shuffle = chunks, dim // chunks, shuffle
        self.weight = nn.Parameter(torch.empty(chunks, self.size, self.size))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape  # [..., d]
        y = torch.einsum("...ki,kio->...ko", x.reshape(*shape[:-1], self.chunks, self.size), self.weight)
        if self.shuffle:
            y = y.transpose(-1, -2)  # [..., size, chunks]: interleave the chunks' channels
        y = y.reshape(shape)
        return y + self.bias if self.bias is not None else y
