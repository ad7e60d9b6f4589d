"""Training losses of next-item models and the negatives they sample.

Models and the trainer both use these (models for their own objectives, e.g. END4Rec's and the tuned models'
``loss``), so they live below both: ``components.models`` imports nothing from ``components.training``.
Callers reach the functions through the module (``losses.next_item_loss(...)``), which is what lets the leak tests
record every loss call by patching one attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

#: "ce": softmax over the whole catalogue; "bce" / "bpr": one uniform negative per position; "sampled": softmax
#: over each position's label and a few thousand negatives shared by the batch (logQ-corrected, ``SharedNegatives``),
#: whose cost does not grow with the catalogue.
LOSSES = ("ce", "bce", "bpr", "sampled")


@dataclass(frozen=True)
class SharedNegatives:
    """Negatives shared by every position of a batch, for the ``sampled`` loss.

    ``items`` [S]: item ids drawn with replacement from a proposal q over 1..n_items; ``log_q`` [n_items + 1]:
    log(S * q(i)), the log of the number of times item i is expected in such a draw (the logQ correction: each
    logit, the label's and the negatives', is lowered by it, which makes the sampled softmax's gradient an
    unbiased estimate of the full softmax's as S grows, whatever q is; under a uniform q it is a constant that
    cancels)."""

    items: Tensor
    log_q: Tensor

    def to(self, device: torch.device | str) -> "SharedNegatives":
        return SharedNegatives(self.items.to(device), self.log_q.to(device))


class NegativeProposal:
    """The proposal the ``sampled`` loss draws its shared negatives from: uniform over 1..n_items (``power`` 0) or
    proportional to ``counts ** power`` (e.g. 0.75 over training label counts: popular items, the hard negatives of
    a skewed catalogue, drawn more often; an item never seen still gets a count of 1, so every item can be drawn).
    Drawing S items costs O(S log n_items) after an O(n_items) set-up, not O(n_items) per batch."""

    def __init__(self, n_items: int, n_samples: int, counts: np.ndarray | None = None, power: float = 0.0):
        if n_items < 2 or n_samples < 1:
            raise ValueError(f"NegativeProposal: need n_items >= 2 and n_samples >= 1, got {n_items}, {n_samples}")
        self.n_items, self.n_samples = n_items, n_samples
        self.uniform = power == 0 or counts is None
        log_q = np.zeros(n_items + 1, np.float64)
        if self.uniform:
            log_q[1:] = np.log(n_samples / n_items)
            self.cdf = None
        else:
            counts = np.asarray(counts, np.float64)
            if counts.shape != (n_items + 1,):
                raise ValueError(f"NegativeProposal: counts must have n_items + 1 = {n_items + 1} entries, "
                                 f"got {counts.shape}")
            weights = np.maximum(counts[1:], 1.0) ** power
            self.cdf = np.cumsum(weights)
            log_q[1:] = np.log(n_samples * weights / self.cdf[-1])
        log_q[0] = 0.0  # padding: never drawn, never a label
        self.log_q = torch.from_numpy(log_q.astype(np.float32))

    def draw(self, rng: np.random.Generator) -> SharedNegatives:
        if self.uniform:
            items = rng.integers(1, self.n_items + 1, size=self.n_samples)
        else:
            u = rng.random(self.n_samples) * self.cdf[-1]
            items = np.minimum(np.searchsorted(self.cdf, u, side="right"), self.n_items - 1) + 1
        return SharedNegatives(torch.from_numpy(items.astype(np.int64)), self.log_q)


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


#: Logit entries one step of the fused CPU loss (``_FusedSoftmaxCE``) holds at once: 2**19 fp32 values (2 MB, two
#: buffers of them), sized to stay in cache, where the passes over them run several times faster than over a
#: [positions x items] matrix in main memory.  Measured at 14,500 positions x 3,416 items, one thread, interleaved:
#: 0.213 s with 128 rows a chunk, 0.216 with 153 (this budget), 0.221 with 307, 0.240 with 614 (2**21).
CE_CHUNK_LOGITS = 1 << 19


class _FusedSoftmaxCE(torch.autograd.Function):
    """Summed softmax cross-entropy of h [M, d] over classes [C, d], y [M] in 0..C-1, fp32 on CPU: the value and
    gradients of ``F.cross_entropy(h @ classes.T, y, reduction="sum")`` computed together, ``rows`` positions at a
    time, in the forward pass.  Each chunk's logits (``rows`` x C) are made, turned into the softmax p, and used at
    once for both gradients (p minus one at each label, times classes and times h) while they are still in cache;
    the [M, C] matrix is never written to memory and the backward pass only scales the two saved gradients by the
    incoming one.  The loss of a row is max - log(max p) - logit[y] (max p = 1 / sum exp(logit - max) is at least
    1 / C, so it never underflows, unlike p[y])."""

    @staticmethod
    def forward(ctx, h: Tensor, classes: Tensor, y: Tensor, rows: int) -> Tensor:
        m, c = h.shape[0], classes.shape[0]
        want_h, want_classes = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if want_h else None
        grad_classes = torch.zeros_like(classes) if want_classes else None
        logits_buf = h.new_empty((min(rows, m), c))
        p_buf = torch.empty_like(logits_buf)
        total = h.new_zeros((), dtype=torch.float64)
        for start in range(0, m, rows):
            hc, yc = h[start:start + rows], y[start:start + rows]
            logits, p = logits_buf[:len(hc)], p_buf[:len(hc)]
            torch.mm(hc, classes.T, out=logits)
            target = logits.gather(1, yc[:, None])  # [r, 1]
            top = logits.amax(dim=1, keepdim=True)  # [r, 1]
            torch.ops.aten._softmax.out(logits, 1, False, out=p)
            total += (top - p.amax(dim=1, keepdim=True).log_() - target).sum(dtype=torch.float64)
            p.scatter_add_(1, yc[:, None], torch.full_like(target, -1.0))  # d loss / d logits
            if want_h:
                torch.mm(p, classes, out=grad_h[start:start + rows])
            if want_classes:  # (the out= form, not addmm_, so that FlopCounterMode counts it)
                torch.addmm(grad_classes, p.T, hc, out=grad_classes)
        ctx.save_for_backward(grad_h, grad_classes)
        return total.to(h.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_h, grad_classes = ctx.saved_tensors
        return (None if grad_h is None else grad_h * grad, None if grad_classes is None else grad_classes * grad,
                None, None)


def _fused_ce_applies(h: Tensor, classes: Tensor) -> bool:
    """The fused loss serves CPU training in fp32 (measured there); on GPUs, under autocast and without gradients
    the library's kernels are kept."""
    return (h.device.type == "cpu" and torch.is_grad_enabled() and (h.requires_grad or classes.requires_grad)
            and h.dtype == classes.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))


def _ce_sum(h: Tensor, classes: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy((h @ classes.T).float(), y, reduction="sum")


def _softmax_ce(h: Tensor, classes: Tensor, y: Tensor, max_logits: int) -> Tensor:
    """Mean softmax cross-entropy of h [M, d] over every row of classes [C, d]; y [M] in 0..C-1."""
    m, c = h.shape[0], classes.shape[0]
    if m == 0:
        return F.cross_entropy((h @ classes.T).float(), y)  # nan, as the mean over no position is
    if _fused_ce_applies(h, classes):
        rows = max(1, min(m, max_logits // c, max(64, CE_CHUNK_LOGITS // c)))
        return _FusedSoftmaxCE.apply(h, classes, y, rows) / m
    if m * c <= max_logits:
        return _ce_sum(h, classes, y) / m
    rows = max(1, max_logits // c)
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, m, rows):
        part = slice(start, start + rows)
        total = total + torch.utils.checkpoint.checkpoint(_ce_sum, h[part], classes, y[part], use_reentrant=False)
    return total / m


def sampled_softmax(h: Tensor, table: Tensor, y: Tensor, shared: SharedNegatives) -> Tensor:
    """Mean sampled-softmax cross-entropy of h [M, d] with labels y [M] against ``shared`` negatives, logQ-corrected.

    Each position's classes are its label and the S shared items; a shared item equal to the label (an accidental
    hit) is left out of that position's softmax.  The table's rows are read with sparse gradients
    (``F.embedding(sparse=True)``): the backward pass touches the M + S rows used, not the catalogue, so with a
    sparse-update optimizer (``components.training.trainer.build_optimizer``) a step's cost does not grow with
    the number of items."""
    pos = F.embedding(y, table, sparse=True)  # [M, d]
    neg = F.embedding(shared.items, table, sparse=True)  # [S, d]
    log_q = shared.log_q.to(h.device)
    pos_logit = (h * pos).sum(-1).float() - log_q[y]  # [M]
    neg_logits = (h @ neg.T).float() - log_q[shared.items]  # [M, S]
    neg_logits = neg_logits.masked_fill(shared.items[None, :] == y[:, None], float("-inf"))
    logits = torch.cat([pos_logit[:, None], neg_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=h.device))


def next_item_loss(hidden: Tensor, table: Tensor, labels: Tensor, mask: Tensor, kind: str,
                   negatives: Tensor | SharedNegatives | None = None, max_logits: int = CE_MAX_LOGITS) -> Tensor:
    """Mean next-item loss over masked positions.

    hidden [B, N, d], table [n_items+1, d] (row 0 = padding), labels [B, N] item ids, mask [B, N] bool;
    ``negatives``: [B, N] item ids (``bce`` / ``bpr``) or the batch's ``SharedNegatives`` (``sampled``).
    ``max_logits`` bounds the memory of the full-softmax loss (see CE_MAX_LOGITS); the value is the same.
    """
    h = hidden[mask]  # [M, d]: only labelled positions, which for sparse target behaviors is a small share
    y = labels[mask]  # [M]
    if kind == "ce":
        return _softmax_ce(h, table[1:], y - 1, max_logits)
    if kind == "sampled":
        if not isinstance(negatives, SharedNegatives):
            raise ValueError("next_item_loss: loss 'sampled' needs the batch's SharedNegatives (NegativeProposal.draw)")
        return sampled_softmax(h, table, y, negatives)
    if negatives is None or isinstance(negatives, SharedNegatives):
        raise ValueError(f"next_item_loss: loss {kind!r} needs one sampled negative per position [B, N]")
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
