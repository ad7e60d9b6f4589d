"""The model contract (``components.models.base.Recommender``) holds for every model the registries build.

Training, evaluation and serving call nothing but the contract, so each model must offer all of it: ``loss`` on a
``Batch`` that falls when optimised, ``score_all`` / ``score_items`` that agree with each other, an integer
``max_len``, a ``config`` that round-trips, and ``profile_table`` exactly when it reads profiles.  Parametrized
from the registries (``tests/models/test_causality.MODELS``), so a new encoder or method is covered unedited.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.models.base import Batch, Recommender
from components.models.history import HistoryModel
from components.models.popularity import PopularityModel
from components.training import TrainConfig, train

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)
from .test_causality import MODELS, N_ITEMS, build, make_batch


def _training_batch(model: Recommender, g: torch.Generator, kind: str) -> Batch:
    items, behaviors, profiles = make_batch(g, 24)
    labels = torch.cat([items[:, 1:], torch.randint(1, N_ITEMS + 1, (items.shape[0], 1), generator=g)], dim=1)
    mask = (items != 0) & (labels != 0)
    negatives = None
    if kind != "ce":
        negatives = (labels + torch.randint(1, N_ITEMS - 1, labels.shape, generator=g) - 1) % N_ITEMS + 1
    return Batch(items, behaviors, labels, mask, negatives, profiles if model.uses_profiles else None)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_offers_the_whole_contract(name):
    model = build(name)
    assert isinstance(model, Recommender)
    assert isinstance(model.max_len, int) and model.max_len > 0
    assert type(model.config).from_dict(model.config.to_dict()) == model.config
    g = torch.Generator().manual_seed(3)
    items, behaviors, profiles = make_batch(g, 8)
    profiles = profiles if model.uses_profiles else None
    candidates = torch.randint(1, N_ITEMS + 1, (8, 5), generator=g)
    model.eval()
    with torch.no_grad():
        full = model.score_all(items, behaviors, profiles)
        some = model.score_items(items, behaviors, candidates, profiles)
        chunked = torch.cat([s for _, s in model.score_item_chunks(items, behaviors, 7, profiles)], dim=1)
    assert full.shape == (8, N_ITEMS + 1) and torch.isneginf(full[:, 0]).all()
    assert torch.allclose(some, full.gather(1, candidates), atol=1e-5)
    assert torch.allclose(chunked, full, atol=1e-5, rtol=0) and torch.isneginf(chunked[:, 0]).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_models_loss_falls_when_optimised(name):
    """Thirty Adam steps on one fixed batch lower the loss by at least 5% (the frozen-base methods, with a
    few thousand tuned parameters, lower it by 6-15%; the others by 25-99%)."""
    model = build(name).train()
    torch.manual_seed(0)
    batch = _training_batch(model, torch.Generator().manual_seed(5), "ce")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    first = None
    for _ in range(30):
        torch.manual_seed(0)  # the same dropout masks each step: the loss is then a fixed function to lower
        loss = model.loss(batch, "ce")
        assert loss.dim() == 0 and torch.isfinite(loss)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.manual_seed(0)
    with torch.no_grad():
        assert float(model.loss(batch, "ce")) < 0.95 * first


def test_baselines_are_recommenders_that_are_fitted_not_trained():
    for model in (PopularityModel(N_ITEMS), HistoryModel(N_ITEMS)):
        assert isinstance(model, Recommender) and model.profile_table(None) is None
        with pytest.raises(NotImplementedError, match="not trained by gradient descent"):
            model.loss(_training_batch(model, torch.Generator().manual_seed(0), "ce"), "ce")


def test_the_trainer_refuses_what_is_not_a_recommender():
    class Bare(torch.nn.Module):
        max_len = 4

    with pytest.raises(TypeError, match="Bare is not a components.models.base.Recommender"):
        train(Bare(), None, TrainConfig(epochs=1, progress=False))  # type: ignore[arg-type]


def test_batch_to_moves_every_tensor_and_keeps_the_absent_ones():
    t = torch.zeros(2, 3, dtype=torch.long)
    moved = Batch(t, t, t, t.bool(), profiles=torch.zeros(2, 1, dtype=torch.long)).to("cpu")
    assert moved.negatives is None and moved.profiles is not None and moved.profiles.shape == (2, 1)
    assert np.array_equal(moved.items.numpy(), t.numpy())


@pytest.mark.parametrize("name", [m for m in MODELS if not m.startswith("tuned-")])
def test_the_refresh_head_names_real_modules_or_is_refused_clearly(name):
    """The daily refresh re-tunes ``head_modules``: the last layer and final norm, which must exist and hold
    parameters; an encoder without such a head (PoMRec) and a non-encoder (the repeat head) are refused."""
    from components.training.refresh import head_modules, head_parameter_names

    model = build(name)
    if name in ("pomrec", "repeat"):
        with pytest.raises(ValueError, match="head to re-tune|no encoder"):
            head_modules(model)
        return
    names = head_modules(model)
    modules = dict(model.named_modules())
    assert len(names) == 2 and all(n in modules for n in names)
    head = head_parameter_names(model)
    assert head and len(head) < len(list(model.parameters()))
