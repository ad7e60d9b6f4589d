"""Tuning a pre-trained encoder for cold-start users: full fine-tuning, PPR (light / full), CPL and PoMRec.

One module, :class:`TunedRecommender`, wraps the pre-trained encoder (``base``: SASRec, EBM or END4Rec, built from
its own config and weights) and adds what the method needs.  ``TuningConfig.method`` picks the method:

``finetune``  (PPR's fair baseline) every base weight is tuned, plus the same profile side model PPR has:
              ``u = f_seq(s_u) + MLP_a(x_u)``.  No prompt.
``ppr_light`` PPR (Wu et al., TKDE 2024): the personalized prompt generator ``P_u = W2 relu(W1 x_u + b1) + b2``
              (x_u = concatenated profile-field embeddings; n tokens, PPR uses n = 1) prefixed to the sequence, and
              the side model: ``u = f_seq([P_u; s_u]) + MLP_a(x_u)``.  Only the profile embeddings, the generator
              and MLP_a are tuned; every base weight is frozen (and verified bit-identical after tuning).
``ppr_full``  the same model with every base weight tuned as well.
              Both PPR variants add prompt-oriented contrastive learning: two augmented views of each user
              (profile-embedding elements masked with ratio ``profile_mask``, events' embeddings zero-masked with
              ratio ``item_mask``), InfoNCE between the original and each view's sequence state with cosine
              similarity and temperature ``cl_tau`` over the batch, weighted ``cl_weight`` (PPR: 0.2, 0.2, 0.1;
              the paper gives no temperature: we use 1.0, CL4SRec's default, on which PPR builds).
``cpl``       DPCPL's Customized Prompt Learning (reconstruction from the paper's summary, following methods.md),
              built causal: the prompt that the state after event t reads depends on the profile and on events
              <= t only, so training on every position never shows a state its label.
              * User encoder, one code per position: a GRU reads the behavior types of the events in order;
                its output after event t, g_t, depends on events <= t only (it runs on the events right-aligned,
                so padding never enters before them).  ``h_u(t) = tanh(W [x_u ; g_t])`` (x_u only where the data
                has profiles).  The empty history has ``g = 0`` (the GRU's initial state): ``h_u(0) =
                tanh(W [x_u ; 0])`` is the same for a zero-shot test user and for the zero-shot position of a
                tuning user in training.
              * Prompt Factorized Gate network: a bank of ``n_factors`` shared prompt factors F_k (each n tokens
                x d) and per-layer gates ``g_l(u, t) = softmax(W_l h_u(t))``, giving the layer-l prompt
                ``P_l(u, t) = sum_k g_l,k(u, t) F_k`` (personalized, progressive: one per layer, diverse: see the
                regulariser).
              * Where the prompts go (``components.models.tuned.prompting``): the empty-history prompt ``P_l(u, 0)`` is
                the prefix (n tokens before the first event; ``P_0`` at the input, ``P_l`` replaces the slots
                before layer l), read by every event through the causal encoder: the prefix carries the profile
                and nothing of the history, and its state is the zero-shot user's.  The history part is
                per-position: before layer l, the hidden state of event t gets ``a_l * mean_tokens P_l(u, t)``
                added (``position_prompts: false`` turns this off).  A prefix token cannot differ between the
                positions that read it within one causal pass, hence the addition; ``a_l`` is a per-layer scale
                that starts at 0 (LLaMA-Adapter's zero-init gating: tuning starts from the pre-trained function
                plus the prefix, and the gradient of ``a_l`` opens the per-position path).
              The compactness regulariser subtracts ``compact_weight * R(Z) / B`` from the loss, R the coding rate
              of the batch's L2-normalised prompts Z (each user's input-layer prompt at its latest event, the
              empty-history one for a user with none; END4Rec's term, ``components.models.end4rec.coding_rate``),
              rewarding prompts that differ between users; it shapes training only (a user's scores never read
              the batch).  Base frozen.  No side model: the summary has none.
``pomrec``    PoMRec as a tuning head: :class:`components.models.pomrec.MultiInterest` (its PF/PG prompt tables,
              K interests, mean + lam * std with ``interest_lam`` chosen on ``cold_valid``, attention + MLP
              weights) over the frozen encoder's hidden states,
              scored against the frozen item table, plus the profile side model where the data has profiles (our
              choice, so that a zero-shot user's answer depends on its profile as it does for the other methods).
              The paper trains with BPR (``training.loss: bpr``).

Every method trains the next-item loss at every labelled position of the cold tuning users' sequences, plus one
zero-shot position per user: the state with no history (prompt alone, or for ``finetune`` the encoder's empty
state) predicts the user's first event, so zero-shot users are tuned for, not only scored.  The batches come from
:func:`components.training.batches.training_batches` with ``zero_shot=True``, which marks that position in the batch (a labelled column whose
input is padding), so its sampled negative is drawn and checked like every other, and a user whose only training
event is that first one is kept.  ``zero_shot_loss: false`` ignores those positions.

Causality (``sequence_states``): every method's state after event t depends on events <= t and on the user's own
profile only, and a user's states and scores do not depend on the other rows of the batch; a padding column holds
the empty-history state.  ``training_loss`` scores exactly these states (``tests/tuning/test_leaks.py``).

Profiles: PPR's prompts are generated from user profiles; on data without any (the Taobao slice) PPR refuses
with a :class:`~components.models.tuned.profiles.ProfileError` naming ``cpl`` as the method that works without them
(its user encoder reads the behavior-type sequence), rather than silently using an empty profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models import losses
from components.models.base import ConfigMixin
from components.models.end4rec import coding_rate
from components.models.pomrec import MultiInterest
from components.models.tuned.profiles import ProfileEmbedding, ProfileError, profile_table
from components.models.tuned.prompting import prompted_states

METHODS = ("finetune", "ppr_light", "ppr_full", "cpl", "pomrec")
#: Methods whose base encoder stays frozen (verified bit-identical after tuning).
FROZEN_BASE = ("ppr_light", "cpl", "pomrec")
_NEEDS_PROFILE = ("ppr_light", "ppr_full")


@dataclass
class TuningConfig(ConfigMixin):
    method: str
    base_architecture: str
    base_config: dict
    n_items: int  # = base_config["n_items"]; read by the trainer
    target_behaviors: list[int] = field(default_factory=lambda: [1])  # codes the zero-shot position predicts
    profile_fields: list[str] = field(default_factory=list)
    profile_vocab: list[list[str]] = field(default_factory=list)
    profile_dim: int = 16  # embedding size per profile field
    n_prompts: int = 1  # prompt tokens (PPR: 1; CPL: per layer)
    prompt_hidden: int = 64  # PPR generator's hidden size d'
    side_model: bool = True  # MLP_a(x_u) added to the user state (finetune, PPR, pomrec) where profiles exist
    zero_shot_loss: bool = True
    cl_weight: float = 0.1
    cl_tau: float = 1.0
    profile_mask: float = 0.2
    item_mask: float = 0.2
    n_factors: int = 8  # CPL prompt factors
    factor_std: float = 0.3  # CPL factors start at the scale of embedded events, so the gates choice matters early
    user_dim: int = 32  # CPL user encoder size
    gru_dim: int = 16  # CPL behavior-type GRU size
    position_prompts: bool = True  # CPL: per-position prompts from the history (False: the profile prefix only)
    compact_weight: float = 0.01
    compact_eps: float = 1e-3
    n_interests: int = 3  # PoMRec
    interest_prompts: int = 4
    interest_lam: float = 0.0  # chosen on cold_valid (components.models.pomrec's docstring; the paper: 3)
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method={self.method!r} must be one of {METHODS}")
        if self.method in _NEEDS_PROFILE and not self.profile_fields:
            raise ProfileError(
                f"tuning: {self.method} generates its prompts from user profiles, and the data has no profile "
                f"fields (or none were selected); use tuning: cpl (its user encoder reads the behavior-type "
                f"sequence) or finetune, or give the data a profile table")
        if self.n_prompts < 1 or self.profile_dim < 1:
            problems.append("n_prompts and profile_dim must be >= 1")
        if not (0 <= self.profile_mask < 1 and 0 <= self.item_mask < 1):
            problems.append("profile_mask and item_mask must lie in [0, 1)")
        if self.cl_tau <= 0:
            problems.append(f"cl_tau={self.cl_tau} must be > 0")
        if len(self.profile_vocab) != len(self.profile_fields):
            problems.append("profile_vocab needs one vocabulary per profile field")
        if problems:
            raise ValueError("TuningConfig: " + "; ".join(problems))

    @property
    def max_len(self) -> int:
        return int(self.base_config["max_len"])  # every encoder config has one


class TunedRecommender(nn.Module):
    """A pre-trained encoder plus a tuning method's modules; scores like the encoders do, given profiles too."""

    uses_profiles = True

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
            if has_profile and cfg.side_model and cfg.method in ("finetune", "ppr_light", "ppr_full", "pomrec"):
                self.side = nn.Sequential(nn.Linear(pdim, cfg.prompt_hidden), nn.ReLU(), nn.Linear(cfg.prompt_hidden, d))
            self.generator = None
            if cfg.method in ("ppr_light", "ppr_full"):
                self.generator = nn.Sequential(nn.Linear(pdim, cfg.prompt_hidden), nn.ReLU(),
                                               nn.Linear(cfg.prompt_hidden, cfg.n_prompts * d))
            if cfg.method == "cpl":
                n_layers = self.base.n_stack_layers
                self.behavior_emb = nn.Embedding(int(cfg.base_config["n_behaviors"]) + 1, cfg.gru_dim, padding_idx=0)
                self.gru = nn.GRU(cfg.gru_dim, cfg.gru_dim, batch_first=True)
                self.user_enc = nn.Linear(pdim + cfg.gru_dim, cfg.user_dim)
                self.factors = nn.Parameter(torch.randn(cfg.n_factors, cfg.n_prompts * d) * cfg.factor_std)
                self.gates = nn.ModuleList(nn.Linear(cfg.user_dim, cfg.n_factors) for _ in range(max(1, n_layers)))
                if cfg.position_prompts:  # a_l: zero-init scale of the per-position prompts (module docstring)
                    self.position_scale = nn.Parameter(torch.zeros(max(1, n_layers)))
            if cfg.method == "pomrec":
                self.head = MultiInterest(d, cfg.n_interests, cfg.interest_prompts, cfg.interest_lam)
        self.set_trainable()

    # ---- which parameters tune ---------------------------------------------------------------------------------
    def set_trainable(self) -> None:
        frozen = self.config.method in FROZEN_BASE
        for name, p in self.named_parameters():
            p.requires_grad_(not (frozen and name.startswith("base.")))

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

    def _cpl_prompts(self, items: Tensor, behaviors: Tensor,
                     x: Tensor | None) -> tuple[list[Tensor], list[Tensor] | None, Tensor]:
        """CPL's prompts (see the module docstring): (per layer, the empty-history prompt [B, n, d] that goes in
        as the prefix; per layer, the per-position prompt [B, N, d] added to each event's state, or None without
        ``position_prompts``; each row's input-layer prompt at its latest state [B, n * d], for the regulariser).

        Position t's prompt reads the profile and the behavior types of events <= t only."""
        cfg = self.config
        B, N = items.shape
        d = int(cfg.base_config["hidden"])
        valid = items != 0
        lengths = valid.sum(dim=1)
        # Left-padded -> right-aligned (events first, then padding) so the GRU reads the events from its initial
        # state; output k of a GRU reads inputs 0..k only, so the trailing padding never reaches an event's code.
        shift = (N - lengths)[:, None]
        cols = torch.arange(N, device=items.device)[None, :]
        aligned = torch.gather(behaviors.masked_fill(~valid, 0), 1, (cols + shift) % N)
        out, _ = self.gru(self.behavior_emb(aligned))  # [B, N, gru_dim]
        back = ((cols - shift) % N)[..., None].expand(B, N, out.shape[-1])
        g = torch.gather(out, 1, back) * valid[..., None].to(out.dtype)  # [B, N, gru_dim] at the events' columns
        # Column 0: the empty history (the GRU's initial state, 0); columns 1..N: after each window column.
        g = torch.cat([g.new_zeros(B, 1, g.shape[-1]), g], dim=1)  # [B, 1 + N, gru_dim]
        if x is not None:
            g = torch.cat([x[:, None, :].expand(B, N + 1, x.shape[-1]), g], dim=-1)
        u = torch.tanh(self.user_enc(g))  # [B, 1 + N, user_dim]
        per_layer = [torch.softmax(gate(u), dim=-1) @ self.factors for gate in self.gates]  # [B, 1 + N, n * d]
        n = cfg.n_prompts
        prefix = [p[:, 0].view(B, n, d) for p in per_layer]
        positions = None
        if cfg.position_prompts:
            positions = [self.position_scale[i] * p[:, 1:].view(B, N, n, d).mean(dim=2)
                         for i, p in enumerate(per_layer)]
        latest = torch.where(valid[:, -1:], per_layer[0][:, -1], per_layer[0][:, 0])  # [B, n * d]
        return prefix, positions, latest

    @contextmanager
    def _base_buffers_kept(self) -> Iterator[None]:
        """With a frozen base in training, the base's buffers (running statistics such as END4Rec's eliminator
        fit statistics, which its forward updates in train mode) are put back after the pass: a frozen base keeps
        every tensor of its state, and reads its pre-trained statistics as at evaluation.  Dropout and the base's
        own sampling (Gumbel noise) still follow the mode.  (Setting those modules to eval mode would not hold: a
        base may switch its own modes inside its forward.)"""
        if not (self.training and self.config.method in FROZEN_BASE):
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
        m = self.config.method
        x = self._profile_x(profiles, profile_mask)
        side = self.side(x) if self.side is not None else None
        prompts = None
        if m == "finetune":
            if event_mask is not None:
                raise ValueError("finetune has no contrastive views")
            h = self.base.encode(items, behaviors)
            empty = self.base.encode(items[:, -1:] * 0, behaviors[:, -1:] * 0)[:, -1]
        elif m in ("ppr_light", "ppr_full"):
            generated = self.generator(x).view(items.shape[0], self.config.n_prompts, -1)
            h, empty = prompted_states(self.base, items, behaviors, generated, event_mask=event_mask)
        elif m == "cpl":
            prefix, positions, prompts = self._cpl_prompts(items, behaviors, x)
            h, empty = prompted_states(self.base, items, behaviors, prefix[0], prefix, event_mask=event_mask,
                                       position_prompts=positions)
        else:  # pomrec
            # Nothing upstream of the head tunes when the base is frozen: no graph through the encoder.
            with torch.set_grad_enabled(torch.is_grad_enabled() and m not in FROZEN_BASE):
                states = self.base.encode(items, behaviors)
            h, empty = self.head(states, items != 0)
        return h, empty, side, prompts

    def sequence_states(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        """Per-position user states [B, N, d], aligned with the input columns: column j is the state after the
        events up to column j, the one ``training_loss`` scores against the event after j (side vector
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

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor, profiles: Tensor | None = None) -> Tensor:
        h = self.user_state(items, behaviors, profiles)
        scores = (self.output_embeddings()[candidates] * h[:, None, :]).sum(-1)
        return scores.masked_fill(candidates == 0, float("-inf"))

    # ---- training ----------------------------------------------------------------------------------------------
    def training_loss(self, items: Tensor, behaviors: Tensor, labels: Tensor, mask: Tensor, kind: str,
                      negatives: Tensor | None, profiles: Tensor | None = None) -> Tensor:
        """The next-item loss of :meth:`sequence_states` at the labelled positions of ``mask``; a labelled
        position whose input is padding is a zero-shot example (``training_batches(..., zero_shot=True)`` marks them) and
        scores the empty-history state.  Plus the method's terms (PPR's contrastive, CPL's compactness)."""
        cfg = self.config
        if not cfg.zero_shot_loss:
            mask = mask & (items != 0)
        start = self._first_used_column(items, mask)
        items, behaviors, labels, mask = items[:, start:], behaviors[:, start:], labels[:, start:], mask[:, start:]
        if negatives is not None:
            negatives = resample_clashes(negatives[:, start:], labels, mask, cfg.n_items)
        h, empty, side, prompts = self._states(items, behaviors, profiles)
        states = self._with_empty(items, 0, h, empty, side)
        loss = losses.next_item_loss(states, self.output_embeddings(), labels, mask, kind, negatives)
        if cfg.method in ("ppr_light", "ppr_full") and cfg.cl_weight > 0:
            latest = torch.where((items[:, -1] != 0)[:, None], h[:, -1], empty)
            loss = loss + cfg.cl_weight * self._contrastive(items, behaviors, profiles, latest)
        if cfg.method == "cpl" and cfg.compact_weight > 0 and prompts is not None and prompts.shape[0] > 1:
            z = F.normalize(prompts.float(), dim=-1)
            loss = loss - cfg.compact_weight * coding_rate(z, cfg.compact_eps) / z.shape[0]
        return loss

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
