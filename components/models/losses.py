"""Training losses of next-item models and the negatives they sample.

Models and the trainer both use these (models for their own objectives, e.g. END4Rec's and the tuned models'
``loss``), so they live below both: ``components.models`` imports nothing from ``components.training``.
Callers reach the functions through the module (``losses.next_item_loss(...)``), which is what lets the leak tests
record every loss call by patching one attribute.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

LOSSES = ("ce", "bce", "bpr")


def sample_negatives(labels: np.ndarray, n_items: int, rng: np.random.Generator,
                     avoid: np.ndarray | None = None) -> np.ndarray:
    """One uniform item per position, never equal to that position's label (redrawn until it differs).

    ``avoid`` [B, W] (item ids, 0 ignored): items a row's negatives must also not be, e.g. the row's history when
    the split excludes history items from candidates (``history_items: excluded``)."""
    if n_items < 2:
        raise ValueError(f"sample_negatives: need at least 2 items to draw a negative, have {n_items}")
    base = n_items + 1
    rows = np.arange(labels.shape[0], dtype=np.int64)[:, None]
    banned = np.zeros(0, np.int64)  # sorted row * base + item keys of every row's avoided items
    if avoid is not None:
        if labels.ndim != 2 or avoid.shape[0] != labels.shape[0]:
            raise ValueError(f"sample_negatives: avoid {avoid.shape} must have labels' rows {labels.shape}")
        banned = np.unique((rows * base + np.asarray(avoid, np.int64))[np.asarray(avoid) != 0])

    def in_banned(x: np.ndarray) -> np.ndarray:
        if banned.size == 0:
            return np.zeros(x.shape, bool)
        keys = rows * base + x
        return banned[np.searchsorted(banned, keys).clip(max=banned.size - 1)] == keys

    neg = rng.integers(1, n_items + 1, size=labels.shape)
    clash = (neg == labels) | in_banned(neg)
    for _ in range(1000):
        if not clash.any():
            return neg
        neg[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
        clash = (neg == labels) | in_banned(neg)
    raise ValueError("sample_negatives: a row's history covers (nearly) every item; no negative left to draw")


#: Largest [positions x items] logit matrix the full-softmax loss materialises at once (fp32: 512 MB).  Bigger
#: batches are cut into chunks whose logits are recomputed in the backward pass instead of being kept, so memory
#: stays bounded on large catalogues (a Taobao-sized one would otherwise need tens of GB per batch).
CE_MAX_LOGITS = 1 << 27


class _SoftmaxCE(torch.autograd.Function):
    """Summed softmax cross-entropy of h [M, d] over classes [C, d], y [M] in 0..C-1: the value and gradients of
    ``F.cross_entropy(h @ classes.T, y, reduction="sum")`` with fewer passes over the [M, C] logits, the
    largest tensor of a full-softmax step (log_softmax + nll_loss write it three times forward and allocate and
    fill two more in the backward pass).  Forward: logits, their row max, exp in place, row sums, normalised in
    place to the softmax p (kept); backward: p minus one at each label, in place, times the two matmuls, whose
    [M, d] and [C, d] results (not the [M, C] matrix) are scaled by the incoming gradient.  Its saved softmax is
    consumed by the backward pass, which may therefore run once (``retain_graph`` is refused)."""

    @staticmethod
    def forward(ctx, h: Tensor, classes: Tensor, y: Tensor) -> Tensor:
        logits = h @ classes.T  # [M, C] (under autocast in its compute dtype, which the backward pass reuses)
        ctx.mm_dtype = logits.dtype
        p = logits.float()
        rows = torch.arange(len(y), device=y.device)
        target = p[rows, y]  # [M]
        top = p.amax(dim=1, keepdim=True)  # [M, 1]
        p.sub_(top).exp_()
        total = p.sum(dim=1, keepdim=True)  # [M, 1]
        p.div_(total)
        ctx.save_for_backward(h, classes, y, p)
        ctx.used = False
        return (total.log().squeeze(1) + top.squeeze(1) - target).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.used:
            raise RuntimeError("_SoftmaxCE: its backward pass consumes the saved softmax and runs once only")
        ctx.used = True
        h, classes, y, p = ctx.saved_tensors
        p[torch.arange(len(y), device=y.device), y] -= 1.0  # d loss / d logits, before the incoming gradient
        p = p.to(ctx.mm_dtype)
        grad_h = grad_classes = None
        if ctx.needs_input_grad[0]:
            grad_h = (p @ classes.to(ctx.mm_dtype)).to(h.dtype).mul_(grad)
        if ctx.needs_input_grad[1]:
            grad_classes = (p.T @ h.to(ctx.mm_dtype)).to(classes.dtype).mul_(grad)
        return grad_h, grad_classes, None


def _ce_sum(h: Tensor, classes: Tensor, y: Tensor) -> Tensor:
    """``F.cross_entropy(h @ classes.T, y, reduction="sum")``, in fewer passes when gradients are needed on CPU
    (measured there; on GPUs, where autocast also applies, the library's kernels are kept)."""
    if h.device.type == "cpu" and torch.is_grad_enabled() and (h.requires_grad or classes.requires_grad):
        return _SoftmaxCE.apply(h, classes, y)
    return F.cross_entropy((h @ classes.T).float(), y, reduction="sum")


def _ce_chunk(h: Tensor, classes: Tensor, y: Tensor) -> Tensor:
    return _ce_sum(h, classes, y)


def _softmax_ce(h: Tensor, classes: Tensor, y: Tensor, max_logits: int) -> Tensor:
    """Mean softmax cross-entropy of h [M, d] over every row of classes [C, d]; y [M] in 0..C-1."""
    m, c = h.shape[0], classes.shape[0]
    if m == 0:
        return F.cross_entropy((h @ classes.T).float(), y)  # nan, as the mean over no position is
    if m * c <= max_logits:
        return _ce_sum(h, classes, y) / m
    rows = max(1, max_logits // c)
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, m, rows):
        part = slice(start, start + rows)
        total = total + torch.utils.checkpoint.checkpoint(_ce_chunk, h[part], classes, y[part], use_reentrant=False)
    return total / m


def next_item_loss(hidden: Tensor, table: Tensor, labels: Tensor, mask: Tensor, kind: str,
                   negatives: Tensor | None = None, max_logits: int = CE_MAX_LOGITS) -> Tensor:
    """Mean next-item loss over masked positions.

    hidden [B, N, d], table [n_items+1, d] (row 0 = padding), labels/negatives [B, N] item ids, mask [B, N] bool.
    ``max_logits`` bounds the memory of the full-softmax loss (see CE_MAX_LOGITS); the value is the same.
    """
    h = hidden[mask]  # [M, d]: only labelled positions, which for sparse target behaviors is a small share
    y = labels[mask]  # [M]
    if kind == "ce":
        return _softmax_ce(h, table[1:], y - 1, max_logits)
    if negatives is None:
        raise ValueError(f"next_item_loss: loss {kind!r} needs sampled negatives")
    neg = negatives[mask]  # [M]
    pos_score = (h * table[y]).sum(-1).float()  # [M]
    neg_score = (h * table[neg]).sum(-1).float()  # [M]
    if kind == "bce":
        return -(F.logsigmoid(pos_score) + F.logsigmoid(-neg_score)).mean()
    if kind == "bpr":
        return -F.logsigmoid(pos_score - neg_score).mean()
    raise ValueError(f"next_item_loss: unknown loss {kind!r}; use one of {LOSSES}")


def _lse_chunk(h: Tensor, table: Tensor) -> Tensor:
    return torch.logsumexp((h @ table.T).float(), dim=-1)


def logsumexp_items(h: Tensor, table: Tensor, max_logits: int = CE_MAX_LOGITS) -> Tensor:
    """logsumexp over items 1..n of h [M, d] . table[1:] -> [M] (the normaliser of a softmax over the catalogue,
    e.g. the repeat head's explore mode), in row chunks recomputed in the backward pass as ``_softmax_ce`` does."""
    items = table[1:]
    m, c = h.shape[0], items.shape[0]
    if m * c <= max_logits or m == 0:
        return _lse_chunk(h, items)
    rows = max(1, max_logits // c)
    parts = [torch.utils.checkpoint.checkpoint(_lse_chunk, h[i:i + rows], items, use_reentrant=False)
             for i in range(0, m, rows)]
    return torch.cat(parts)
