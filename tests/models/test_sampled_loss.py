"""The ``sampled`` loss: a softmax over each label and negatives shared by the batch, logQ-corrected, with sparse
item-table updates (issue 13, large catalogues).

What must hold: the proposal draws items in proportion to counts ** power; the logQ correction makes the sampled
gradient point where the full softmax's does even under a skewed proposal (without it, it does not); an
accidental hit is left out; a training step touches only the rows the batch used (so its cost cannot grow with the
catalogue); every model either trains with it or refuses it clearly; and SASRec trained with it on real data beats
popularity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.data.prepare import sequences_from_config
from components.models import PopularityModel
from components.models.base import Batch
from components.models.losses import NegativeProposal, SharedNegatives, next_item_loss, sampled_softmax
from components.models.registry import build_model
from components.training import TrainConfig, evaluate, train
from components.training.batches import label_counts
from components.training.trainer import SparseTableAdam, build_optimizer

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)
from .test_causality import MODELS, N_ITEMS, build, make_batch


def _skewed_counts(n: int) -> np.ndarray:
    return np.concatenate([[0], np.round(1e4 / np.arange(1, n + 1))])


def test_proposal_draws_in_proportion_to_counts_to_the_power():
    n = 50
    counts = _skewed_counts(n)
    for power in (0.0, 0.75):
        prop = NegativeProposal(n, 200_000, counts, power)
        drawn = prop.draw(np.random.default_rng(0)).items.numpy()
        assert drawn.min() >= 1 and drawn.max() <= n
        freq = np.bincount(drawn, minlength=n + 1)[1:] / drawn.size
        q = np.ones(n) if power == 0 else counts[1:] ** power
        q = q / q.sum()
        assert np.abs(freq - q).max() < 0.01, (power, np.abs(freq - q).max())
        # log_q is log(S * q): the expected number of draws of each item
        assert np.allclose(np.exp(prop.log_q[1:].numpy()), 200_000 * q, rtol=1e-4)


def test_logq_correction_makes_the_sampled_gradient_follow_the_full_softmax():
    torch.manual_seed(0)
    n, d, m = 500, 16, 64
    table = torch.randn(n + 1, d) * 0.5
    h = torch.randn(m, d, requires_grad=True)
    y = torch.randint(1, n + 1, (m,))
    full_grad, = torch.autograd.grad(F.cross_entropy(h @ table[1:].T, y - 1), h)
    shared = NegativeProposal(n, 4000, _skewed_counts(n), power=1.0).draw(np.random.default_rng(0))

    def cosine(negatives: SharedNegatives) -> float:
        grad, = torch.autograd.grad(sampled_softmax(h, table, y, negatives), h)
        return float(F.cosine_similarity(grad.flatten(), full_grad.flatten(), dim=0))

    corrected = cosine(shared)
    uncorrected = cosine(SharedNegatives(shared.items, torch.zeros_like(shared.log_q)))
    # Seen: 0.994 corrected, 0.960 without the correction (popular items over-weighted as negatives).
    assert corrected > 0.98 and corrected > uncorrected + 0.02, (corrected, uncorrected)


def test_an_accidental_hit_is_left_out_of_that_positions_softmax():
    torch.manual_seed(1)
    table, h = torch.randn(11, 4), torch.randn(2, 4)
    y = torch.tensor([3, 5])
    log_q = torch.zeros(11)
    with_hit = sampled_softmax(h, table, y, SharedNegatives(torch.tensor([3, 7, 9]), log_q))
    # Row 0's label (3) is among the negatives: its softmax is over {3 as label, 7, 9}; row 1's over {5, 3, 7, 9}.
    row0 = F.cross_entropy((h[:1] @ table[[3, 7, 9]].T), torch.tensor([0]))
    row1 = F.cross_entropy((h[1:] @ table[[5, 3, 7, 9]].T), torch.tensor([0]))
    assert torch.allclose(with_hit, (row0 + row1) / 2, atol=1e-6)


def test_a_step_updates_only_the_item_rows_the_batch_used():
    model = build_model("sasrec", {"n_items": 1000, "n_behaviors": 2, "max_len": 8, "hidden": 16, "seed": 0})
    cfg = TrainConfig(loss="sampled", sampled_negatives=32)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, SparseTableAdam) and model.item_emb.sparse
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, 60, (4, 8), generator=g)
    labels = torch.randint(1, 60, (4, 8), generator=g)
    shared = NegativeProposal(1000, 32).draw(np.random.default_rng(0))
    batch = Batch(items, torch.ones_like(items), labels, torch.ones_like(items, dtype=torch.bool), shared)
    before = model.item_emb.weight.detach().clone()
    optimizer.zero_grad()
    model.loss(batch, "sampled").backward()
    assert model.item_emb.weight.grad.is_sparse
    optimizer.step()
    used = torch.zeros(1001, dtype=torch.bool)
    used[torch.cat([items.flatten(), labels.flatten(), shared.items])] = True
    changed = (model.item_emb.weight.detach() != before).any(dim=1)
    assert changed[used].all() and not changed[~used].any()
    # the dense parameters still move
    assert optimizer.state_dict()["dense"]["state"]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_with_the_sampled_loss_or_refuses_it(name):
    model = build(name).train()
    g = torch.Generator().manual_seed(5)
    items, behaviors, profiles = make_batch(g, 16)
    labels = torch.cat([items[:, 1:], torch.randint(1, N_ITEMS + 1, (items.shape[0], 1), generator=g)], dim=1)
    mask = (items != 0) & (labels != 0)
    shared = NegativeProposal(N_ITEMS, 20).draw(np.random.default_rng(0))
    batch = Batch(items, behaviors, labels, mask, shared, profiles if model.uses_profiles else None)
    try:
        loss = model.loss(batch, "sampled")
    except ValueError as e:  # a model with its own objective says which loss it takes
        assert "sampled" in str(e)
        return
    assert loss.dim() == 0 and torch.isfinite(loss)
    optimizer = build_optimizer(model, TrainConfig(loss="sampled", lr=5e-2))
    first = float(loss.detach())
    for _ in range(20):
        torch.manual_seed(0)
        optimizer.zero_grad()
        model.loss(batch, "sampled").backward()
        optimizer.step()
    torch.manual_seed(0)
    with torch.no_grad():
        assert float(model.loss(batch, "sampled")) < first


def test_next_item_loss_refuses_mismatched_negatives():
    hidden, table = torch.randn(1, 3, 4), torch.randn(6, 4)
    labels, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="SharedNegatives"):
        next_item_loss(hidden, table, labels, mask, "sampled", torch.tensor([[4, 4, 4]]))
    with pytest.raises(ValueError, match="one sampled negative per position"):
        next_item_loss(hidden, table, labels, mask, "bce", NegativeProposal(5, 3).draw(np.random.default_rng(0)))


def test_label_counts_cover_training_labels_only(fixture_data):
    data = fixture_data
    counts = label_counts(data, data.warm_users, "all")
    users = data.warm_users
    assert counts.sum() == int(np.maximum(data.train_end[users] - data.offsets[users] - 1, 0).sum())
    assert counts[0] == 0


@pytest.fixture(scope="module")
def fixture_data(shared_datasets):
    raw_path = str(shared_datasets / "taobao_userbehavior_head")
    return sequences_from_config({
        "parameters": {"dataset": "taobao", "raw_path": raw_path, "seed": 42},
        "steps": {"clean": {"parameters": {"rules": dict(
            time_window=["2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00"], min_user_events=5,
            min_item_events=3)}},
            "split": {"parameters": {"settings": dict(target_behaviors=["buy"], cold_threshold=3, n_negatives=99)}}}})


@pytest.mark.slow
def test_sasrec_trained_with_the_sampled_loss_beats_popularity_on_real_data(fixture_data):
    data = fixture_data
    model = build_model("sasrec", {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "max_len": 50,
                                   "hidden": 32, "seed": 0})
    result = train(model, data, TrainConfig(epochs=5, loss="sampled", sampled_negatives=256, negative_power=0.75,
                                            lr=1e-3, train_on="all", seed=0, device="cpu", progress=False))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    got = evaluate(model, data, "test", protocols=("sampled",), ks=(10,))["sampled99_hr_at_10"]
    pop = evaluate(PopularityModel(data.n_items).fit(data), data, "test", protocols=("sampled",),
                   ks=(10,))["sampled99_hr_at_10"]
    assert got > pop + 0.1, f"sampled-loss SASRec sampled99 HR@10 {got:.3f} vs popularity {pop:.3f}"
