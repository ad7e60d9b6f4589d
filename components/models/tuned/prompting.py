"""Run a pre-trained encoder over a prompt-enhanced sequence: n prompt tokens prefixed to the user's events.

The window is left-padded, so the events sit at the right end.  The prompts go immediately to the left of the
first event (for an empty history: at the right end), and the window grows by n columns on the left:

    [pad ... pad | p_1 ... p_n | e_1 ... e_T]        width N + n

Choices, stated because the papers leave them open:
- Events keep the position embeddings they had in pre-training (positions count from the first event); prompt
  tokens get none: they are free vectors in the encoder's input space.  With no prompt (n = 0) the encoder
  computes exactly its pre-trained function.
- Prompts are prefix *tokens* (PPR's "prompt-enhanced sequence"), attended to by every later event through the
  causal mask (SASRec) or mixed in by the causal frequency filter (EBM); not key/value prefixes.
- Layer-wise prompts (DPCPL's progressive prompts): before layer l >= 1 the prompt slots' hidden states are
  replaced by that layer's prompt, so every layer reads a prompt of its own (P-Tuning v2's deep prompts).
- Per-position prompts (CPL's causal user prompts, ``position_prompts``): before layer l, each event's hidden
  state gets that layer's prompt for its own position added, a prompt computed from the events up to it only.
  Padding and the prompt slots get nothing, so the additions keep the encoder causal and padding-independent.
- The state at the last prompt slot is the user's state with no history at all: what a zero-shot user gets.
- Events the encoder drops (END4Rec's hard noise eliminator) stay out of every later position's input, as in
  pre-training (``run_stack``'s ``tokens``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def prompted_states(encoder, items: Tensor, behaviors: Tensor, prompts: Tensor,
                    layer_prompts: list[Tensor] | None = None,
                    event_mask: Tensor | None = None,
                    position_prompts: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Hidden states of the events [B, N, d] and the prompt-only state [B, d].

    ``prompts`` [B, n, d] (n >= 1) go in at the input; ``layer_prompts[l]`` [B, n, d], when given, replaces the
    slots before layer l (index 0 is ignored: the input prompt is ``prompts``).  ``event_mask`` [B, N] bool zeroes
    those events' embeddings while keeping them in the sequence (PPR's item-masking augmentation).
    ``position_prompts[l]`` [B, N, d], when given, is added to the events' hidden states before layer l (index 0:
    to their embeddings); padding columns of it are ignored."""
    x, valid, beh, tokens = encoder.stack_inputs(items, behaviors)  # [B, N, d], [B, N], [B, N], [B, N]
    if event_mask is not None:
        x = x.masked_fill(event_mask[..., None], 0.0)
    B, N, d = x.shape
    n = prompts.shape[1]
    if n < 1:
        raise ValueError("prompted_states: need at least one prompt token")
    xf = torch.cat([x.new_zeros(B, n, d), x], dim=1)  # [B, n+N, d]
    vf = torch.cat([valid.new_zeros(B, n), valid], dim=1)
    bf = torch.cat([beh.new_zeros(B, n), beh], dim=1)
    first = N - valid.sum(dim=1)  # column (in x) of each row's first event; N for an empty row
    slots = first[:, None] + torch.arange(n, device=x.device)[None, :]  # [B, n] columns in xf
    rows = torch.arange(B, device=x.device)[:, None].expand(B, n)
    xf = xf.index_put((rows, slots), prompts.to(xf.dtype))
    vf = vf.index_put((rows, slots), torch.ones_like(slots, dtype=torch.bool))
    # The slots later positions may read: the prompts and the events the encoder keeps (END4Rec's eliminator takes
    # the events it drops out, as in pre-training).
    tf = torch.cat([tokens.new_zeros(B, n), tokens], dim=1)
    tf = tf.index_put((rows, slots), torch.ones_like(slots, dtype=tf.dtype))

    added = None
    if position_prompts is not None:
        events = valid[..., None]
        added = [torch.cat([p.new_zeros(B, n, d), p * events.to(p.dtype)], dim=1) for p in position_prompts]

    hook = None
    if layer_prompts is not None or added is not None:
        def hook(layer: int, h: Tensor) -> Tensor:
            if layer_prompts is not None and layer > 0:
                h = h.index_put((rows, slots), layer_prompts[layer].to(h.dtype))
            if added is not None:
                h = h + added[layer].to(h.dtype)
            return h

    h = encoder.run_stack(xf, vf, bf, hook, tokens=tf)  # [B, n+N, d]
    return h[:, n:], h[torch.arange(B, device=x.device), slots[:, -1]]
