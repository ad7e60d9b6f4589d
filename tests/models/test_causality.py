"""No model may see the future or the rest of the batch: leak tests over every model the registries know.

Parametrized from ``components.models.registry.ARCHITECTURES`` (every encoder) and
``components.models.tuned.methods.METHODS`` (every tuning method, over every registered encoder that can take prompts,
i.e. implements ``run_stack``), so a new model is covered without editing this file.

(a) **Causality.**  Changing any event after position t (its item, or only its behavior) leaves every output at
    positions <= t unchanged, in eval mode and in train mode under the same torch seed (Gumbel noise, dropout and
    masks then draw the same numbers in both runs) and from the same buffers (running statistics that a training
    pass updates are restored before the second pass).  "Output at position t" is the per-position state that the
    model's training loss scores against the next item: what ``loss`` (the ``Recommender`` contract) hands to
    ``components.models.losses.next_item_loss`` (captured by patching it); for a loss that does not go through
    it, the model's ``sequence_states``.  Every column
    up to t is compared, padding columns included (they hold the empty-history state, or the encoder's padding
    output); extra columns left of the window, if a model adds any (a zero-shot state), may depend on no event at
    all.  The labels passed are the real next items, so a state that reads its label fails too.  Left-padded
    batches of varied lengths (a full row, an empty row), several t, several seeds.
(b) **Batch independence.**  A user's ``score_all`` / ``score_items`` in a batch of 64 random users equals the
    same user's scores alone (with the batch's padding width, and trimmed to its own history), eval mode.

Weights are the seeded initial ones plus Gaussian noise on every parameter, so no module starts as an identity
(END4Rec's soft filter kernels and the behavior mixer start at zero and would hide whatever they leak).
Padding rows of embedding tables stay zero, as training keeps them.  Tolerance 1e-5 (float32).
"""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest
import torch
from torch import Tensor, nn

import components.models.losses as losses_module
from components.models.base import Batch
from components.models.registry import ARCHITECTURES, build_model, model_classes
from components.models.tuned.methods import METHODS, method_config
from components.tuning.tune import takes_prompts

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)

N_ITEMS, N_BEHAVIORS, N = 40, 3, 16
#: Small settings, each used where the model's config has the field (a new encoder gets those it knows).
SMALL = {"max_len": N, "hidden": 16, "n_layers": 2, "n_heads": 2, "chunks": 4, "dropout": 0.2,
         "n_interests": 2, "n_prompts": 2}
PROFILE_FIELDS, PROFILE_VOCAB = ["age", "gender"], [["18", "25", "35"], ["F", "M"]]
TUNING = {"n_prompts": 2, "prompt_hidden": 16, "n_factors": 4, "user_dim": 8, "gru_dim": 8, "n_interests": 2,
          "interest_prompts": 2}
SEEDS = (0, 1, 2)
CUTS = (1, 4, 8, 11, 14)  # the t after which events change
ATOL = RTOL = 1e-5


def _encoder_config(name: str) -> dict:
    _, cfg_cls = model_classes(name)
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    return {"n_items": N_ITEMS, "n_behaviors": N_BEHAVIORS, "seed": 0, **{k: v for k, v in SMALL.items() if k in known}}


PROMPT_BASES = [a for a in ARCHITECTURES if takes_prompts(a)]
TUNED = "tuned-"  # test ids of tuned models: tuned-<method>@<base>
MODELS = list(ARCHITECTURES) + [f"{TUNED}{m}@{b}" for m in METHODS for b in PROMPT_BASES]


def _perturb(model: nn.Module, seed: int = 123, scale: float = 0.1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
        for m in model.modules():
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
    return model


def build(name: str) -> nn.Module:
    if not name.startswith(TUNED):
        return _perturb(build_model(name, _encoder_config(name)))
    method, base = name[len(TUNED):].split("@")
    cfg = method_config(method, dict(base_architecture=base, base_config=_encoder_config(base), n_items=N_ITEMS,
                                     target_behaviors=[N_BEHAVIORS], profile_fields=PROFILE_FIELDS,
                                     profile_vocab=PROFILE_VOCAB, seed=0, **TUNING), strict=False)
    return _perturb(build_model(base, cfg.to_dict(), method))


def make_batch(g: torch.Generator, b: int, n: int = N) -> tuple[Tensor, Tensor, Tensor]:
    """Left-padded items, behaviors [b, n] of random lengths 0..n (row 0 full, row 1 empty) and profiles."""
    lengths = torch.randint(0, n + 1, (b,), generator=g)
    lengths[0], lengths[1] = n, 0
    items = torch.randint(1, N_ITEMS + 1, (b, n), generator=g)
    behaviors = torch.randint(1, N_BEHAVIORS + 1, (b, n), generator=g)
    pad = torch.arange(n)[None, :] < (n - lengths)[:, None]
    items[pad], behaviors[pad] = 0, 0
    profiles = torch.stack([torch.randint(0, len(v) + 1, (b,), generator=g) for v in PROFILE_VOCAB], dim=1)
    return items, behaviors, profiles


def change_after(items: Tensor, behaviors: Tensor, t: int, what: str, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Every event after column t gets another item (what='item') or only another behavior (what='behavior')."""
    later = (items != 0) & (torch.arange(items.shape[1])[None, :] > t)
    items, behaviors = items.clone(), behaviors.clone()
    if what == "item":
        shift = torch.randint(1, N_ITEMS, items.shape, generator=g)
        items[later] = ((items - 1 + shift) % N_ITEMS + 1)[later]
    else:
        shift = torch.randint(1, N_BEHAVIORS, behaviors.shape, generator=g)
        behaviors[later] = ((behaviors - 1 + shift) % N_BEHAVIORS + 1)[later]
    return items, behaviors


def restore(model: nn.Module, buffers: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])


class _Captured(Exception):
    pass


def training_states(model: nn.Module, items: Tensor, behaviors: Tensor, profiles: Tensor) -> Tensor:
    """The per-position outputs the training loss scores against the next item, [B, extra + N, d]: what
    ``loss`` hands to ``next_item_loss``; for a loss that does not go through it, the model's
    ``sequence_states``."""
    profiles = profiles if model.uses_profiles else None
    labels = torch.cat([items[:, 1:], torch.ones_like(items[:, :1])], dim=1)  # the real next items
    mask = (items != 0) & (labels != 0)
    seen: dict[str, Tensor] = {}

    def record(hidden, table, labels, mask, kind, negatives=None, **kw):
        seen["hidden"] = hidden
        raise _Captured

    with mock.patch.object(losses_module, "next_item_loss", record):
        try:
            model.loss(Batch(items, behaviors, labels, mask, profiles=profiles), "ce")
        except _Captured:
            pass
    if "hidden" in seen:
        return seen["hidden"]
    if callable(getattr(model, "sequence_states", None)):
        return model.sequence_states(items, behaviors, *([profiles] if profiles is not None else []))
    pytest.fail(f"{type(model).__name__}.loss does not call next_item_loss and the model has no "
                "sequence_states(items, behaviors): expose the per-position outputs its loss reads")


def _excess(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(max |a - b|, max of |a - b| beyond the tolerance); equal infinities count as equal."""
    same_inf = torch.isinf(a) & (a == b)
    diff = torch.where(same_inf, torch.zeros_like(a), (a - b).abs())
    excess = diff - (ATOL + RTOL * torch.where(same_inf, torch.zeros_like(b), b.abs()))
    return float(diff.max()) if diff.numel() else 0.0, float(excess.max()) if excess.numel() else -1.0


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("what", ["item", "behavior"])
@pytest.mark.parametrize("name", MODELS)
def test_outputs_up_to_t_ignore_every_later_event(name, what, mode):
    model = build(name)
    model.train(mode == "train")
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    worst, where = 0.0, None
    failed = False
    with torch.no_grad():
        for seed in SEEDS:
            g = torch.Generator().manual_seed(1000 + seed)
            items, behaviors, profiles = make_batch(g, 8)
            for t in CUTS:
                items2, behaviors2 = change_after(items, behaviors, t, what, g)
                torch.manual_seed(seed)
                h = training_states(model, items, behaviors, profiles)
                restore(model, buffers)  # running statistics updated by a training pass: the state before it
                torch.manual_seed(seed)
                h2 = training_states(model, items2, behaviors2, profiles)
                restore(model, buffers)
                extra = h.shape[1] - items.shape[1]
                assert extra >= 0 and h.shape == h2.shape, (h.shape, items.shape)
                # Extra columns on the left may depend on no event; then every column up to t, padding included
                # (a padding column's state is the empty-history one, or the encoder's padding output).
                keep = torch.cat([torch.ones(items.shape[0], extra, dtype=torch.bool),
                                  (torch.arange(items.shape[1])[None, :] <= t).expand_as(items)], dim=1)
                diff, excess = _excess(h2[keep], h[keep])
                if diff > worst:
                    worst, where = diff, (seed, t)
                failed |= excess > 0
    assert not failed, (f"{name}: changing the {what} of events after t moved states at positions <= t in {mode} "
                        f"mode: max |diff| {worst:.3g} (seed {where[0]}, t {where[1]})")


def _scores(model: nn.Module, items: Tensor, behaviors: Tensor, profiles: Tensor, candidates: Tensor):
    profiles = profiles if model.uses_profiles else None
    return model.score_all(items, behaviors, profiles), model.score_items(items, behaviors, candidates, profiles)


@pytest.mark.parametrize("name", MODELS)
def test_a_users_scores_do_not_depend_on_the_rest_of_the_batch(name):
    model = build(name).eval()
    g = torch.Generator().manual_seed(7)
    items, behaviors, profiles = make_batch(g, 64)
    candidates = torch.randint(1, N_ITEMS + 1, (64, 10), generator=g)
    lengths = (items != 0).sum(1)
    rows = [0, 1] + [int(r) for r in torch.randperm(62, generator=g)[:4] + 2]  # full, empty, four random
    worst, where = 0.0, None
    failed = False
    with torch.no_grad():
        all_batch, items_batch = _scores(model, items, behaviors, profiles, candidates)
        for r in rows:
            width = max(int(lengths[r]), 1)
            for cols in (slice(None), slice(N - width, None)):  # the batch's padding width; its own history only
                alone = _scores(model, items[r:r + 1, cols], behaviors[r:r + 1, cols], profiles[r:r + 1],
                                candidates[r:r + 1])
                for got, expected in zip(alone, (all_batch[r:r + 1], items_batch[r:r + 1])):
                    diff, excess = _excess(got, expected)
                    if diff > worst:
                        worst, where = diff, (r, int(lengths[r]))
                    failed |= excess > 0
    assert not failed, (f"{name}: a user's scores alone differ from the same user's in a batch of 64: "
                        f"max |diff| {worst:.3g} (row {where[0]}, {where[1]} events)")
