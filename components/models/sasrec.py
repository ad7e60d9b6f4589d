"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), with behavior embeddings.

Input is a LEFT-padded window of a user's most recent events (0 = padding): item ids [B, N] and behavior codes
[B, N].  Each position attends causally to itself and the positions before it; the output at position t is the
user's state after event t, and the score of item v is the dot product with v's embedding, which is the same table
as the input embedding (weight tying, as in the paper: it halves the parameters and ties "what follows" to "what
was seen").  Multi-behavior data adds a behavior embedding to every event (E = item + behavior + position, as in
END4Rec/DPCPL); ``use_behavior=False`` gives plain SASRec.

Choices the paper leaves open, made here:
- Positions count from the first real event of the window (0, 1, 2, ...), so the encoding of a prefix does not
  depend on how much padding sits to its left or on what follows it: the state a training position sees is the
  state inference computes for the same prefix, and more left padding changes nothing.
- Pre-norm blocks by default (``norm_first``), which trains stably without warm-up; ``norm_first=False`` gives the
  paper's post-norm layout.
- The FFN is two Linear layers (the public code's Conv1d with kernel 1 is the same map, written less plainly).
- Padded positions are zeroed after every block.  A query at a padded position may attend to itself, so no
  attention row is ever fully masked (a fully masked softmax row is NaN).  A fully padded row (a zero-shot user)
  therefore ends as LayerNorm(0) = the final norm's bias: a finite, learned "no history" state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class SASRecConfig:
    n_items: int
    n_behaviors: int
    max_len: int = 200  # longest window fed to the model; also the size of the position table
    hidden: int = 50
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    use_behavior: bool = True
    norm_first: bool = True
    ffn_mult: int = 1  # FFN inner size = ffn_mult * hidden (the paper uses hidden -> hidden)
    seed: int = 0  # initialisation seed: the same config gives the same initial weights

    def __post_init__(self) -> None:
        problems = []
        if self.n_items < 1:
            problems.append(f"n_items={self.n_items} must be >= 1")
        if self.n_behaviors < 1:
            problems.append(f"n_behaviors={self.n_behaviors} must be >= 1")
        if self.hidden % self.n_heads != 0:
            problems.append(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must lie in [0, 1)")
        if self.max_len < 1 or self.n_blocks < 0 or self.ffn_mult < 1:
            problems.append("max_len and ffn_mult must be >= 1, n_blocks >= 0")
        if problems:
            raise ValueError("SASRecConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SASRecConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"SASRecConfig.from_dict: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**d)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)  # q, k, v in one matmul
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        # x [B, N, d]; allowed [B, 1, N, N] bool, True where query i may attend to key j
        B, N, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x [B, N, d]
        q = q.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, nh, N, hs]
        k = k.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, nh, N, hs]
        v = v.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2)  # [B, nh, N, hs]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)  # [B, nh, N, hs]
        y = y.transpose(1, 2).contiguous().view(B, N, d)  # [B, N, d]
        return self.resid_drop(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        inner = cfg.ffn_mult * cfg.hidden
        self.fc = nn.Linear(cfg.hidden, inner)
        self.out = nn.Linear(inner, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.out(self.drop(F.relu(self.fc(x)))))


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.ffn = FeedForward(cfg)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        if self.norm_first:
            x = x + self.attn(self.ln1(x), allowed)
            return x + self.ffn(self.ln2(x))
        x = self.ln1(x + self.attn(x, allowed))
        return self.ln2(x + self.ffn(x))


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.config = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=0)
        self.behavior_emb = nn.Embedding(cfg.n_behaviors + 1, cfg.hidden, padding_idx=0) if cfg.use_behavior else None
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_blocks))
        self.ln_f = nn.LayerNorm(cfg.hidden)
        self.reset_parameters()

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def reset_parameters(self) -> None:
        """Initialise every weight from ``config.seed`` (N(0, 0.02) as in GPT-2/nanoGPT), independent of torch's
        global RNG, so a config alone fixes the starting point."""
        g = torch.Generator().manual_seed(self.config.seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln" in name or name.startswith("ln_"):
                    p.fill_(1.0)  # LayerNorm gain
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()  # padding rows stay zero (padding_idx also blocks their gradient)
            if self.behavior_emb is not None:
                self.behavior_emb.weight[0].zero_()

    # ---- forward ------------------------------------------------------------------------------------------------
    def encode(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """items, behaviors [B, N] left-padded (0 = padding), N <= max_len -> hidden states [B, N, d]."""
        B, N = items.shape
        if N > self.config.max_len:
            raise ValueError(f"SASRec.encode: sequence length {N} exceeds max_len={self.config.max_len}")
        valid = items != 0  # [B, N]
        # Position = index among the real events of the row (0 for the first real event); padding is zeroed below.
        pos = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, N]
        # sqrt(d) scaling (as in the SASRec code) keeps the shared item table, which is also the output layer and
        # so kept small, from being drowned by position and behavior embeddings.
        x = self.item_emb(items) * math.sqrt(self.config.hidden) + self.pos_emb(pos)  # [B, N, d]
        if self.behavior_emb is not None:
            x = x + self.behavior_emb(behaviors.masked_fill(~valid, 0))
        mask = valid.unsqueeze(-1).to(x.dtype)  # [B, N, 1]
        x = self.emb_drop(x) * mask
        causal = torch.ones(N, N, dtype=torch.bool, device=items.device).tril()  # [N, N]
        eye = torch.eye(N, dtype=torch.bool, device=items.device)
        # Query i may see key j if j <= i and j is a real event; every query may see itself, so no row is empty.
        allowed = (causal & valid[:, None, :]) | eye  # [B, N, N]
        allowed = allowed.unsqueeze(1)  # [B, 1, N, N], broadcast over heads
        for block in self.blocks:
            x = block(x, allowed) * mask
        return self.ln_f(x)  # [B, N, d]

    def user_state(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """[B, N] histories -> [B, d]: the state after the most recent event (the last column, by left padding)."""
        return self.encode(items, behaviors)[:, -1, :]

    def output_embeddings(self) -> Tensor:
        """[n_items + 1, d] table that hidden states are scored against (row 0 = padding)."""
        return self.item_emb.weight

    def score_all(self, items: Tensor, behaviors: Tensor) -> Tensor:
        """[B, N] histories -> [B, n_items + 1] scores; column 0 (padding) is -inf."""
        scores = self.user_state(items, behaviors) @ self.item_emb.weight.T  # [B, n_items+1]
        scores[:, 0] = float("-inf")
        return scores

    def score_items(self, items: Tensor, behaviors: Tensor, candidates: Tensor) -> Tensor:
        """[B, N] histories, candidates [B, C] item ids -> [B, C] scores (padding candidates get -inf)."""
        h = self.user_state(items, behaviors)  # [B, d]
        scores = (self.item_emb(candidates) * h[:, None, :]).sum(-1)  # [B, C]
        return scores.masked_fill(candidates == 0, float("-inf"))
