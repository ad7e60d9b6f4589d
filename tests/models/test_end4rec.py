"""END4Rec's mechanics: hard Gumbel masks, the coding rate, guided stages that really freeze, and training end to end."""

from __future__ import annotations

import logging

import pytest
import torch

from components.models.end4rec import END4Rec, END4RecConfig, coding_rate, gumbel_keep_mask
from components.training import TrainConfig, evaluate, train
from components.training.pretrain import train_guided

from .synthetic import make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def data():
    return make_chain_dataset(n_warm=200, n_items=200, seed=1)


def _model(data, **kw) -> END4Rec:
    return END4Rec(END4RecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=20, hidden=16,
                                 chunks=4, dropout=0.1, seed=0, **kw))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 64, "lr": 3e-3, "loss": "ce", "train_on": "all", "seed": 0,
                          "device": "cpu", "progress": False, "valid_protocols": ("sampled",), **kw})


def test_gumbel_masks_are_exactly_binary_forward_and_carry_gradient_backward():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(0)).requires_grad_()
    torch.manual_seed(0)
    mask = gumbel_keep_mask(logits, tau=0.5, training=True)
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and 0 < mask.mean() < 1
    (mask * torch.arange(30.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # At evaluation the decision is deterministic: keep iff logit > 0.
    assert torch.equal(gumbel_keep_mask(logits.detach(), 0.5, training=False), (logits.detach() > 0).float())


@pytest.mark.parametrize("n, d", [(5, 12), (40, 12)])
def test_coding_rate_on_either_gram_side_matches_the_definition(n, d):
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    eps = 0.5
    direct = 0.5 * torch.logdet(torch.eye(d, dtype=z.dtype) + d / (n * eps ** 2) * z.T @ z)
    torch.testing.assert_close(coding_rate(z, eps), direct)
    # Spread-out states code at a higher rate than collapsed ones.
    collapsed = z[:1].repeat(n, 1)
    assert coding_rate(z, eps) > coding_rate(collapsed, eps)


def test_each_guided_stage_trains_only_its_modules(data):
    model = _model(data)
    names = {id(p): n for n, p in model.named_parameters()}
    for stage in (1, 2, 3, 4):
        model.set_stage(stage)
        allowed = {id(p) for m in model.stage_modules(stage) for p in m.parameters()}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        train(model, data, _cfg(valid_set=None))
        changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
        outside = sorted(changed - {names[i] for i in allowed})
        assert not outside, f"stage {stage} changed frozen parameters {outside}"
        assert changed, f"stage {stage} trained nothing"
        if stage == 2:
            assert all(n.startswith("hne.") for n in changed)
        if stage == 3:
            assert all(n.startswith("snf.") for n in changed)


def test_guided_training_learns_and_reports_each_stage(data):
    model = _model(data, stage_epochs=[4, 1, 1, 2])
    epochs = []
    result = train_guided(model, data, _cfg(epochs=99), on_epoch_end=lambda e, r: epochs.append((e, r["stage"])))
    assert epochs == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 3), (7, 4), (8, 4)]
    assert model.stage == 4 and all(p.requires_grad for p in model.parameters())
    losses = [h["loss"] for h in result.history]
    assert losses[3] < losses[0]  # stage 1 learns
    hr = evaluate(model, data, "test", protocols=("sampled",), ks=(10,))["sampled99_hr_at_10"]
    assert hr > 0.3, f"END4Rec sampled99 HR@10 {hr:.3f} on the chain data (random: 0.10)"
    # The eliminator drops some events and keeps most; decisions are 0/1 and padding is never kept.
    model.eval()
    items = torch.as_tensor(data.items[: 20 * 20].reshape(20, 20))
    keep = model.keep_decisions(items, torch.ones_like(items).masked_fill(items == 0, 0))
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    assert (keep[items == 0] == 0).all()


def test_joint_mode_trains_everything_at_once(data):
    model = _model(data, training_mode="joint")
    assert model.stage == 4
    result = train_guided(model, data, _cfg(epochs=2))
    assert len(result.history) == 2 and result.history[-1]["loss"] < result.history[0]["loss"] + 1.0


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="stage_epochs"):
        END4RecConfig(n_items=5, n_behaviors=1, stage_epochs=[1, 2])
    with pytest.raises(ValueError, match="training_mode"):
        END4RecConfig(n_items=5, n_behaviors=1, training_mode="staged")


def test_hard_noise_eliminator_drops_injected_misclicks_more_than_real_events(taobao_head):
    """The controlled-noise question: 20% extra random clicks (popularity-proportional items, times uniform in each
    user's span) injected into the real Taobao head; after guided stages 1-2 the eliminator must drop injected
    events at a clearly higher rate than original ones, both as deterministic (inference) decisions and as the
    training-time drop probability.  The same run without the fit term (``fit_weight: 0``, the MLP alone) does
    not separate them (BENCHMARKS.md, "Controlled noise")."""
    from components.data.clean import CleanConfig, clean_interactions
    from components.data.noise import drop_rates, inject_misclicks, injected_mask
    from components.data.readers import read_dataset
    from components.data.split import SplitConfig, build_sequences

    raw = read_dataset("taobao", taobao_head)
    noisy, keys = inject_misclicks(raw.interactions, 0.2, seed=0)
    cleaned = clean_interactions(noisy, CleanConfig(min_user_events=5, min_item_events=3))
    data = build_sequences(cleaned, None, SplitConfig(target_behaviors=None, cold_threshold=10, cold_mode="natural",
                                                      n_negatives=99, seed=0))
    injected = injected_mask(data, keys)
    model = END4Rec(END4RecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=50, hidden=32,
                                  chunks=4, seed=0, stage_epochs=[8, 4, 0, 0], drop_budget=0.2, budget_weight=50.0))
    result = train_guided(model, data, _cfg(batch_size=32, valid_protocols=("sampled",)))
    assert result.history[-1]["stage"] == 2
    rates = drop_rates(model, data, injected)
    logging.getLogger(__name__).info("controlled noise, drop rates: %s", rates)
    assert rates["injected_events"] > 3000 and rates["original_events"] > 10000
    inj, orig = rates["drop_rate_injected"], rates["drop_rate_original"]
    assert inj > 1.6 * orig and inj - orig > 0.03, rates
    assert rates["expected_drop_injected"] > 1.4 * rates["expected_drop_original"], rates
    # It still recommends: sampled-99 HR@10 on the (noisy) test targets beats popularity.
    from components.models import PopularityModel

    hr = evaluate(model, data, "test", protocols=("sampled",), ks=(10,))["sampled99_hr_at_10"]
    pop = evaluate(PopularityModel(data.n_items).fit(data), data, "test", protocols=("sampled",), ks=(10,))
    assert hr > pop["sampled99_hr_at_10"], (hr, pop)
