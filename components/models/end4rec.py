"""END4Rec: behavior-aware denoising on top of the Efficient Behavior Miner (EBM).

The paper's text available here is a summary; where it gives no formula, what follows is a **reconstruction**
(named so), kept switchable through the config so that a better reading can replace it.

- **Hard Noise Eliminator** (token-level noise such as mis-clicks).  Each event s gets a keep logit
  ``score(e_s, h_{s-1}) - pref[b_s]``: how well the event fits the user's state just before it (``h`` from an EBM
  pass over the raw sequence; a causal context, so no decision ever reads a later event, which would leak labels),
  minus a learnable preference value per behavior (the paper models behavior preference with a Poisson
  distribution; here it is a free scalar per behavior starting at ``pref_init``).  The token score is
  (reconstruction) ``w * fit_s + mlp(e_s, h_{s-1}, e_s * h_{s-1})``, where ``fit_s`` is the score the recommender
  itself gives the event in its context, ``h_{s-1} . e_s``, standardised by **running statistics** of the fit
  over training events: a mean and a variance kept as buffers (``fit_mean``, ``fit_var``), updated without
  gradient from each training batch *after* that batch has used them (a cumulative average over the first 100
  batches, then an exponential average with weight 0.01), and fixed at evaluation.  An event the user's history
  cannot explain is a candidate mis-click.  No decision reads another user or a later event: a decision does not
  change with the batch it is made in, and in training no later label reaches an earlier decision.  (An earlier
  version z-scored over the current batch's events: 19 of 1,024 evaluation decisions changed between batch sizes
  64 and 8, and in training the batch mean carried later labels into earlier decisions.  A z-score against the
  whole catalogue under the same state, also batch-free, was tried and rejected: real and injected events both
  rank far above the catalogue's mean, every logit saturated and the eliminator dropped nothing on the
  controlled-noise data.)  Under data-parallel training each rank keeps its own statistics (the same in
  expectation); rank 0's are saved.  ``w`` is learned, starting at ``fit_weight``; ``fit_weight: 0`` leaves the
  MLP alone, which the controlled-noise benchmark shows cannot find injected clicks from the recommendation
  loss's straight-through gradients (BENCHMARKS.md).  A Gumbel-Softmax over
  {keep, drop} with straight-through hard samples at temperature ``tau`` makes the decision exactly 0/1 in the
  forward pass and differentiable in the backward pass; at evaluation the decision is deterministic
  (keep iff logit > 0).  Dropped events are taken out of the sequence at every layer: the filters' inputs zero
  them (``tokens`` of ``run_stack``), so no later position reads them, while later events keep their positions.
  A dropped event's position still gets a state (the one after the kept events up to it), which is what the
  model predicts after it: training scores every position, and a user whose latest event is dropped is served.
- **Soft Noise Filter** (representation-level noise such as outdated interests): one learnable causal frequency
  kernel per behavior, mixed per position by the behavior shares of the events up to and including that
  position (reconstruction: "weighted by the behavior mix of the sequence", made causal; the shares count every
  real event, dropped or not).  The mix is exact and cheap: each kernel filters the sequence once (a causal FFT
  convolution), and the K outputs are summed with per-position weights.  Added residually (kernels start at
  zero, so the filter starts as the identity).  Shares over the whole window would let the behaviors of later
  events move earlier states (a future leak that an earlier version had).
- **Noise-decoupling contrastive loss**: with Q(S) the dot product of the state after S with the next item,
  ``-log s(Q(denoised) - Q(original)) - log s(Q(original) - Q(noise))`` over the labelled positions, where
  "noise" is the sequence of the dropped events alone.
- **Drop budget** (reconstruction; how the paper's behavior preference values set the amount of dropping is not
  in the summary): with ``drop_budget > 0``, ``budget_weight * (expected drop share - drop_budget)^2`` asks the
  eliminator to drop about that share of events and leaves *which* ones to the recommendation and contrastive
  losses.  Without it, nothing pushes towards dropping: keeping every event is the easy optimum of the
  recommendation loss (seen in the controlled-noise benchmark: drop rate 0 for injected and real events alike).
- **Compactness regularizer** (``compactness``, weight ``compact_weight``, eps ``compact_eps``; END4Rec's code:
  0.01 and 1e-3), in stage 4 and joint training:

  * ``official``: as the authors' code, **minimised**: ``+ compact_weight * mean_b R_b`` with
    ``R_b = 1/2 logdet(I + d/(L_b eps^2) X_b X_b^T)`` for each sequence's token matrix X_b (its L_b real tokens'
    denoised states, d dims; padding left out).  Per sequence, so no term couples two users.  The authors' code
    applies it to the real part of the fused spectrum inside its EBM layer, over the whole window (padding
    included); here X_b is the stack's output at the real events, the states the loss reads.  The loss carries
    R_b less 1/2 min(L_b, d) log(d/(L_b eps^2)), a constant of the data (the same gradients; without it the term
    adds ~3 to a loss of ~8 at d = 32, eps = 1e-3, and the loss curves stop being comparable across stages).
  * ``batch_states``: the coding rate R(Z) = 1/2 logdet(I + d/(n eps^2) Z^T Z) of the batch's L2-normalised
    latest states, **maximised** (the loss subtracts ``compact_weight * R / n``): it rewards user states that
    spread over the space (no collapse), DPCPL's use of the term.  It couples the users of a batch in training
    (never at scoring).  The default, by measurement: on the Taobao head (joint END4Rec, 5 epochs, batch 16,
    seed 0, 119 test users) ``official`` lowered sampled99 NDCG@10 from 0.214 (no term) to 0.165 (paired
    bootstrap 95% CI of the difference [-0.082, -0.019]), ``batch_states`` left it at 0.212; one seed and a short
    budget, so BENCHMARKS.md's multi-seed table is the figure to trust.

  Both log-determinants are computed in float64 through a Cholesky factor on the smaller Gram side (Sylvester's
  identity).
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

from components.models import losses
from components.models.base import Batch
from components.models.ebm import EBM, EBMConfig

STAGES = (1, 2, 3, 4)
COMPACTNESS = ("official", "batch_states")


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
    compactness: str = "batch_states"  # or "official" (per sequence, minimised): see the module docstring
    training_mode: str = "guided"  # "guided" (four stages) or "joint" (everything from the start)
    stage_epochs: list[int] = field(default_factory=lambda: [10, 3, 3, 10])

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.tau <= 0:
            problems.append(f"tau={self.tau} must be > 0")
        if self.compactness not in COMPACTNESS:
            problems.append(f"compactness={self.compactness!r} must be one of {COMPACTNESS}")
        if self.training_mode not in ("guided", "joint"):
            problems.append(f"training_mode={self.training_mode!r} must be 'guided' or 'joint'")
        if len(self.stage_epochs) != 4 or any(e < 0 for e in self.stage_epochs):
            problems.append(f"stage_epochs={self.stage_epochs} must be four counts >= 0")
        return problems

    def __post_init__(self) -> None:
        super().__post_init__()
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


def sequence_coding_rate(x: Tensor, valid: Tensor, eps: float, centred: bool = False) -> Tensor:
    """R_b = 1/2 logdet(I + c_b X_b X_b^T), c_b = d/(L_b eps^2), per sequence: x [B, N, d], valid [B, N] (X_b: the
    L_b real tokens of row b) -> [B].  Padding rows of X_b are zero, which leaves the determinant unchanged; a row
    with no token gives 0.  float64 Cholesky on the smaller Gram side, as :func:`coding_rate`.

    ``centred`` subtracts 1/2 min(L_b, d) log c_b, which depends on no weight (so no gradient changes) and is most
    of the value at small eps (c_b ~ 1e6): what is left, 1/2 sum_i log(lambda_i + 1/c_b) over the min(L_b, d)
    largest eigenvalues of X_b X_b^T, keeps the training loss on the recommendation loss's scale."""
    B, N, d = x.shape
    with torch.autocast(device_type=x.device.type, enabled=False):  # float64 throughout, also under AMP
        xd = x.double() * valid.unsqueeze(-1).double()
        length = valid.sum(dim=1).clamp(min=1).double()  # [B]
        scale = d / (length * eps ** 2)  # [B]
        gram = xd.transpose(1, 2) @ xd if d <= N else xd @ xd.transpose(1, 2)  # [B, m, m], m = min(N, d)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        chol = torch.linalg.cholesky(eye + scale[:, None, None] * gram)
        rate = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        if centred:
            rate = rate - 0.5 * length.clamp(max=d) * torch.log(scale) * valid.any(dim=1)
        return rate.to(x.dtype)


class HardNoiseEliminator(nn.Module):
    #: Weight of a batch in the running fit statistics once past the first 1 / FIT_MOMENTUM batches (before that:
    #: a cumulative average, so the statistics settle within a few batches).
    FIT_MOMENTUM = 0.01

    def __init__(self, cfg: END4RecConfig):
        super().__init__()
        d = cfg.hidden
        self.score = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.pref = nn.Parameter(torch.full((cfg.n_behaviors + 1,), float(cfg.pref_init)))
        self.fit_weight = nn.Parameter(torch.tensor(float(cfg.fit_weight)))
        self.use_fit = cfg.fit_weight != 0
        # Running statistics of the fit over training events (module docstring); saved with the weights.
        self.register_buffer("fit_mean", torch.zeros(()))
        self.register_buffer("fit_var", torch.ones(()))
        self.register_buffer("fit_batches", torch.zeros((), dtype=torch.long))

    def keep_logits(self, x: Tensor, context: Tensor, behaviors: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """x [B, N, d] embedded events, context [B, N, d] states (state after event t at t), targets [B, N, d] the
        events' rows of the output table, valid [B, N] -> [B, N] keep logits.  Logit t depends on events <= t of
        its own row and on the running fit statistics from before this call (which a training call then
        updates).

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
            fit = (before * targets).sum(-1).float()
            has_context = valid & F.pad(valid[:, :-1], (1, 0), value=False)  # a first event has nothing to fit
            z = (fit - self.fit_mean) / self.fit_var.clamp(min=1e-12).sqrt()  # statistics from before this batch
            logits = logits + self.fit_weight * z.to(logits.dtype) * has_context.to(logits.dtype)
            if self.training:
                self._update_fit_statistics(fit[has_context])
        return logits

    @torch.no_grad()
    def _update_fit_statistics(self, values: Tensor) -> None:
        if values.numel() < 2:
            return
        weight = (1.0 / (self.fit_batches + 1).float()).clamp(min=self.FIT_MOMENTUM)  # on the device: no sync
        self.fit_mean.lerp_(values.mean(), weight)
        self.fit_var.lerp_(values.var(), weight)
        self.fit_batches += 1


class SoftNoiseFilter(nn.Module):
    def __init__(self, cfg: END4RecConfig):
        super().__init__()
        self.kernels = nn.Parameter(torch.zeros(cfg.n_behaviors, cfg.max_len, cfg.hidden))  # one per behavior
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, behaviors: Tensor, valid: Tensor) -> Tensor:
        """x [B, N, d] (dropped events already zero), behaviors [B, N] (0 = padding), valid [B, N] -> [B, N, d]:
        x plus sum_k share_k(t) * (kernel_k * x)(t), share_k(t) the share of behavior k among the events <= t."""
        n_beh, n, size = self.kernels.shape[0], x.shape[1], 2 * x.shape[1]
        counts = F.one_hot(behaviors.long(), n_beh + 1)[..., 1:].cumsum(dim=1).float()  # [B, N, K] events <= t
        share = counts / counts.sum(-1, keepdim=True).clamp(min=1)
        spec_x = torch.fft.rfft(x.float(), n=size, dim=1)  # [B, N+1, d], shared by the K kernels
        spec_k = torch.fft.rfft(self.kernels[:, :n].float(), n=size, dim=1)  # [K, N+1, d]
        filtered = x.new_zeros(x.shape, dtype=torch.float32)
        for k in range(n_beh):  # K causal convolutions, mixed per position (K is the handful of behaviors)
            filtered = filtered + share[..., k:k + 1] * torch.fft.irfft(spec_x * spec_k[k], n=size, dim=1)[:, :n]
        return (x + self.drop(filtered.to(x.dtype))) * valid.unsqueeze(-1).to(x.dtype)


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
    def _denoise(self, items: Tensor, behaviors: Tensor, need_original: bool) -> dict[str, Tensor]:
        """Embedding, the eliminator's decisions and the soft filter: what the EBM stack reads.  Keys: ``x`` the
        raw embedded events, ``valid``, ``behaviors`` (padding zeroed), ``keep`` [B, N] (0/1, straight-through
        while training; = valid without the eliminator), ``clean`` the denoised inputs, ``original`` the raw
        sequence's states (with ``need_original``: the contrastive loss's, with dropout and gradient), and
        ``drop_share`` (with the eliminator)."""
        x, valid = self.embed(items, behaviors)
        behaviors = behaviors.masked_fill(~valid, 0)
        out: dict[str, Tensor] = {"x": x, "valid": valid, "behaviors": behaviors}
        keep = valid.to(x.dtype)
        if need_original:
            out["original"] = self.run_stack(x, valid, behaviors)
        if self._uses("hne"):
            if self.training or "original" not in out:
                seen, context = self._eliminator_context(items, behaviors)
            else:
                seen, context = x, out["original"]
            logits = self.hne.keep_logits(seen, context, behaviors, self.output_embeddings()[items], valid)
            keep = gumbel_keep_mask(logits, self.config.tau, self.training) * valid.to(x.dtype)
            drop_prob = torch.sigmoid(-logits) * valid
            self.last_keep = keep.detach()
            self.last_drop_prob = drop_prob.detach()
            out["drop_share"] = drop_prob.sum() / valid.sum().clamp(min=1)
        clean = x * keep.unsqueeze(-1)
        if self._uses("snf"):
            clean = self.snf(clean, behaviors, valid)
        out["keep"], out["clean"] = keep, clean
        return out

    def _eliminator_context(self, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor]:
        """(embedded events, the raw sequence's states) as the eliminator reads them: without dropout and without
        gradient (its inputs are detached anyway), in training as at evaluation.  So the fits it standardises,
        and the running statistics it keeps of them, have the same distribution in both modes; the only
        difference left is Gumbel sampling against the deterministic threshold.  (With dropout in the context,
        on the controlled-noise Taobao head, training fits averaged 3.35 against 3.71 at evaluation, and the
        evaluation decisions dropped 2.4% / 1.2% of injected / original events instead of 8.2% / 4.1%.)  In
        guided stages 2-3 this pass replaces the raw-sequence pass the eliminator read before; with the
        contrastive loss on, it is one extra forward pass without gradient."""
        was_training = self.training
        try:
            self.train(False)
            with torch.no_grad():
                x, valid = self.embed(items, behaviors)
                return x, self.run_stack(x, valid, behaviors.masked_fill(~valid, 0))
        finally:
            self.train(was_training)

    def _passes(self, items: Tensor, behaviors: Tensor, need_all: bool) -> dict[str, Tensor]:
        d = self._denoise(items, behaviors, need_original=need_all)
        valid, behaviors, keep = d["valid"], d["behaviors"], d["keep"]
        out = {k: d[k] for k in ("original", "drop_share") if k in d}
        # Dropped events are no tokens: they get a state but never feed another position (run_stack's tokens).
        out["clean"] = self.run_stack(d["clean"], valid, behaviors, tokens=keep)
        out["keep"] = keep
        if need_all:
            dropped = valid.to(keep.dtype) - keep
            out["noise"] = self.run_stack(d["x"] * dropped.unsqueeze(-1), valid, behaviors, tokens=dropped)
        return out

    def encode(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """Denoised hidden states [B, N, d] (the modules of the current stage that are on)."""
        return self._passes(items, behaviors, need_all=False)["clean"]

    def stack_inputs(self, items: Tensor, behaviors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The denoised embedded events (dropped events zeroed, soft filter applied), valid, behaviors and the
        kept events as ``tokens``: prompt tuning inserts its prompts here, so they join the sequence that the EBM
        stack reads after denoising, as the summary's CPL does.  Pass ``tokens`` on to ``run_stack``: without it
        a dropped event's slot feeds later positions again from the first layer on."""
        d = self._denoise(items, behaviors, need_original=False)
        return d["clean"], d["valid"], d["behaviors"], d["keep"]

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

    def training_stages(self) -> list[int] | None:
        return list(self.config.stage_epochs) if self.config.training_mode == "guided" else None

    def sparse_item_table(self) -> None:
        """None: the hard noise eliminator reads the item table densely in training (``keep_logits``)."""
        return None

    def loss(self, batch: Batch, kind: str) -> Tensor:
        items, labels, mask = batch.items, batch.labels, batch.mask
        contrast = (self.stage >= self.config.contrast_from_stage and self.config.cl_weight > 0
                    and self.hne is not None and self._uses("hne"))
        passes = self._passes(items, batch.behaviors, need_all=contrast)
        table = self.output_embeddings()
        loss = losses.next_item_loss(passes["clean"], table, labels, mask, kind, batch.negatives)
        if contrast:
            target = table[labels[mask]]  # [M, d]
            q = {k: (passes[k][mask] * target).sum(-1).float() for k in ("clean", "original", "noise")}
            cl = -(F.logsigmoid(q["clean"] - q["original"]) + F.logsigmoid(q["original"] - q["noise"])).mean()
            loss = loss + self.config.cl_weight * cl
        if "drop_share" in passes and self.config.drop_budget > 0:
            loss = loss + self.config.budget_weight * (passes["drop_share"] - self.config.drop_budget) ** 2
        if self.stage == 4 and self.config.compact_weight > 0:
            loss = loss + self.config.compact_weight * self.compactness_term(passes["clean"], items != 0)
        return loss

    def compactness_term(self, states: Tensor, valid: Tensor) -> Tensor:
        """The term added to the loss (times ``compact_weight``), by ``config.compactness``: see the module
        docstring.  states [B, N, d] denoised, valid [B, N]."""
        if self.config.compactness == "official":
            return sequence_coding_rate(states.float(), valid, self.config.compact_eps, centred=True).mean()
        z = F.normalize(states[:, -1].float(), dim=-1)  # the batch's latest states
        return -coding_rate(z, self.config.compact_eps) / z.shape[0]
