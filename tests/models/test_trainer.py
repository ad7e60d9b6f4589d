"""Batches, evaluation and the training loop: learning, resume after interruption, determinism, early stopping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from components.metrics.ranking import metrics_from_ranks
from components.models import PopularityModel, SASRec, SASRecConfig
from components.models.base import Recommender
from components.models.losses import sample_negatives
from components.training import (
    TrainConfig,
    eval_batches,
    evaluate,
    load_checkpoint,
    train,
    training_batches,
)

from .synthetic import check_contract, make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)

MAX_LEN = 20


@pytest.fixture(scope="module")
def data():
    d = make_chain_dataset(n_warm=257, n_cold_tune=30, n_cold_test=30, n_items=452, seed=1)  # 317 users, 452 items
    check_contract(d)
    return d


def sasrec(data, **kw) -> SASRec:
    cfg = dict(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=MAX_LEN, hidden=32, dropout=0.1)
    cfg.update(kw)
    return SASRec(SASRecConfig(**cfg))


def quick_cfg(**kw) -> TrainConfig:
    cfg = dict(epochs=4, batch_size=64, lr=5e-3, loss="ce", progress=False, device="cpu")
    cfg.update(kw)
    return TrainConfig(**cfg)


class RandomScorer(Recommender):
    """Seeded random scores: the chance level every model must beat."""

    def __init__(self, n_items: int, seed: int):
        super().__init__()
        self.n_items, self.g = n_items, torch.Generator().manual_seed(seed)

    @property
    def max_len(self) -> int:
        return 1

    def score_all(self, items, behaviors, profiles=None):
        return torch.rand(items.shape[0], self.n_items + 1, generator=self.g)

    def score_items(self, items, behaviors, candidates, profiles=None):
        return torch.rand(candidates.shape, generator=self.g)


# ---- batches -----------------------------------------------------------------------------------------------------
def test_training_batches_match_a_per_user_reference(data):
    seen = 0
    for items, behaviors, labels, mask in training_batches(data, data.warm_users, MAX_LEN, 37,
                                                           np.random.default_rng(0), "target"):
        assert items.shape == behaviors.shape == labels.shape == mask.shape and items.shape[1] == MAX_LEN
        assert items.dtype == torch.long and mask.dtype == torch.bool
        for row in range(items.shape[0]):
            real = items[row][items[row] != 0].numpy()
            # Identify the user by its window, then rebuild the window with plain slicing.
            u = next(u for u in data.warm_users
                     if np.array_equal(data.items[max(data.offsets[u], data.train_end[u] - MAX_LEN - 1):
                                                  data.train_end[u]][:-1], real))
            ev = slice(max(data.offsets[u], data.train_end[u] - MAX_LEN - 1), data.train_end[u])
            win_items, win_beh = data.items[ev], data.behaviors[ev]
            n = len(win_items) - 1
            assert np.all(items[row, :MAX_LEN - n].numpy() == 0)  # left padding
            assert np.array_equal(behaviors[row, MAX_LEN - n:].numpy(), win_beh[:-1])
            assert np.array_equal(labels[row, MAX_LEN - n:].numpy(), win_items[1:])
            want_mask = np.zeros(MAX_LEN, bool)
            want_mask[MAX_LEN - n:] = np.isin(win_beh[1:], data.target_behaviors)
            assert np.array_equal(mask[row].numpy(), want_mask)
            seen += 1
    assert seen == len(data.warm_users)


def test_training_batches_all_behaviors_and_shuffle(data):
    first = next(training_batches(data, data.warm_users, MAX_LEN, 300, np.random.default_rng(0), "all"))
    # train_on="all": every real (input, next) pair is labelled.
    assert torch.equal(first[3], (first[0] != 0) & (first[2] != 0))
    again = next(training_batches(data, data.warm_users, MAX_LEN, 300, np.random.default_rng(0), "all"))
    other = next(training_batches(data, data.warm_users, MAX_LEN, 300, np.random.default_rng(1), "all"))
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])
    with pytest.raises(ValueError, match="train_on"):
        next(training_batches(data, data.warm_users, MAX_LEN, 8, np.random.default_rng(0), "buy"))


def test_eval_batches_histories_zero_shot_and_exclude_mask(data):
    ts = data.targets["cold_test"]
    rows = []
    for b in eval_batches(data, "cold_test", MAX_LEN, 16):
        excl = b.exclude_mask(data.n_items)
        for i, r in enumerate(b.index):
            u, pos = ts.users[r], ts.positions[r]
            hist = np.zeros(0, np.int32) if ts.zero_shot[r] else data.items[data.offsets[u]:pos]
            window = hist[-MAX_LEN:]
            assert np.array_equal(b.items[i, MAX_LEN - len(window):].numpy(), window)
            assert int((b.items[i] != 0).sum()) == len(window)
            want = np.zeros(data.n_items + 1, bool)
            want[hist] = True
            assert np.array_equal(excl[i].numpy(), want)
            assert b.targets[i] == ts.items[r] and np.array_equal(b.negatives[i].numpy(), ts.negatives[r])
            rows.append(r)
    assert rows == list(range(len(ts)))
    assert ts.zero_shot.any() and (~ts.zero_shot).any()


def test_sample_negatives_never_hit_the_label():
    labels = np.random.default_rng(0).integers(1, 4, size=(50, 9))
    neg = sample_negatives(labels, 3, np.random.default_rng(1))
    assert neg.min() >= 1 and neg.max() <= 3 and not np.any(neg == labels)


# ---- evaluation --------------------------------------------------------------------------------------------------
def test_evaluate_popularity_matches_a_per_instance_reference(data):
    pop = PopularityModel(data.n_items).fit(data)
    got = evaluate(pop, data, "test", ks=(10,))
    ts = data.targets["test"]
    s = pop.scores.numpy()
    sampled, full, cands = [], [], []
    for r in range(len(ts)):
        u, pos, t = ts.users[r], ts.positions[r], ts.items[r]
        sampled.append(int((s[ts.negatives[r]] >= s[t]).sum()))
        hist = set(data.items[data.offsets[u]:pos].tolist()) - {int(t)}
        others = [i for i in range(1, data.n_items + 1) if i != t and i not in hist]
        full.append(int((s[others] >= s[t]).sum()))
        cands.append(len(others) + 1)
    ref_s = metrics_from_ranks(torch.tensor(sampled), ts.negatives.shape[1] + 1, ks=(10,))
    ref_f = metrics_from_ranks(torch.tensor(full), torch.tensor(cands), ks=(10,))
    assert got["n"] == len(ts)
    for k in ("hr_at_10", "ndcg_at_10", "mrr", "auc"):
        assert got[f"sampled99_{k}"] == pytest.approx(ref_s[k])
        assert got[f"full_{k}"] == pytest.approx(ref_f[k])
    no_excl = evaluate(pop, data, "test", ks=(10,), protocols=("full",), exclude_history=False)
    assert no_excl["full_auc"] != pytest.approx(got["full_auc"])
    assert set(no_excl) == {"n", "full_hr_at_10", "full_ndcg_at_10", "full_mrr", "full_auc"}


def test_evaluate_subset_and_mode_restored(data):
    model = sasrec(data).train()
    zs = data.targets["cold_test"].zero_shot
    out = evaluate(model, data, "cold_test", subset=zs, protocols=("sampled",))
    assert out["n"] == int(zs.sum())
    assert model.training  # evaluate gives the model back in the mode it came in
    with pytest.raises(KeyError, match="not in dataset"):
        evaluate(model, data, "nope")


# ---- training ----------------------------------------------------------------------------------------------------
def test_sasrec_learns_and_beats_popularity_and_random(data):
    model = sasrec(data)
    result = train(model, data, quick_cfg(epochs=6))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0]
    got = evaluate(model, data, "test", protocols=("sampled",), ks=(10,))["sampled99_hr_at_10"]
    pop = evaluate(PopularityModel(data.n_items).fit(data), data, "test", protocols=("sampled",), ks=(10,))
    rnd = evaluate(RandomScorer(data.n_items, 0), data, "test", protocols=("sampled",), ks=(10,))
    assert got > pop["sampled99_hr_at_10"] + 0.3
    assert got > rnd["sampled99_hr_at_10"] + 0.3
    # The best epoch's weights are the ones left in the model.
    assert result.best_metric == max(h["valid_sampled99_ndcg_at_10"] for h in result.history)
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.best_state[k])


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_sampled_negative_losses_fall(data, loss):
    result = train(sasrec(data), data, quick_cfg(epochs=3, loss=loss, valid_set=None))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_epoch == 3 and result.best_metric is None


def test_resume_equals_uninterrupted_run(data, tmp_path: Path):
    cfg4 = quick_cfg(epochs=4, loss="bce")  # bce: sampled negatives exercise the numpy RNG state too
    full = train(sasrec(data), data, cfg4, checkpoint_dir=tmp_path / "a")

    first = train(sasrec(data), data, quick_cfg(epochs=2, loss="bce"), checkpoint_dir=tmp_path / "b")
    assert not first.resumed and len(first.history) == 2
    model = sasrec(data)
    resumed = train(model, data, cfg4, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed and resumed.start_epoch == 3
    assert len(resumed.history) == 4
    for h_full, h_res in zip(full.history, resumed.history):
        assert h_res["epoch"] == h_full["epoch"]
        assert h_res["loss"] == pytest.approx(h_full["loss"], abs=1e-6)
        assert h_res["valid_sampled99_ndcg_at_10"] == pytest.approx(h_full["valid_sampled99_ndcg_at_10"], abs=1e-6)
    assert resumed.best_epoch == full.best_epoch
    for k, v in full.best_state.items():
        torch.testing.assert_close(resumed.best_state[k], v, rtol=0, atol=1e-6)
    ckpt_b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    ckpt_a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert ckpt_b["epoch"] == 4
    for k, v in ckpt_a["model"].items():  # last-epoch weights, not only the best ones
        torch.testing.assert_close(ckpt_b["model"][k], v, rtol=0, atol=1e-6)
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_checkpoint_with_another_config_is_not_resumed(data, tmp_path: Path):
    train(sasrec(data), data, quick_cfg(epochs=1), checkpoint_dir=tmp_path)
    again = train(sasrec(data), data, quick_cfg(epochs=1, lr=1e-3), checkpoint_dir=tmp_path)
    assert not again.resumed and again.start_epoch == 1
    other_model = train(sasrec(data, hidden=16), data, quick_cfg(epochs=1, lr=1e-3), checkpoint_dir=tmp_path)
    assert not other_model.resumed
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["model_config"]["hidden"] == 16 and ckpt["train_config"]["lr"] == 1e-3


def test_same_seed_same_metrics_other_seed_differs(data):
    runs = []
    for seed in (7, 7, 8):
        model = sasrec(data)
        result = train(model, data, quick_cfg(epochs=2, seed=seed))
        runs.append((result.history, evaluate(model, data, "test")))
    (h1, m1), (h2, m2), (h3, _) = runs
    assert m1 == m2
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    assert [h["loss"] for h in h1] != [h["loss"] for h in h3]


def test_early_stopping_and_epoch_callback(data):
    seen: list[tuple[int, dict]] = []
    # lr = 0: the validation metric cannot improve after the first epoch, so patience 1 stops at epoch 2.
    result = train(sasrec(data), data, quick_cfg(epochs=5, lr=0.0, patience=1),
                   on_epoch_end=lambda e, rec: seen.append((e, rec)))
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1
    assert [e for e, _ in seen] == [1, 2]
    assert {"loss", "seconds", "valid_sampled99_ndcg_at_10", "valid_n"} <= set(seen[0][1])
    assert math.isfinite(seen[1][1]["loss"])


def test_bad_configs_are_refused(data):
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="valid_metric"):
        TrainConfig(valid_metric="ndcg_at_10")
    with pytest.raises(KeyError, match="valid_metric"):
        train(sasrec(data), data, quick_cfg(epochs=1, valid_metric="sampled50_hr_at_10"))
    with pytest.raises(KeyError, match="valid_set"):
        train(sasrec(data), data, quick_cfg(epochs=1, valid_set="dev"))


def test_chunked_softmax_loss_equals_the_plain_one_in_value_and_gradient():
    """Bounding the logits' memory (large catalogues) must not change what is optimised."""
    from components.models.losses import next_item_loss

    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 9, 8, generator=gen)
    table = torch.randn(51, 8, generator=gen)
    labels = torch.randint(1, 51, (4, 9), generator=gen)
    mask = torch.rand(4, 9, generator=gen) > 0.3
    grads, values = [], []
    for max_logits in (10**9, 50 * 5, 50):  # whole, chunks of 5 positions, one position at a time
        h, t = hidden.clone().requires_grad_(), table.clone().requires_grad_()
        loss = next_item_loss(h, t, labels, mask, "ce", max_logits=max_logits)
        loss.backward()
        values.append(loss.detach())
        grads.append((h.grad, t.grad))
    for value, (gh, gt) in zip(values[1:], grads[1:]):
        torch.testing.assert_close(value, values[0])
        torch.testing.assert_close(gh, grads[0][0])
        torch.testing.assert_close(gt, grads[0][1])
    assert values[0] > 0 and grads[0][1].abs().sum() > 0


def test_softmax_loss_equals_cross_entropy_in_value_and_gradient():
    """The full-softmax loss's own autograd function (CPU training: the gradients made with the logits, in cached
    chunks) computes what F.cross_entropy does, value and both gradients, whatever the chunk size."""
    import torch.nn.functional as F

    from components.models.losses import next_item_loss

    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(5, 11, 16, generator=gen) * 3
    table = torch.randn(301, 16, generator=gen)
    labels = torch.randint(1, 301, (5, 11), generator=gen)
    mask = torch.rand(5, 11, generator=gen) > 0.3
    h, t = hidden.clone().requires_grad_(), table.clone().requires_grad_()
    loss = next_item_loss(h, t, labels, mask, "ce")
    (loss * 2.5).backward(retain_graph=True)
    rh, rt = hidden.clone().requires_grad_(), table.clone().requires_grad_()
    ref = F.cross_entropy(rh[mask] @ rt[1:].T, labels[mask] - 1)
    (ref * 2.5).backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad, rh.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(t.grad, rt.grad, atol=1e-6, rtol=1e-5)
    loss.backward()  # retained: a second pass adds the same gradients again
    torch.testing.assert_close(h.grad, rh.grad * (3.5 / 2.5), atol=1e-6, rtol=1e-5)
    for rows in (1, 7, 10**6):  # one position at a time, uneven chunks, all at once
        ch, ct = hidden.clone().requires_grad_(), table.clone().requires_grad_()
        got = next_item_loss(ch, ct, labels, mask, "ce", max_logits=rows * 300)  # rows * items per chunk
        got.backward()
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ch.grad, rh.grad / 2.5, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ct.grad, rt.grad / 2.5, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # evaluation: the plain path
        torch.testing.assert_close(next_item_loss(hidden, table, labels, mask, "ce"), ref.detach(), atol=1e-5,
                                   rtol=1e-5)


def test_softmax_loss_is_exact_where_the_label_s_probability_underflows():
    """Logit gaps of hundreds (a confident, wrong model): p[label] is 0 in fp32, the loss must still be the exact,
    finite cross-entropy (the fused loss reads it off the largest probability, which cannot underflow)."""
    import torch.nn.functional as F

    from components.models.losses import next_item_loss

    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 6, 8, generator=gen) * 40
    table = torch.randn(41, 8, generator=gen) * 3
    labels = torch.randint(1, 41, (2, 6), generator=gen)
    mask = torch.ones(2, 6, dtype=torch.bool)
    h = hidden.clone().requires_grad_()
    loss = next_item_loss(h, table, labels, mask, "ce")
    ref = F.cross_entropy((hidden[mask] @ table[1:].T).double(), labels[mask] - 1)
    assert float(ref) > 100  # the regime meant: exp(-loss) is far below fp32's smallest value
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-3)
    loss.backward()
    assert torch.isfinite(h.grad).all()


def test_optimizer_foreach_equals_the_per_parameter_loop(data):
    """build_optimizer's multi-tensor AdamW updates every weight exactly as the per-parameter loop does."""
    from components.training.trainer import build_optimizer

    cfg = quick_cfg(weight_decay=0.1)
    models = [sasrec(data), sasrec(data)]
    fast = build_optimizer(models[0], cfg)
    assert all(g["foreach"] for g in fast.param_groups)
    loop = build_optimizer(models[1], cfg)
    for g in loop.param_groups:
        g["foreach"] = False
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        for pa, pb in zip(models[0].parameters(), models[1].parameters()):
            pa.grad = torch.randn(pa.shape, generator=gen)
            pb.grad = pa.grad.clone()
        fast.step()
        loop.step()
    for pa, pb in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(pa, pb)


def test_checkpoint_key_follows_code_not_imports():
    """The key of a pre-training checkpoint covers the training and model source on disk, the same in any process."""
    from components.training.pretrain import checkpoint_key, code_key

    before = code_key("sasrec")
    import components.models.end4rec  # noqa: F401  (importing more modules must not change it)

    assert code_key("sasrec") == before == code_key("end4rec") and len(before) == 16
    key = checkpoint_key("data", "sasrec", {"hidden": 8}, {"epochs": 1})
    assert key == checkpoint_key("data", "sasrec", {"hidden": 8}, {"epochs": 1})
    assert key != checkpoint_key("data", "ebm", {"hidden": 8}, {"epochs": 1})
    with pytest.raises(ValueError, match="unknown model"):
        code_key("transformer-xl")


def test_flop_counter_sees_every_matmul_of_the_fused_softmax_loss():
    """bench.train and bench.port_compare report FLOP rates from FlopCounterMode: the fused loss's three matmuls
    (logits, and both gradients, made in its forward pass) must all be counted, 3 x 2 M C d."""
    from torch.utils.flop_counter import FlopCounterMode

    from components.models.losses import next_item_loss

    gen = torch.Generator().manual_seed(6)
    h = torch.randn(3, 10, 8, generator=gen, requires_grad=True)
    table = torch.randn(201, 8, generator=gen, requires_grad=True)
    labels = torch.randint(1, 201, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter:
        next_item_loss(h, table, labels, mask, "ce", max_logits=7 * 200).backward()
    assert counter.get_total_flops() == 3 * 2 * 30 * 200 * 8
