"""The mechanics of prompt tuning on small tensors and on the real Taobao head (no profiles): where the prompts go,
PoMRec's running sums, and what a method does when the data has no profile."""

from __future__ import annotations

import pytest
import torch

from components.data.prepare import sequences_from_config
from components.models.ebm import EBM, EBMConfig
from components.models.pomrec import MultiInterest, PoMRec, PoMRecConfig
from components.models.sasrec import SASRec, SASRecConfig
from components.models.trained import TrainedModel
from components.models.tuned.methods import method_config
from components.models.tuned.profiles import ProfileError
from components.models.tuned.prompting import prompted_states
from components.tuning.tune import tune_model
from tests.models.synthetic import one_torch_thread  # noqa: F401  (autouse fixture)


def _left_pad(items: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([torch.zeros(items.shape[0], extra, dtype=items.dtype), items], dim=1)


@pytest.mark.parametrize("encoder", ["sasrec", "ebm"])
def test_prompted_states_do_not_depend_on_left_padding(encoder):
    """The prompts sit right before the first event whatever the padding: more padding changes nothing."""
    if encoder == "sasrec":
        model = SASRec(SASRecConfig(n_items=40, n_behaviors=2, max_len=20, hidden=16, n_layers=2, n_heads=2, seed=1))
    else:
        model = EBM(EBMConfig(n_items=40, n_behaviors=2, max_len=20, hidden=16, n_layers=2, chunks=4, seed=1))
    model.eval()
    g = torch.Generator().manual_seed(0)
    items = torch.tensor([[0, 0, 0, 5, 7, 9], [0, 0, 0, 0, 0, 3], [0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    behaviors = (items > 0).long() * torch.randint(1, 3, items.shape, generator=g)
    prompts = torch.randn(4, 2, 16, generator=g)
    layers = [torch.randn(4, 2, 16, generator=g) for _ in range(2)]
    with torch.no_grad():
        h, empty = prompted_states(model, items, behaviors, prompts, layers)
        h2, empty2 = prompted_states(model, _left_pad(items, 7), _left_pad(behaviors, 7), prompts, layers)
        h_plain = model.encode(items, behaviors)
    real = items != 0
    torch.testing.assert_close(h[real], h2[:, 7:][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(empty, empty2, atol=1e-5, rtol=1e-5)
    # The prompt changes what the events' states are (it is read), and an empty row's state is the prompt's.
    assert not torch.allclose(h[real], h_plain[real], atol=1e-3)
    torch.testing.assert_close(h[2, -1], empty[2])
    assert not torch.allclose(empty[0], empty[1], atol=1e-4)  # different users' prompts -> different states


def test_pomrec_running_sums_equal_recomputing_each_prefix():
    """The state after event t (one pass, running sums) equals the state of the prefix up to t computed alone."""
    torch.manual_seed(0)
    head = MultiInterest(hidden=8, n_interests=3, n_prompts=2, lam=3.0).eval()
    x = torch.randn(2, 6, 8)
    valid = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    with torch.no_grad():
        states, empty = head(x, valid)
        for t in range(6):
            xt = torch.cat([torch.zeros(2, 5 - t, 8), x[:, : t + 1]], dim=1)
            vt = torch.cat([torch.zeros(2, 5 - t, dtype=torch.bool), valid[:, : t + 1]], dim=1)
            alone, _ = head(xt, vt)
            for row in range(2):
                if valid[row, t]:
                    torch.testing.assert_close(states[row, t], alone[row, -1], atol=1e-5, rtol=1e-4)
        none, empty_alone = head(x[:, :1] * 0, torch.zeros(2, 1, dtype=torch.bool))
    torch.testing.assert_close(empty, empty_alone)
    torch.testing.assert_close(none[:, 0], empty_alone)


def test_pomrec_standalone_states_move_with_history_and_sit_in_item_space():
    model = PoMRec(PoMRecConfig(n_items=30, n_behaviors=1, max_len=10, hidden=16, seed=0)).eval()
    items = torch.tensor([[0, 0, 4, 5, 6], [0, 0, 7, 8, 9], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        s = model.user_state(items, (items > 0).long())
        scores = model.score_all(items, (items > 0).long())
    assert not torch.allclose(s[0], s[1]) and torch.isfinite(s).all()
    assert scores.shape == (3, 31) and torch.isinf(scores[:, 0]).all()


# ---- real data without profiles: the Taobao head ---------------------------------------------------------------
@pytest.fixture(scope="module")
def taobao(shared_datasets):
    data = sequences_from_config({
        "parameters": {"dataset": "taobao", "raw_path": str(shared_datasets / "taobao_userbehavior_head"), "seed": 0},
        "steps": {"clean": {"parameters": {"rules": {"min_user_events": 5, "min_item_events": 3}}},
                  "split": {"parameters": {"settings": {"target_behaviors": ["buy"], "cold_threshold": 3}}}}})
    cfg = SASRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=30, hidden=16, n_layers=1, seed=0)
    base = TrainedModel("sasrec", cfg.to_dict(), {k: v.clone() for k, v in SASRec(cfg).state_dict().items()})
    return data, base


@pytest.mark.parametrize("method", ["ppr_light", "ppr_full"])
def test_ppr_refuses_data_without_profiles_and_names_the_way_out(taobao, method):
    data, base = taobao
    assert data.profile_fields == [] and len(data.cold_tune_users) > 0
    with pytest.raises(ProfileError, match="no profile fields") as err:
        tune_model(base, data, method, {}, {"epochs": 1, "progress": False}, seed=0)
    assert "cpl" in str(err.value)


def test_cpl_tunes_without_profiles_from_the_behavior_sequence(taobao):
    data, base = taobao
    tuned = tune_model(base, data, "cpl", {}, {"epochs": 2, "batch_size": 16, "lr": 5e-3, "progress": False,
                                               "valid_protocols": ["sampled"]}, seed=0)
    assert tuned.info["base_frozen_verified"] and tuned.config["profile_fields"] == []
    model = tuned.build()
    # Two users with the same (empty) profile but different behavior-type histories get different per-position
    # prompts, and different states; with no history at all they share the prefix (it carries no history).
    items = torch.tensor([[0, 3, 4, 5], [0, 3, 4, 5]])
    behaviors = torch.tensor([[0, 1, 1, 1], [0, 4, 4, 4]])
    with torch.no_grad():
        prefix, positions, _ = model._cpl_prompts(items, behaviors, None)
        states = model.sequence_states(items, behaviors)
    assert not torch.allclose(positions[0][0, -1], positions[0][1, -1])
    assert not torch.allclose(states[0, -1], states[1, -1])
    torch.testing.assert_close(prefix[0][0], prefix[0][1])


@pytest.mark.parametrize("architecture", ["ebm", "end4rec"])
def test_cpl_prompts_a_frozen_ebm_or_end4rec(taobao, architecture):
    """DPCPL's setting: the prompts go into the EBM stack (after END4Rec's denoising), the base stays frozen."""
    from components.models.registry import build_model

    data, _ = taobao
    cfg = {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "max_len": 30, "hidden": 16, "n_layers": 2,
           "chunks": 4, "seed": 0}
    base = TrainedModel(architecture, cfg, {k: v.clone() for k, v in build_model(architecture, cfg).state_dict().items()})
    tuned = tune_model(base, data, "cpl", {}, {"epochs": 2, "batch_size": 16, "lr": 5e-3, "progress": False,
                                               "valid_protocols": ["sampled"]}, seed=0)
    assert tuned.info["base_frozen_verified"] and len(tuned.history) == 2
    assert any(n.startswith("gates.1") for n in tuned.info["tuned_parameter_names"])  # one gate per layer
    assert all(torch.equal(tuned.state_dict[f"base.{k}"], v) for k, v in base.state_dict.items())


def test_tuning_config_refuses_unknown_settings(taobao):
    data, base = taobao
    with pytest.raises(ValueError, match="prompt_lenght"):
        tune_model(base, data, "cpl", {"prompt_lenght": 3}, {"epochs": 1}, seed=0)
    with pytest.raises(ValueError, match="method"):
        method_config("lora", {"base_architecture": "sasrec", "base_config": base.config, "n_items": data.n_items})


def test_tuning_refuses_a_base_without_an_encoder_stack():
    """The repeat head and PoMRec-as-a-model have no stack to put prompts into: a clear error, not an
    AttributeError deep in the prompting code."""
    from types import SimpleNamespace

    from components.models.trained import TrainedModel
    from components.tuning.tune import takes_prompts, tuning_config

    assert [a for a in ("sasrec", "ebm", "end4rec", "repeat", "pomrec") if takes_prompts(a)] == ["sasrec", "ebm", "end4rec"]
    base = TrainedModel(architecture="repeat", config={"n_items": 5, "n_behaviors": 1, "encoder": "sasrec"},
                        state_dict={})
    data = SimpleNamespace(target_behaviors=[1], profile_fields=[], profile_vocab=[])
    with pytest.raises(ValueError, match="no encoder stack"):
        tuning_config("cpl", base, data, None, seed=0)
