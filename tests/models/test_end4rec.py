"""END4Rec's mechanics: hard Gumbel masks, the coding rates, guided stages that really freeze, training end to end,
and the denoising modules' causality (a position reads no later event, a user no other user)."""

from __future__ import annotations

import logging

import pytest
import torch

from components.models.base import Batch
from components.models.end4rec import END4Rec, END4RecConfig, coding_rate, gumbel_keep_mask, sequence_coding_rate
from components.training import TrainConfig, evaluate, train
from components.training.pretrain import train_guided

from .synthetic import make_chain_dataset, one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def data():
    return make_chain_dataset(n_warm=200, n_items=347, seed=1)  # 260 users, 347 items


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
    with pytest.raises(ValueError, match="compactness"):
        END4RecConfig(n_items=5, n_behaviors=1, compactness="batch")


# ---- causality and batch independence of the denoising modules (issue 11) ---------------------------------------
def _small(**kw) -> END4Rec:
    """A small END4Rec with every weight moved off its start (the soft filter's kernels and the behavior mixer
    start at zero, which would hide what they do)."""
    model = END4Rec(END4RecConfig(**{"n_items": 40, "n_behaviors": 3, "max_len": 16, "hidden": 16, "chunks": 4,
                                     "dropout": 0.1, "seed": 0, **kw}))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        model.item_emb.weight[0].zero_()
        model.behavior_emb.weight[0].zero_()
    return model


def _events(seed: int, b: int = 6, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 41, (b, n), generator=g)
    behaviors = torch.randint(1, 4, (b, n), generator=g)
    for row, pad in enumerate(torch.randint(0, n - 3, (b,), generator=g).tolist()):
        items[row, :pad], behaviors[row, :pad] = 0, 0
    return items, behaviors, g


def test_soft_filter_mixes_its_kernels_by_the_behavior_shares_up_to_each_position():
    """Output t = x_t + sum_k share_k(t) (kernel_k * x)(t), share_k(t) over the events <= t: checked against the
    direct sum, and later behaviors never move it (whole-window shares moved earlier states by ~0.7)."""
    model = _small(hard_noise=False).eval()
    snf = model.snf
    x = torch.randn(3, 10, 16, generator=torch.Generator().manual_seed(0))
    behaviors = torch.tensor([[0, 0, 1, 2, 2, 3, 1, 1, 2, 3], [1] * 10, [3, 2, 1, 3, 2, 1, 3, 2, 1, 3]])
    valid = behaviors != 0
    x = x * valid[..., None]
    expected = x.clone()
    for b in range(3):
        for t in range(10):
            if not valid[b, t]:
                expected[b, t] = 0
                continue
            seen = behaviors[b, : t + 1][valid[b, : t + 1]]
            for k in range(3):
                share = float((seen == k + 1).float().mean())
                for s_ in range(t + 1):
                    expected[b, t] += share * snf.kernels[k, t - s_] * x[b, s_]
    with torch.no_grad():
        got = snf(x, behaviors, valid)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        later = behaviors.clone()
        later[:, 6:] = later[:, 6:] % 3 + 1
        torch.testing.assert_close(snf(x, later, valid)[:, :6], got[:, :6], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_keep_logits_read_neither_later_events_nor_other_users(training):
    """The eliminator's logits (continuous, before any threshold): a row's logits are the same alone and in a
    batch, and logit t ignores every event after t, given the same running statistics.  The batch z-score of the
    fit failed both (in training, a later label reached an earlier decision through the batch mean)."""
    model = _small(soft_noise=False).train(training)
    model.hne.fit_mean.fill_(0.3)
    model.hne.fit_var.fill_(2.0)
    items, behaviors, g = _events(0, b=8)
    start = {k: v.clone() for k, v in model.hne.named_buffers()}

    def logits(i, b):
        model.hne.load_state_dict({**model.hne.state_dict(), **start})  # the statistics from before the batch
        x, valid = model.embed(i, b)
        beh = b.masked_fill(~valid, 0)
        context = model.run_stack(x, valid, beh)
        return model.hne.keep_logits(x, context, beh, model.output_embeddings()[i], valid)

    model.emb_drop.p = 0.0  # the same inputs in every call (dropout would draw different masks per batch shape)
    for layer in model.layers:
        layer.filter.drop.p = layer.ffn.drop.p = 0.0
    with torch.no_grad():
        full = logits(items, behaviors)
        for row in (0, 3, 7):
            torch.testing.assert_close(logits(items[row:row + 1], behaviors[row:row + 1])[0], full[row],
                                       atol=1e-5, rtol=1e-5)
        changed = items.clone()
        later = changed[:, 9:] != 0
        changed[:, 9:] = torch.where(later, torch.randint(1, 41, later.shape, generator=g), changed[:, 9:])
        torch.testing.assert_close(logits(changed, behaviors)[:, :9], full[:, :9], atol=1e-5, rtol=1e-5)


def test_fit_statistics_are_running_buffers_updated_in_training_after_use():
    model = _small(soft_noise=False, dropout=0.0)
    hne = model.hne
    assert {"hne.fit_mean", "hne.fit_var", "hne.fit_batches"} <= set(model.state_dict())  # saved with the weights
    items, behaviors, _ = _events(1)

    def fits():
        x, valid = model.embed(items, behaviors)
        context = model.run_stack(x, valid, behaviors.masked_fill(~valid, 0))
        before = torch.cat([torch.zeros_like(context[:, :1]), context[:, :-1]], dim=1)
        has_context = valid & torch.nn.functional.pad(valid[:, :-1], (1, 0), value=False)
        return (before * model.output_embeddings()[items]).sum(-1)[has_context]

    with torch.no_grad():
        model.eval()
        model.keep_decisions(items, behaviors)
        assert int(hne.fit_batches) == 0 and float(hne.fit_mean) == 0.0 and float(hne.fit_var) == 1.0
        model.train()
        hne.pref.fill_(-50.0)  # keep everything: the training pass is then the eval pass plus the update
        expected = fits()
        model.keep_decisions(items, behaviors)  # uses (0, 1), then takes this batch's statistics (first batch)
        assert int(hne.fit_batches) == 1
        torch.testing.assert_close(hne.fit_mean, expected.mean())
        torch.testing.assert_close(hne.fit_var, expected.var())
        model.keep_decisions(items, behaviors)  # the second batch weighs 1/2
        assert int(hne.fit_batches) == 2
        torch.testing.assert_close(hne.fit_mean, expected.mean())
        # At evaluation the statistics stay fixed, and a user's decisions are the same alone as in the batch.
        model.eval()
        hne.pref.fill_(-2.0)
        a = model.keep_decisions(items, behaviors)
        b = torch.cat([model.keep_decisions(items[i:i + 1], behaviors[i:i + 1]) for i in range(items.shape[0])])
        assert torch.equal(a, b) and int(hne.fit_batches) == 2


def test_a_dropped_event_feeds_no_later_position_at_any_layer():
    """Behaviors 2 and 3 are always dropped, 1 always kept (preferences far off).  Turning a dropped event's
    behavior from 2 into 3 then changes nothing at the other positions: its slot is out of the sequence at every
    layer.  (With the valid mask in the stack, its slot came back as a token from the second layer on, carrying
    its behavior through the behavior mixer.)  Its own position still gets a state read from the kept events
    before it, not a constant."""
    model = _small(soft_noise=False, n_layers=3).eval()
    with torch.no_grad():
        model.hne.pref.copy_(torch.tensor([0.0, -100.0, 100.0, 100.0]))
    items = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20]])
    behaviors = torch.tensor([[1, 2, 1, 1, 2, 1, 1, 2], [1, 1, 1, 2, 1, 1, 1, 2]])
    with torch.no_grad():
        keep = model.keep_decisions(items, behaviors)
        assert torch.equal(keep, (behaviors == 1).float())
        h = model.encode(items, behaviors)
        other = behaviors.masked_fill(behaviors == 2, 3)
        h2 = model.encode(items, other)
        kept = keep.bool()
        torch.testing.assert_close(h2[kept], h[kept], atol=1e-5, rtol=1e-5)
        # The latest event of both rows is dropped; their states still differ (each reads its own kept events).
        assert not torch.allclose(h[0, -1], h[1, -1], atol=1e-3)


def test_official_compactness_is_per_sequence_minimised_and_ignores_padding():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    valid = torch.tensor([[False, False, True, True, True, True, True], [True] * 7, [False] * 6 + [True]])
    eps = 0.5
    rates = sequence_coding_rate(x, valid, eps)
    for b in range(3):
        xb = x[b][valid[b]]  # [L_b, d]
        direct = 0.5 * torch.logdet(torch.eye(len(xb), dtype=x.dtype) + 5 / (len(xb) * eps ** 2) * xb @ xb.T)
        torch.testing.assert_close(rates[b], direct)
        torch.testing.assert_close(sequence_coding_rate(x[b:b + 1], valid[b:b + 1], eps)[0], rates[b])
    # Padding's values never count, and the long side (N > d) gives the same as the short one.
    torch.testing.assert_close(sequence_coding_rate(x + 5.0 * ~valid[..., None], valid, eps), rates)
    # Centred: less 1/2 min(L_b, d) log c_b, a constant of the data (gradients unchanged).
    length = valid.sum(1).double()
    constant = 0.5 * length.clamp(max=5) * torch.log(5 / (length * eps ** 2))
    torch.testing.assert_close(sequence_coding_rate(x, valid, eps, centred=True), rates - constant)
    xg = x.clone().requires_grad_()
    sequence_coding_rate(xg, valid, eps).sum().backward()
    g1 = xg.grad.clone()
    xg.grad = None
    sequence_coding_rate(xg, valid, eps, centred=True).sum().backward()
    torch.testing.assert_close(xg.grad, g1)
    long = torch.randn(2, 12, 4, generator=g, dtype=torch.float64)
    lv = torch.ones(2, 12, dtype=torch.bool)
    direct = torch.stack([0.5 * torch.logdet(torch.eye(12, dtype=long.dtype) + 4 / (12 * eps ** 2) * m @ m.T)
                          for m in long])
    torch.testing.assert_close(sequence_coding_rate(long, lv, eps), direct)

    # In the loss: official adds +w * mean R (minimised), batch_states subtracts the batch coding rate.
    items, behaviors, _ = _events(3)
    labels = torch.cat([items[:, 1:], torch.ones_like(items[:, :1])], dim=1)
    mask = (items != 0) & (labels != 0)
    losses = {}
    for variant in ("official", "batch_states"):
        for weight in (0.0, 0.01):
            model = _small(compactness=variant, compact_weight=weight, cl_weight=0.0).eval()
            with torch.no_grad():
                losses[variant, weight] = float(model.loss(Batch(items, behaviors, labels, mask), "ce"))
    assert losses["official", 0.01] > losses["official", 0.0]
    assert losses["batch_states", 0.01] < losses["batch_states", 0.0]


@pytest.mark.slow
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
