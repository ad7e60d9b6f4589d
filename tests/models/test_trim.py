"""Length-bucketed training batches (``training_batches(length_buckets=True)``, ``TrainConfig.length_buckets``).

(a) **Trimming changes no output.**  Every registered encoder (``components.models.registry.ARCHITECTURES``), in
    eval mode, gives the same per-position training states (what its loss scores), the same ``bce`` and ``ce``
    losses and the same ``score_all`` for a left-padded batch whether or not the leading columns that are padding
    in every row are there: positions count from each row's first event.
(b) **The bucketed batches** hold every training user once per epoch, in batches of the sizes plain batching
    gives, each row equal to its plain row with leading padding cut; they are reproducible from the seed, differ
    by seed, and carry less padding than plain batches (on ML-1M: bench/train.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.models.base import Batch
from components.models.registry import ARCHITECTURES
from components.training import TrainConfig, train, training_batches, training_users
from components.training.batches import BUCKET_POOL

from .synthetic import make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)
from .test_causality import N, N_BEHAVIORS, N_ITEMS, build, training_states

ATOL = RTOL = 1e-5  # float32 rounding of differently shaped matmuls, as in test_causality


def _short_batch(seed: int, b: int = 12, cut: int = 5):
    """Left-padded items, behaviors [b, N] whose first ``cut`` columns are padding in every row (lengths 0..N-cut,
    one row N - cut long, one empty), labels = the next items, and sampled-looking negatives."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, N - cut + 1, (b,), generator=g)
    lengths[0], lengths[1] = N - cut, 0
    items = torch.randint(1, N_ITEMS + 1, (b, N), generator=g)
    behaviors = torch.randint(1, N_BEHAVIORS + 1, (b, N), generator=g)
    pad = torch.arange(N)[None, :] < (N - lengths)[:, None]
    items[pad], behaviors[pad] = 0, 0
    labels = torch.cat([items[:, 1:], torch.randint(1, N_ITEMS + 1, (b, 1), generator=g)], dim=1)
    labels[pad] = 0
    mask = (items != 0) & (labels != 0)
    negatives = torch.randint(1, N_ITEMS + 1, (b, N), generator=g)
    profiles = torch.stack([torch.randint(0, 3, (b,), generator=g), torch.randint(0, 2, (b,), generator=g)], 1)
    return items, behaviors, labels, mask, negatives, profiles


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("seed", [0, 1])
def test_trimmed_padding_changes_no_output(name, seed):
    model = build(name).eval()
    cut = 5
    items, behaviors, labels, mask, negatives, profiles = _short_batch(seed, cut=cut)
    assert not (items[:, :cut] != 0).any() and not mask[:, :cut].any()
    trimmed = [t[:, cut:] for t in (items, behaviors, labels, mask, negatives)]
    prof = profiles if model.uses_profiles else None
    with torch.no_grad():
        full_states = training_states(model, items, behaviors, profiles)
        cut_states = training_states(model, trimmed[0], trimmed[1], profiles)
        width = N - cut
        torch.testing.assert_close(cut_states[:, -width:], full_states[:, -width:], atol=ATOL, rtol=RTOL)
        for kind in ("bce", "ce"):
            try:
                full = model.loss(Batch(items, behaviors, labels, mask, negatives, prof), kind)
            except ValueError:  # a loss this model does not train with (the repeat head: ce only)
                continue
            part = model.loss(Batch(*trimmed, prof), kind)
            torch.testing.assert_close(part, full, atol=ATOL, rtol=RTOL)
        scores = model.score_all(items, behaviors, prof)
        torch.testing.assert_close(model.score_all(trimmed[0], trimmed[1], prof), scores, atol=ATOL, rtol=RTOL)


MAX_LEN = 20


@pytest.fixture(scope="module")
def data():
    return make_chain_dataset(n_warm=300, n_cold_tune=10, n_cold_test=10, n_items=200, seed=3)


def _epoch(data, seed: int, buckets: bool, batch_size: int = 16, zero_shot: bool = False):
    return list(training_batches(data, data.warm_users, MAX_LEN, batch_size, np.random.default_rng(seed), "target",
                                 with_users=True, zero_shot=zero_shot, length_buckets=buckets))


@pytest.mark.parametrize("zero_shot", [False, True])
def test_bucketed_batches_are_plain_rows_with_padding_cut(data, zero_shot):
    plain = _epoch(data, 0, False, zero_shot=zero_shot)
    bucketed = _epoch(data, 0, True, zero_shot=zero_shot)
    # The same users, each once, in batches of the same sizes.
    users = training_users(data, data.warm_users, zero_shot)
    assert sorted(np.concatenate([b[-1].numpy() for b in bucketed]).tolist()) == sorted(users.tolist())
    assert sorted(len(b[-1]) for b in bucketed) == sorted(len(b[-1]) for b in plain)
    # Each row is the user's plain row (one batch of everyone, in any order) with leading padding cut.
    (items, behaviors, labels, mask, u), = _epoch(data, 0, False, batch_size=10_000, zero_shot=zero_shot)
    row = {int(x): i for i, x in enumerate(u.numpy())}
    widths = []
    for b_items, b_beh, b_labels, b_mask, b_users in bucketed:
        w = b_items.shape[1]
        widths.append(w)
        assert ((b_items[:, 0] != 0) | b_mask[:, 0]).any()  # nothing more could be cut
        r = torch.tensor([row[int(x)] for x in b_users])
        for full, part in ((items, b_items), (behaviors, b_beh), (labels, b_labels), (mask, b_mask)):
            assert torch.equal(full[r, -w:], part)
        assert not (items[r, :-w] != 0).any() and not mask[r, :-w].any()
    plain_cells = sum(b[0].numel() for b in plain)
    assert sum(len(b[-1]) * w for b, w in zip(bucketed, widths)) < plain_cells


def test_bucketed_batches_reproducible_from_seed(data):
    a, b, c = _epoch(data, 5, True), _epoch(data, 5, True), _epoch(data, 6, True)
    assert all(torch.equal(x[-1], y[-1]) and torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(torch.equal(x[-1], y[-1]) for x, y in zip(a, c))
    assert BUCKET_POOL >= 1


def test_train_with_length_buckets_learns_and_is_deterministic(data):
    from components.models import SASRec, SASRecConfig

    def run():
        model = SASRec(SASRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=MAX_LEN, hidden=32,
                                    dropout=0.1))
        cfg = TrainConfig(epochs=3, batch_size=32, lr=5e-3, loss="bce", progress=False, device="cpu",
                          length_buckets=True, valid_protocols=("sampled",))
        return train(model, data, cfg)

    first, second = run(), run()
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    assert first.history[-1]["loss"] < first.history[0]["loss"]


def test_bucketed_steps_weigh_every_position_as_plain_batches(data):
    """With length buckets a step's loss (a mean over its positions) is scaled by its labelled positions over the
    average batch's, so the scales average to one over an epoch and every position weighs what it does in plain
    batches; without buckets nothing is scaled."""
    from components.models import SASRec, SASRecConfig
    from components.training import trainer as T

    model = SASRec(SASRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=MAX_LEN, hidden=16))
    run = T._start(model, data, TrainConfig(batch_size=16, progress=False, device="cpu", length_buckets=True),
                   None, None, False)
    counts = [int(b.mask.sum()) for b in T._batches(run, run.users, None, 10**9)]
    assert len(counts) == -(-len(run.users) // 16)
    assert sum(c / run.labels_per_batch for c in counts) == pytest.approx(len(counts))
    assert max(counts) > 1.2 * min(counts)  # the buckets do differ in labelled positions
    plain = T._start(model, data, TrainConfig(batch_size=16, progress=False, device="cpu"), None, None, False)
    assert plain.labels_per_batch is None
