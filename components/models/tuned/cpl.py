"""``cpl``: DPCPL's Customized Prompt Learning (reconstruction from the paper's summary, following methods.md),
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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.end4rec import coding_rate
from components.models.tuned.base import TunedRecommender, TuningConfig
from components.models.tuned.prompting import prompted_states


@dataclass
class CPLConfig(TuningConfig):
    n_prompts: int = 1  # prompt tokens per layer
    n_factors: int = 8  # prompt factors
    factor_std: float = 0.3  # factors start at the scale of embedded events, so the gates choice matters early
    user_dim: int = 32  # user encoder size
    gru_dim: int = 16  # behavior-type GRU size
    position_prompts: bool = True  # per-position prompts from the history (False: the profile prefix only)
    compact_weight: float = 0.01
    compact_eps: float = 1e-3

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.n_prompts < 1:
            problems.append("n_prompts must be >= 1")
        return problems


class CPL(TunedRecommender):
    config: CPLConfig
    frozen_base = True
    has_side_model = False  # the summary has none

    def _build(self, cfg: CPLConfig, hidden: int, profile_dim: int) -> None:
        n_layers = self.base.n_stack_layers
        self.behavior_emb = nn.Embedding(int(cfg.base_config["n_behaviors"]) + 1, cfg.gru_dim, padding_idx=0)
        self.gru = nn.GRU(cfg.gru_dim, cfg.gru_dim, batch_first=True)
        self.user_enc = nn.Linear(profile_dim + cfg.gru_dim, cfg.user_dim)
        self.factors = nn.Parameter(torch.randn(cfg.n_factors, cfg.n_prompts * hidden) * cfg.factor_std)
        self.gates = nn.ModuleList(nn.Linear(cfg.user_dim, cfg.n_factors) for _ in range(max(1, n_layers)))
        if cfg.position_prompts:  # a_l: zero-init scale of the per-position prompts (module docstring)
            self.position_scale = nn.Parameter(torch.zeros(max(1, n_layers)))

    def _encode(self, items: Tensor, behaviors: Tensor, x: Tensor | None,
                event_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        prefix, positions, prompts = self._cpl_prompts(items, behaviors, x)
        h, empty = prompted_states(self.base, items, behaviors, prefix[0], prefix, event_mask=event_mask,
                                   position_prompts=positions)
        return h, empty, prompts

    def _extra_loss(self, items: Tensor, behaviors: Tensor, profiles: Tensor | None, h: Tensor, empty: Tensor,
                    extra: Tensor | None) -> Tensor | None:
        cfg = self.config
        if not (cfg.compact_weight > 0 and extra is not None and extra.shape[0] > 1):
            return None
        z = F.normalize(extra.float(), dim=-1)
        return -(cfg.compact_weight * coding_rate(z, cfg.compact_eps) / z.shape[0])

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
