"""END4Rec: behavior-aware denoising on top of the Efficient Behavior Miner (EBM).

The paper's text available here is a summary; where it gives no formula, what follows is a **reconstruction**
(named so), kept switchable through the config so that a better reading can replace it.

- **Hard Noise Eliminator** (token-level noise such as mis-clicks).  Each event s gets a keep logit
  ``score(e_s, h_{s-1}) - pref[b_s]``: how well the event fits the user's state just before it (``h`` from an EBM
  pass over the raw sequence; a causal context, so no decision ever reads a later event, which would leak labels),
  minus a learnable preference value per behavior (the paper models behavior preference with a Poisson
  distribution; here it is a free scalar per behavior starting at ``pref_init``).  The token score is
  (reconstruction) ``w * fit_s + mlp(e_s, h_{s-1}, e_s * h_{s-1})``, where ``fit_s = h_{s-1} . e_s``, standardised
  over the batch's events, is the score the recommender itself gives the event in its context: an event the
  user's history cannot explain is a candidate mis-click.  ``w`` is learned, starting at ``fit_weight``;
  ``fit_weight: 0`` leaves the MLP alone, which the controlled-noise benchmark shows cannot find injected clicks
  from the recommendation loss's straight-through gradients (BENCHMARKS.md).  A Gumbel-Softmax over
  {keep, drop} with straight-through hard samples at temperature ``tau`` makes the decision exactly 0/1 in the
  forward pass and differentiable in the backward pass; at evaluation the decision is deterministic
  (keep iff logit > 0).  Dropped events become zero vectors, which the causal FFT filter then ignores: they are
  removed from the mixing, while later events keep their positions.
- **Soft Noise Filter** (representation-level noise such as outdated interests): one learnable causal frequency
  kernel per behavior; a sequence is filtered by the mix of kernels weighted by its share of each behavior, added
  residually (kernels start at zero, so the filter starts as the identity).
- **Noise-decoupling contrastive loss**: with Q(S) the dot product of the state after S with the next item,
  ``-log s(Q(denoised) - Q(original)) - log s(Q(original) - Q(noise))`` over the labelled positions, where
  "noise" is the sequence of the dropped events alone.
- **Drop budget** (reconstruction; how the paper's behavior preference values set the amount of dropping is not
  in the summary): with ``drop_budget > 0``, ``budget_weight * (expected drop share - drop_budget)^2`` asks the
  eliminator to drop about that share of events and leaves *which* ones to the recommendation and contrastive
  losses.  Without it, nothing pushes towards dropping: keeping every event is the easy optimum of the
  recommendation loss (seen in the controlled-noise benchmark: drop rate 0 for injected and real events alike).
- **Compactness regularizer**: the coding rate R(Z) = 1/2 logdet(I + d/(n eps^2) Z^T Z) of the batch's
  L2-normalised denoised states (computed on the smaller Gram side, Sylvester's identity); the loss subtracts
  ``compact_weight * R / n``: it rewards states that spread over the space (no collapse).  Reconstruction of the
  sign and scale; END4Rec's code default weight is 0.01 with eps = 1e-3.
- **Guided training** in four stages (1: embeddings + EBM; 2: hard noise eliminator only; 3: soft noise filter
  only; 4: everything jointly, with the contrastive loss), each with its own epochs (``stage_epochs``); frozen
  parameters get no gradient and are left out of the optimizer.  ``training_mode: joint`` trains everything with
  every loss from the start instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.ebm import EBM, EBMConfig, causal_fft_conv

STAGES = (1, 2, 3, 4)


@dataclass
class END4RecConfig(EBMConfig):
    tau: float = 1.0  # Gumbel-Softmax temperature
    pref_init: float = -2.0  # initial behavior preference: keep logit starts at +2 (keep ~88% before training)
    fit_weight: float = 3.0  # initial weight of the event's in-context fit in the token score (0: MLP only)
    hard_noise: bool = True
    soft_noise: bool = True
    cl_weight: float = 0.1
    contrast_from_stage: int = 4  # guided stage from which the contrastive loss joins (the summary: stage 4)
    drop_budget: float = 0.0  # share of events the eliminator is asked to drop (0: no budget term)
    budget_weight: float = 1.0
    compact_weight: float = 0.01
    compact_eps: float = 1e-3
    training_mode: str = "guided"  # "guided" (four stages) or "joint" (everything from the start)
    stage_epochs: list[int] = field(default_factory=lambda: [10, 3, 3, 10])

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.tau <= 0:
            problems.append(f"tau={self.tau} must be > 0")
        if self.training_mode not in ("guided", "joint"):
            problems.append(f"training_mode={self.training_mode!r} must be 'guided' or 'joint'")
        if len(self.stage_epochs) != 4 or any(e < 0 for e in self.stage_epochs):
            problems.append(f"stage_epochs={self.stage_epochs} must be four counts >= 0")
        if problems:
            raise ValueError("END4RecConfig: " + "; ".join(problems))
        self.stage_epochs = list(self.stage_epochs)


def gumbel_keep_mask(logits: Tensor, tau: float, training: bool) -> Tensor:
    """Keep decisions from keep-logits [..]: exactly 0/1 forward; straight-through gradient while training."""
    if not training:
        return (logits > 0).to(logits.dtype)
    two = torch.stack([logits, torch.zeros_like(logits)], dim=-1)  # [.., 2]: keep, drop
    return F.gumbel_softmax(two, tau=tau, hard=True, dim=-1)[..., 0]


def coding_rate(z: Tensor, eps: float) -> Tensor:
    """R(Z) = 1/2 logdet(I_d + d/(n eps^2) Z^T Z) for Z [n, d], on the smaller of the two Gram matrices."""
    n, d = z.shape
    scale = d / (n * eps ** 2)
    # I + c G is symmetric positive definite: its Cholesky factor gives the log-determinant stably.  All in float64:
    # c is large (d / (n eps^2) ~ 1e5), so a float32 Gram's rounding (~1e-7 * n) times c breaks positive
    # definiteness, and a float32 LU (torch.logdet) then returns NaN for nearly equal rows.
    zd = z.double()
    gram = zd.T @ zd if d <= n else zd @ zd.T  # logdet(I + c Z^T Z) = logdet(I + c Z Z^T)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(eye + scale * gram)
    return torch.log(torch.diagonal(chol)).sum().to(z.dtype)


class HardNoiseEliminator(nn.Module):
    def __init__(self, cfg: END4RecConfig):
        super().__init__()
        d = cfg.hidden
        self.score = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.pref = nn.Parameter(torch.full((cfg.n_behaviors + 1,), float(cfg.pref_init)))
        self.fit_weight = nn.Parameter(torch.tensor(float(cfg.fit_weight)))
        self.use_fit = cfg.fit_weight != 0

    def keep_logits(self, x: Tensor, context: Tensor, behaviors: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """x [B, N, d] embedded events, context [B, N, d] states (state after event t at t), targets [B, N, d] the
        events' rows of the output table, valid [B, N] -> [B, N] keep logits.

        The eliminator reads the recommender's embeddings and states but does not train them: its inputs are
        detached.  Its straight-through Gumbel gradient is a noisy signal, and letting it into the shared encoder
        and item table stalled joint training on ML-1M at the random level (3 epochs, max length 50: valid
        sampled100 NDCG@10 0.071 -> 0.079 with it, 0.256 -> 0.411 detached, 0.259 -> 0.449 without an
        eliminator).  Guided training's stage 2 freezes the encoder anyway."""
        x, context, targets = x.detach(), context.detach(), targets.detach()
        before = torch.cat([torch.zeros_like(context[:, :1]), context[:, :-1]], dim=1)  # state before event t
        feats = torch.cat([x, before, x * before], dim=-1)
        logits = self.score(feats).squeeze(-1) - self.pref[behaviors.long()]
        if self.use_fit:
            fit = (before * targets).sum(-1)
            has_context = valid & F.pad(valid[:, :-1], (1, 0), value=False)  # a first event has nothing to fit
            vals = fit[has_context]
            if vals.numel() > 1:
                z = (fit - vals.mean()) / vals.std().clamp(min=1e-6)
                logits = logits + self.fit_weight * z * has_context.to(z.dtype)
        return logits


class SoftNoiseFilter(nn.Module):
    def __init__(self, cfg: END4RecConfig):
        super().__init__()
        self.kernels = nn.Parameter(torch.zeros(cfg.n_behaviors, cfg.max_len, cfg.hidden))  # one per behavior
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, behaviors: Tensor, valid: Tensor) -> Tensor:
        counts = F.one_hot(behaviors.long(), self.kernels.shape[0] + 1)[..., 1:].sum(1).to(x.dtype)  # [B, n_beh]
        share = counts / counts.sum(-1, keepdim=True).clamp(min=1)
        kernel = torch.einsum("bk,knd->bnd", share, self.kernels[:, : x.shape[1]])  # [B, N, d], per sequence
        n, size = x.shape[1], 2 * x.shape[1]
        spec = torch.fft.rfft(x.float(), n=size, dim=1) * torch.fft.rfft(kernel.float(), n=size, dim=1)
        filtered = torch.fft.irfft(spec, n=size, dim=1)[:, :n].to(x.dtype)
        return (x + self.drop(filtered)) * valid.unsqueeze(-1).to(x.dtype)


class END4Rec(EBM):
    def __init__(self, cfg: END4RecConfig):
        super().__init__(cfg)
        self.hne = HardNoiseEliminator(cfg) if cfg.hard_noise else None
        self.snf = SoftNoiseFilter(cfg) if cfg.soft_noise else None
        self.reset_parameters()
        self.stage = 4  # inference and joint training use every module
        self.last_keep: Tensor | None = None
        self.last_drop_prob: Tensor | None = None

    def _init_extra(self, generator: torch.Generator) -> None:
        super()._init_extra(generator)
        if getattr(self, "hne", None) is not None:
            self.hne.pref.fill_(self.config.pref_init)
            self.hne.fit_weight.fill_(self.config.fit_weight)
        if getattr(self, "snf", None) is not None:
            self.snf.kernels.zero_()

    # ---- stages -------------------------------------------------------------------------------------------------
    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules stage ``stage`` trains (stage 4: all)."""
        if stage == 1:
            return [m for m in (self.item_emb, self.behavior_emb, self.pos_emb, self.layers, self.ln_f) if m is not None]
        if stage == 2:
            return [self.hne] if self.hne is not None else []
        if stage == 3:
            return [self.snf] if self.snf is not None else []
        return [self]

    def set_stage(self, stage: int) -> None:
        """Freeze everything but the stage's modules; modules of later stages are bypassed until then."""
        if stage not in STAGES:
            raise ValueError(f"END4Rec.set_stage: stage {stage} not in {STAGES}")
        self.stage = stage
        for p in self.parameters():
            p.requires_grad_(False)
        for m in self.stage_modules(stage):
            for p in m.parameters():
                p.requires_grad_(True)

    def _uses(self, module: str) -> bool:
        order = {"hne": 2, "snf": 3}
        return getattr(self, module) is not None and self.stage >= order[module]

    # ---- forward ------------------------------------------------------------------------------------------------
    def _mine(self, x: Tensor, behaviors: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, behaviors, mask)
        return self.ln_f(x)

    def _passes(self, items: Tensor, behaviors: Tensor, need_all: bool) -> dict[str, Tensor]:
        x, valid = self.embed(items, behaviors)
        behaviors = behaviors.masked_fill(~valid, 0)
        mask = valid.unsqueeze(-1).to(x.dtype)
        out: dict[str, Tensor] = {}
        keep = valid.to(x.dtype)
        if self._uses("hne") or need_all:
            original = self._mine(x, behaviors, mask)
            out["original"] = original
            if self._uses("hne"):
                logits = self.hne.keep_logits(x, original, behaviors, self.output_embeddings()[items], valid)
                keep = gumbel_keep_mask(logits, self.config.tau, self.training) * valid.to(x.dtype)
                self.last_keep = keep.detach()
                self.last_drop_prob = (torch.sigmoid(-logits) * valid).detach()
                out["drop_share"] = (torch.sigmoid(-logits) * valid).sum() / valid.sum().clamp(min=1)
        clean = x * keep.unsqueeze(-1)
        if self._uses("snf"):
            clean = self.snf(clean, behaviors, valid)
        out["clean"] = self._mine(clean, behaviors, mask)
        if need_all:
            noise = x * (valid.to(x.dtype) - keep).unsqueeze(-1)
            out["noise"] = self._mine(noise, behaviors, mask)
        return out

    def encode(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """Denoised hidden states [B, N, d] (the modules of the current stage that are on)."""
        return self._passes(items, behaviors, need_all=False)["clean"]

    def embed_for_prompting(self, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The denoised embedded events (dropped events zeroed, soft filter applied), for prompt tuning: prompts
        then join the sequence that the EBM stack reads, after denoising, as the summary's CPL does."""
        x, valid = self.embed(items, behaviors)
        behaviors = behaviors.masked_fill(~valid, 0)
        mask = valid.unsqueeze(-1).to(x.dtype)
        clean = x
        if self._uses("hne"):
            original = self._mine(x, behaviors, mask)
            logits = self.hne.keep_logits(x, original, behaviors, self.output_embeddings()[items], valid)
            clean = x * (gumbel_keep_mask(logits, self.config.tau, self.training) * valid.to(x.dtype)).unsqueeze(-1)
        if self._uses("snf"):
            clean = self.snf(clean, behaviors, valid)
        return clean, valid, behaviors

    def keep_decisions(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """[B, N] 1 = kept, 0 = dropped as noise (deterministic in eval mode); padding is 0."""
        self._passes(items, behaviors, need_all=False)
        if self.last_keep is None:
            return (items != 0).float()
        return self.last_keep

    def drop_probabilities(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """[B, N] probability that training-time sampling drops each event (0 for padding; 0 without the
        eliminator): the eliminator's soft view, of which ``keep_decisions`` is the thresholded one."""
        self._passes(items, behaviors, need_all=False)
        if self.last_drop_prob is None:
            return torch.zeros(items.shape, device=items.device)
        return self.last_drop_prob

    def training_loss(self, items: Tensor, behaviors: Tensor, labels: Tensor, mask: Tensor, kind: str,
                      negatives: Tensor | None) -> Tensor:
        from components.training.trainer import next_item_loss

        contrast = (self.stage >= self.config.contrast_from_stage and self.config.cl_weight > 0
                    and self.hne is not None and self._uses("hne"))
        passes = self._passes(items, behaviors, need_all=contrast)
        table = self.output_embeddings()
        loss = next_item_loss(passes["clean"], table, labels, mask, kind, negatives)
        if contrast:
            target = table[labels[mask]]  # [M, d]
            q = {k: (passes[k][mask] * target).sum(-1).float() for k in ("clean", "original", "noise")}
            cl = -(F.logsigmoid(q["clean"] - q["original"]) + F.logsigmoid(q["original"] - q["noise"])).mean()
            loss = loss + self.config.cl_weight * cl
        if "drop_share" in passes and self.config.drop_budget > 0:
            loss = loss + self.config.budget_weight * (passes["drop_share"] - self.config.drop_budget) ** 2
        if self.stage == 4 and self.config.compact_weight > 0:
            z = F.normalize(passes["clean"][:, -1].float(), dim=-1)  # the batch's user states
            loss = loss - self.config.compact_weight * coding_rate(z, self.config.compact_eps) / z.shape[0]
        return loss
