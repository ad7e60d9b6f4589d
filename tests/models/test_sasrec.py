"""SASRec: shapes, causality, padding invariance, zero-shot rows, config round trip, popularity baseline."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from components.models import PopularityModel, SASRec, SASRecConfig

from .synthetic import make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)

# Sizes that all differ, so a swapped axis cannot pass by accident.
B, N, N_ITEMS, HIDDEN = 13, 7, 99, 32


def make_model(**kw) -> SASRec:
    cfg = dict(n_items=N_ITEMS, n_behaviors=3, max_len=16, hidden=HIDDEN, n_layers=2, n_heads=2, dropout=0.2)
    cfg.update(kw)
    return SASRec(SASRecConfig(**cfg)).eval()


def random_batch(seed: int = 0, n: int = N, pad_max: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (B, n), generator=g)
    behaviors = torch.randint(1, 4, (B, n), generator=g)
    pads = torch.randint(0, pad_max + 1, (B,), generator=g)
    left = torch.arange(n)[None, :] < pads[:, None]  # left padding
    return items.masked_fill(left, 0), behaviors.masked_fill(left, 0)


def test_shapes_and_padding_column():
    model = make_model()
    items, behaviors = random_batch()
    h = model.encode(items, behaviors)
    assert h.shape == (B, N, HIDDEN)
    assert model.user_state(items, behaviors).shape == (B, HIDDEN)
    scores = model.score_all(items, behaviors)
    assert scores.shape == (B, N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()
    cands = torch.randint(1, N_ITEMS + 1, (B, 5), generator=torch.Generator().manual_seed(1))
    picked = model.score_items(items, behaviors, cands)
    assert picked.shape == (B, 5)
    torch.testing.assert_close(picked, scores.gather(1, cands), rtol=1e-5, atol=1e-5)


def test_causal_future_items_do_not_change_earlier_outputs():
    model = make_model()
    items, behaviors = random_batch(pad_max=0)
    before = model.encode(items, behaviors)
    items2 = items.clone()
    items2[:, 5] = (items2[:, 5] % N_ITEMS) + 1  # a different real item at position 5
    after = model.encode(items2, behaviors)
    torch.testing.assert_close(after[:, :5], before[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 5:], before[:, 5:])


def test_more_left_padding_leaves_user_state_unchanged():
    model = make_model()
    items, behaviors = random_batch(pad_max=3)
    extra = 6
    items_p = torch.cat([torch.zeros(B, extra, dtype=torch.long), items], dim=1)
    behaviors_p = torch.cat([torch.zeros(B, extra, dtype=torch.long), behaviors], dim=1)
    torch.testing.assert_close(model.user_state(items_p, behaviors_p), model.user_state(items, behaviors),
                               rtol=1e-5, atol=1e-5)
    # Every real position, not only the last, is unaffected.
    real = items != 0
    torch.testing.assert_close(model.encode(items_p, behaviors_p)[:, extra:][real],
                               model.encode(items, behaviors)[real], rtol=1e-5, atol=1e-5)


def test_zero_shot_row_is_finite_in_eval_and_training():
    model = make_model()
    items, behaviors = random_batch()
    items[0] = 0  # a user with no history at all
    behaviors[0] = 0
    state = model.user_state(items, behaviors)
    assert torch.isfinite(state).all()
    assert torch.isfinite(model.score_all(items, behaviors)[:, 1:]).all()
    model.train()
    out = model.encode(items, behaviors)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_behavior_channel_can_be_switched_off():
    items, behaviors = random_batch(pad_max=0)
    other = behaviors % 3 + 1  # every behavior changed, still in 1..3
    with_b = make_model(use_behavior=True)
    assert not torch.allclose(with_b.user_state(items, behaviors), with_b.user_state(items, other))
    without = make_model(use_behavior=False)
    torch.testing.assert_close(without.user_state(items, behaviors), without.user_state(items, other))


def test_post_norm_variant_runs_and_too_long_input_is_refused():
    model = make_model(norm_first=False)
    items, behaviors = random_batch()
    assert torch.isfinite(model.user_state(items, behaviors)).all()
    with pytest.raises(ValueError, match="max_len"):
        model.encode(torch.ones(2, 17, dtype=torch.long), torch.ones(2, 17, dtype=torch.long))


def test_config_round_trip_and_seeded_init():
    cfg = SASRecConfig(n_items=N_ITEMS, n_behaviors=2, hidden=16, seed=5)
    again = SASRecConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    a, b = SASRec(cfg), SASRec(again)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    c = SASRec(SASRecConfig(n_items=N_ITEMS, n_behaviors=2, hidden=16, seed=6))
    assert not torch.equal(a.item_emb.weight, c.item_emb.weight)
    assert torch.count_nonzero(a.item_emb.weight[0]) == 0  # padding row
    with pytest.raises(ValueError, match="unknown setting"):
        SASRecConfig.from_dict({**cfg.to_dict(), "hidden_size": 3})
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(n_items=5, n_behaviors=1, hidden=10, n_heads=3)


def test_weights_survive_a_tensors_only_save_and_load():
    model = make_model()
    buf = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "state": model.state_dict()}, buf)
    buf.seek(0)
    blob = torch.load(buf, weights_only=True)
    # A different init seed: equal outputs can then only come from the loaded weights.
    clone = SASRec(SASRecConfig.from_dict({**blob["config"], "seed": 99}))
    clone.load_state_dict(blob["state"])
    clone.eval()
    items, behaviors = random_batch()
    torch.testing.assert_close(clone.score_all(items, behaviors), model.score_all(items, behaviors))


def test_popularity_counts_only_warm_training_prefixes():
    data = make_chain_dataset(n_warm=40, n_cold_tune=5, n_cold_test=5, n_items=157, seed=4)  # 50 users, 157 items
    pop = PopularityModel(data.n_items).fit(data)
    # Reference: a plain loop over warm users and their training events.
    target_counts = np.zeros(data.n_items + 1)
    all_counts = np.zeros(data.n_items + 1)
    for u in data.warm_users:
        for e in range(data.offsets[u], data.train_end[u]):
            all_counts[data.items[e]] += 1
            target_counts[data.items[e]] += data.behaviors[e] in data.target_behaviors
    order = np.lexsort((-all_counts[1:], -target_counts[1:]))  # by target count, then all-behavior count
    scores = pop.scores[1:].numpy()
    assert np.all(np.diff(scores[order]) <= 0)
    assert np.isneginf(pop.scores[0].item())
    # Valid/test targets (at or after train_end) must not leak in: rewriting them changes nothing.
    leaked = PopularityModel(data.n_items)
    data.items[data.targets["test"].positions] = 1
    data.items[data.targets["valid"].positions] = 1
    torch.testing.assert_close(leaked.fit(data).scores, pop.scores)
    items = torch.zeros(3, 4, dtype=torch.long)
    cands = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    torch.testing.assert_close(pop.score_items(items, items, cands), pop.scores[cands])
    assert pop.score_all(items, items).shape == (3, data.n_items + 1)


def test_a_slot_outside_tokens_is_no_key_but_still_a_query():
    """run_stack's ``tokens``: later queries never attend to a valid slot outside ``tokens``; it gets a state."""
    model = make_model()
    items, behaviors = random_batch(seed=4)
    x, valid, beh, _ = model.stack_inputs(items, behaviors)
    tokens = valid.clone()
    tokens[:, 4] = False
    other = x.clone()
    other[:, 4] = torch.randn(B, HIDDEN)
    with torch.no_grad():
        h = model.run_stack(x, valid, beh, tokens=tokens)
        h2 = model.run_stack(other, valid, beh, tokens=tokens)
    rest = torch.ones(N, dtype=torch.bool)
    rest[4] = False
    torch.testing.assert_close(h2[:, rest], h[:, rest], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(h[:, 4]).all()
    torch.testing.assert_close(model.run_stack(x, valid, beh, tokens=valid), model.run_stack(x, valid, beh))
