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
``cpl``       DPCPL's Customized Prompt Learning (reconstruction from the paper's summary, following methods.md):
              a user encoder ``h_u = tanh(W [x_u ; GRU(behavior types of the history)])`` (the profile part only
              where the data has profiles); the Prompt Factorized Gate network keeps a bank of ``n_factors``
              shared prompt factors F_k (each n tokens x d) and per-layer gates ``g_l = softmax(W_l h_u)``, giving
              layer l the prompt ``P_l(u) = sum_k g_l,k F_k`` (personalized, progressive: one per layer, diverse:
              see the regulariser); P_0 is the input prefix, P_l replaces the prompt slots before layer l.  The
              compactness regulariser subtracts ``compact_weight * R(Z) / B`` from the loss, R the coding rate of
              the batch's L2-normalised prompts (END4Rec's term, ``components.models.end4rec.coding_rate``),
              rewarding prompts that differ between users.  Base frozen.  No side model: the summary has none.
``pomrec``    PoMRec as a tuning head: :class:`components.models.pomrec.MultiInterest` (its PF/PG prompt tables,
              K interests, mean + lam * std, attention + MLP weights) over the frozen encoder's hidden states,
              scored against the frozen item table, plus the profile side model where the data has profiles (our
              choice, so that a zero-shot user's answer depends on its profile as it does for the other methods).
              The paper trains with BPR (``training.loss: bpr``).

Every method trains the next-item loss at every labelled position of the cold tuning users' sequences, plus one
zero-shot position per user (``zero_shot_loss``): the state with no history (prompt alone, or for ``finetune``
the encoder's empty state) predicts the user's first event, so zero-shot users are tuned for, not only scored.

Profiles: PPR's prompts are generated from user profiles; on data without any (the Taobao slice) PPR refuses
with a :class:`~components.tuning.profiles.ProfileError` naming ``cpl`` as the method that works without them
(its user encoder reads the behavior-type sequence), rather than silently using an empty profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.base import ConfigMixin
from components.models.end4rec import coding_rate
from components.models.pomrec import MultiInterest
from components.tuning.profiles import ProfileEmbedding, ProfileError, profile_table
from components.tuning.prompting import prompted_states

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
    compact_weight: float = 0.01
    compact_eps: float = 1e-3
    n_interests: int = 3  # PoMRec
    interest_prompts: int = 4
    interest_lam: float = 3.0
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
        return int(self.base_config.get("max_len", 200))


class TunedRecommender(nn.Module):
    """A pre-trained encoder plus a tuning method's modules; scores like the encoders do, given profiles too."""

    uses_profiles = True

    def __init__(self, cfg: TuningConfig):
        super().__init__()
        from components.models.trained import build_model

        self.config = cfg
        self.base = build_model(cfg.base_architecture, cfg.base_config)
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

    def _cpl_prompts(self, items: Tensor, behaviors: Tensor, x: Tensor | None) -> list[Tensor]:
        B = items.shape[0]
        valid = items != 0
        lengths = valid.sum(dim=1)
        # Left-padded -> right-padded so the GRU reads the events first; an empty history keeps a zero state.
        shift = (items.shape[1] - lengths)[:, None]
        idx = (torch.arange(items.shape[1], device=items.device)[None, :] + shift) % items.shape[1]
        seq = self.behavior_emb(torch.gather(behaviors.masked_fill(~valid, 0), 1, idx))
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.gru(packed)
        g = h[-1] * (lengths > 0)[:, None].to(h.dtype)  # [B, gru_dim]
        u = torch.tanh(self.user_enc(torch.cat([x, g], dim=-1) if x is not None else g))
        d = int(self.config.base_config["hidden"])
        return [(torch.softmax(gate(u), dim=-1) @ self.factors).view(B, self.config.n_prompts, d)
                for gate in self.gates]

    def _states(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, *, profile_mask: float = 0.0,
                event_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(sequence states [B, N, d], empty-history state [B, d], side vector or None, input prompts or None);
        the side vector is not yet added to the states."""
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
            prompts = self.generator(x).view(items.shape[0], self.config.n_prompts, -1)
            h, empty = prompted_states(self.base, items, behaviors, prompts, event_mask=event_mask)
        elif m == "cpl":
            layer_prompts = self._cpl_prompts(items, behaviors, x)
            prompts = layer_prompts[0]
            h, empty = prompted_states(self.base, items, behaviors, prompts, layer_prompts, event_mask=event_mask)
        else:  # pomrec
            # Nothing upstream of the head tunes when the base is frozen: no graph through the encoder.
            with torch.set_grad_enabled(torch.is_grad_enabled() and m not in FROZEN_BASE):
                states = self.base.encode(items, behaviors)
            h, empty = self.head(states, items != 0)
        return h, empty, side, prompts

    def user_state(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None = None) -> Tensor:
        start = self._first_used_column(items)
        h, empty, side, _ = self._states(items[:, start:], behaviors[:, start:], profiles)
        has_history = (items != 0).any(dim=1)[:, None]
        state = torch.where(has_history, h[:, -1], empty)
        return state + side if side is not None else state

    @staticmethod
    def _first_used_column(items: Tensor) -> int:
        """First column that is not padding in every row (the last one if all are): the columns before it can be
        dropped with identical results, since positions count from each row's first event.  Cold users' windows
        are mostly padding."""
        used = (items != 0).any(dim=0)
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
        from components.training.trainer import next_item_loss

        cfg = self.config
        start = self._first_used_column(items)  # labelled positions always hold an event
        items, behaviors, labels, mask = items[:, start:], behaviors[:, start:], labels[:, start:], mask[:, start:]
        if negatives is not None:
            negatives = negatives[:, start:]
        h, empty, side, prompts = self._states(items, behaviors, profiles)
        states = h
        if cfg.zero_shot_loss:
            # One more labelled position per user: the empty-history state predicts the first event, when the
            # window reaches back to it (a left pad before it) and it is of a target behavior.
            valid = items != 0
            first_col = valid.float().argmax(dim=1)
            rows = torch.arange(items.shape[0], device=items.device)
            first_item, first_beh = items[rows, first_col], behaviors[rows, first_col]
            targets = torch.as_tensor(cfg.target_behaviors, device=items.device)
            # (start > 0: the trimmed columns were padding in every row, so every window had a left pad)
            reaches_first = ~valid.all(dim=1) if start == 0 else torch.ones_like(valid[:, 0])
            ok = valid.any(dim=1) & reaches_first & torch.isin(first_beh, targets)
            states = torch.cat([empty[:, None, :], h], dim=1)
            labels = torch.cat([first_item[:, None], labels], dim=1)
            mask = torch.cat([ok[:, None], mask], dim=1)
            if negatives is not None:
                extra = torch.randint(1, cfg.n_items + 1, (items.shape[0], 1), device=items.device)
                negatives = torch.cat([extra, negatives], dim=1)
        if side is not None:
            states = states + side[:, None, :]
        loss = next_item_loss(states, self.output_embeddings(), labels, mask, kind, negatives)
        if cfg.method in ("ppr_light", "ppr_full") and cfg.cl_weight > 0:
            loss = loss + cfg.cl_weight * self._contrastive(items, behaviors, profiles, h[:, -1])
        if cfg.method == "cpl" and cfg.compact_weight > 0 and prompts is not None and prompts.shape[0] > 1:
            z = F.normalize(prompts.flatten(1).float(), dim=-1)
            loss = loss - cfg.compact_weight * coding_rate(z, cfg.compact_eps) / z.shape[0]
        return loss

    def _contrastive(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, anchor: Tensor) -> Tensor:
        """PPR's prompt-oriented contrastive loss: InfoNCE of the sequence state against two augmented views."""
        cfg = self.config
        if anchor.shape[0] < 2:
            return anchor.new_zeros(())
        h1, *_ = self._states(items, behaviors, profiles, profile_mask=cfg.profile_mask)
        event_mask = (torch.rand(items.shape, device=items.device) < cfg.item_mask) & (items != 0)
        h2, *_ = self._states(items, behaviors, profiles, event_mask=event_mask)
        a = F.normalize(anchor.float(), dim=-1)
        labels = torch.arange(a.shape[0], device=a.device)
        loss = anchor.new_zeros((), dtype=torch.float32)
        for view in (h1[:, -1], h2[:, -1]):
            logits = a @ F.normalize(view.float(), dim=-1).T / cfg.cl_tau  # [B, B]
            loss = loss + F.cross_entropy(logits, labels)
        return loss / 2
