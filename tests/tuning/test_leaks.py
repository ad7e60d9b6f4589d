"""Leak probes for the tuning methods, and what their training batches hold.

- Causality: a method's state after event t (``TunedRecommender.sequence_states``, what ``loss`` scores
  against the next event) may not move when a later event (item or behavior) changes, nor with the other rows of
  the batch.  Before the fix CPL's prompt read the whole window through its GRU: changing later events moved
  earlier states by up to 0.13 (SASRec base) / 0.01 (EBM base).
- CPL's empty history: the zero-shot position of a tuning user and a zero-shot test user must read the same
  encoder input (before: the training pass fed the whole window to the GRU, 2.4 apart).
- PoMRec's running softmax subtracted the row's maximum logit, a statistic of the whole window: with large logits
  rounding and underflow moved earlier states by 5e-3 when later events changed.
- Batches: every tuning user's zero-shot example is trained, a single-event user's too, and no sampled negative
  equals its label (before: single-event users were dropped, the zero-shot negative was never checked).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.models.ebm import EBMConfig
from components.models.pomrec import MultiInterest
from components.models.sasrec import SASRec, SASRecConfig
from components.models.registry import build_model
from components.models.trained import TrainedModel
from components.models.tuned.methods import METHODS, TunedRecommender, method_config
from components.training.batches import training_batches, training_users
from components.tuning.tune import tune_model
from tests.models.synthetic import make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)

N_ITEMS, N_BEHAVIORS = 50, 3


def _tuned(method: str, architecture: str) -> TunedRecommender:
    """A method over a small random base, its own modules moved off their start (zero-init scales included), so
    every path of the method is live."""
    common = dict(n_items=N_ITEMS, n_behaviors=N_BEHAVIORS, max_len=20, hidden=16, seed=1)
    base = (SASRecConfig(**common, n_layers=2, n_heads=2) if architecture == "sasrec"
            else EBMConfig(**common, n_layers=2, chunks=4))
    cfg = method_config(method, dict(base_architecture=architecture, base_config=base.to_dict(), n_items=N_ITEMS,
                                     target_behaviors=[N_BEHAVIORS], profile_fields=["age", "gender"],
                                     profile_vocab=[["1", "2", "3"], ["F", "M"]], n_prompts=2, seed=3),
                        strict=False)
    model = build_model(architecture, cfg.to_dict(), method)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("base."):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _batch(B: int = 32, N: int = 10, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, N + 1, (B,), generator=g)
    valid = torch.arange(N)[None, :] >= (N - lengths)[:, None]
    items = torch.randint(1, N_ITEMS + 1, (B, N), generator=g) * valid
    behaviors = torch.randint(1, N_BEHAVIORS + 1, (B, N), generator=g) * valid
    profiles = torch.stack([torch.randint(0, 4, (B,), generator=g), torch.randint(0, 3, (B,), generator=g)], 1)
    return items, behaviors, profiles, valid


@pytest.mark.parametrize("architecture", ["sasrec", "ebm"])
@pytest.mark.parametrize("method", METHODS)
def test_the_state_after_event_t_reads_no_later_event_and_no_other_row(method, architecture):
    model = _tuned(method, architecture)
    items, behaviors, profiles, valid = _batch()
    N = items.shape[1]
    with torch.no_grad():
        states = model.sequence_states(items, behaviors, profiles)
        assert states.shape == (*items.shape, 16)
        for t in range(N - 1):
            later = valid.clone()
            later[:, : t + 1] = False
            items2, behaviors2 = items.clone(), behaviors.clone()
            items2[later] = items2[later] % N_ITEMS + 1
            behaviors2[later] = behaviors2[later] % N_BEHAVIORS + 1
            moved = model.sequence_states(items2, behaviors2, profiles)
            torch.testing.assert_close(moved[:, : t + 1], states[:, : t + 1], atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"{method}: events after {t} moved earlier states: {m}")
        alone = torch.cat([model.sequence_states(items[i:i + 1], behaviors[i:i + 1], profiles[i:i + 1])
                           for i in range(items.shape[0])])
        torch.testing.assert_close(alone, states, atol=1e-5, rtol=1e-5)
        # Training scores what inference answers: the state after event t is the user state of the prefix to t,
        # and a padding column holds the empty-history state (the zero-shot user's).
        for t in (0, N // 2, N - 1):
            prefix = model.user_state(items[:, : t + 1], behaviors[:, : t + 1], profiles)
            torch.testing.assert_close(states[:, t], prefix, atol=1e-5, rtol=1e-5)
        none = torch.zeros_like(items[:, :1])
        empty = model.user_state(none, none, profiles)[:, None, :].expand_as(states)
        torch.testing.assert_close(states[~valid], empty[~valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["sasrec", "ebm"])
def test_cpl_zero_shot_training_and_test_read_the_same_empty_history(architecture):
    """The zero-shot position of a tuning user (empty-history state in a training pass over its window) equals what
    a zero-shot test user with the same profile gets."""
    model = _tuned("cpl", architecture)
    items, behaviors, profiles, _ = _batch(seed=1)
    with torch.no_grad():
        _, empty_in_training, _, _ = model._states(items, behaviors, profiles)
        none = torch.zeros_like(items[:, :1])
        _, empty_at_test, _, _ = model._states(none, none, profiles)
        prefix, _, _ = model._cpl_prompts(items, behaviors, model._profile_x(profiles))
        prefix_test, _, _ = model._cpl_prompts(none, none, model._profile_x(profiles))
    torch.testing.assert_close(empty_in_training, empty_at_test, atol=1e-5, rtol=1e-5)
    for layer, layer_test in zip(prefix, prefix_test):
        torch.testing.assert_close(layer, layer_test)


def test_cpl_keeps_its_prompts_small_layer_wise_and_personal():
    """Parameter efficiency and the documented structure survive the causal rebuild: one gate per layer over a
    shared factor bank, a small tuned share, prompts that differ between histories and between profiles."""
    model = _tuned("cpl", "sasrec")
    tuned = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert all(n.startswith(("profile.", "behavior_emb.", "gru.", "user_enc.", "factors", "gates.",
                             "position_scale")) for n in model.tuned_parameter_names())
    assert len(model.gates) == model.base.n_stack_layers == 2 and model.factors.shape == (8, 2 * 16)
    assert tuned < 0.5 * total
    items, behaviors, profiles, valid = _batch(seed=2)
    with torch.no_grad():
        prefix, positions, latest = model._cpl_prompts(items, behaviors, model._profile_x(profiles))
    assert len(prefix) == len(positions) == 2 and prefix[0].shape == (items.shape[0], 2, 16)
    assert not torch.allclose(prefix[0], prefix[1])  # progressive: a prompt per layer
    rows = valid[:, -1]
    assert latest[rows].std(dim=0).mean() > 1e-3  # personal: users' latest prompts differ


def test_pomrec_pooling_reads_no_later_logit():
    """PoMRec's running softmax has no whole-window statistic: large logits after t leave the states up to t
    exactly as they were (before: the row maximum moved them by 5e-3)."""
    torch.manual_seed(0)
    head = MultiInterest(hidden=8, n_interests=2, n_prompts=2, lam=3.0).eval()
    with torch.no_grad():
        head.ext_out.weight.mul_(120 / head.ext_out.weight.abs().sum(dim=1, keepdim=True))  # |logit| up to 120
        x = torch.randn(1, 6, 8) * 5
        valid = torch.ones(1, 6, dtype=torch.bool)
        states, _ = head(x, valid)
        assert torch.isfinite(states).all()
        for trial in range(20):
            x2 = x.clone()
            x2[:, 3:] = torch.randn(1, 3, 8) * 5
            moved, _ = head(x2, valid)
            torch.testing.assert_close(moved[:, :3], states[:, :3], atol=1e-6, rtol=1e-6)


# ---- what tuning trains on ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain():
    data = make_chain_dataset(n_warm=40, n_cold_tune=80, n_cold_test=10, n_items=12, warm_len=(5, 8),
                              cold_len=(2, 6), n_negatives=3, seed=3)
    cfg = SASRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=20, hidden=16, n_layers=1, seed=0)
    base = TrainedModel("sasrec", cfg.to_dict(), {k: v.clone() for k, v in SASRec(cfg).state_dict().items()})
    return data, base


def _expected_labels(data, max_len: int) -> tuple[int, int]:
    """(labelled next-event positions, zero-shot examples) one epoch over the cold tuning users should hold."""
    targets = np.asarray(data.target_behaviors)
    nexts = zero = 0
    for u in data.cold_tune_users:
        lo, hi = int(data.offsets[u]), int(data.train_end[u])
        n = hi - lo
        beh = data.behaviors[lo:hi]
        nexts += int(np.isin(beh[max(1, n - max_len):], targets).sum())
        zero += int(1 <= n <= max_len and np.isin(beh[0], targets))
    return nexts, zero


def test_tuning_batches_mark_each_zero_shot_example_single_event_users_included(chain):
    data, _ = chain
    users = data.cold_tune_users
    n = data.train_end[users] - data.offsets[users]
    single = users[(n == 1) & np.isin(data.behaviors[data.offsets[users]], data.target_behaviors)]
    assert len(single) >= 3  # the data has single-event tuning users whose one event is a zero-shot target
    assert set(single) <= set(training_users(data, users, zero_shot=True).tolist())
    assert not set(single) & set(training_users(data, users).tolist())  # pre-training has no use for them
    seen_zero = 0
    for items, behaviors, labels, mask, batch_users in training_batches(data, users, 20, 16, np.random.default_rng(0),
                                                                        with_users=True, zero_shot=True):
        zero = mask & (items == 0)
        assert (zero.sum(dim=1) <= 1).all()
        for r in torch.nonzero(zero.any(dim=1))[:, 0].tolist():
            u = int(batch_users[r])
            col = int(torch.nonzero(zero[r])[0])
            assert labels[r, col] == data.items[data.offsets[u]]  # the user's first event, from an empty input
            assert (items[r, : col + 1] == 0).all()
        seen_zero += int(zero.sum())
    assert seen_zero == _expected_labels(data, 20)[1]


@pytest.mark.parametrize("method", ["finetune", "cpl", "pomrec"])
def test_tuning_trains_every_zero_shot_example_and_no_negative_equals_its_label(method, chain, monkeypatch):
    """Through tune_model and the trainer: per epoch, the loss sees every next-event position plus one zero-shot
    example per user whose first event is a target (single-event users included: before, they were dropped), and
    BPR's sampled negatives never equal their labels (before: the zero-shot negative was drawn unchecked; with 12
    items it hit its label 1 time in 12)."""
    import components.models.losses as losses

    data, base = chain
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    original = losses.next_item_loss

    def recording(hidden, table, labels, mask, kind, negatives=None, **kwargs):
        seen.append((labels[mask].detach().cpu(), None if negatives is None else negatives[mask].detach().cpu()))
        return original(hidden, table, labels, mask, kind, negatives, **kwargs)

    monkeypatch.setattr(losses, "next_item_loss", recording)
    epochs = 3
    tune_model(base, data, method, {}, {"epochs": epochs, "batch_size": 16, "loss": "bpr", "progress": False,
                                        "valid_protocols": ["sampled"], "valid_metric": "sampled3_ndcg_at_10",
                                        "device": "cpu"}, seed=0)
    nexts, zero = _expected_labels(data, int(base.config["max_len"]))
    assert zero > 0
    trained = sum(len(labels) for labels, _ in seen)
    clashes = sum(int((neg == labels).sum()) for labels, neg in seen)
    assert (trained, clashes) == (epochs * (nexts + zero), 0), \
        f"{trained} labelled positions for {epochs} x ({nexts} next events + {zero} zero-shot examples); " \
        f"{clashes} sampled negatives equal their label"
