"""Every tuning method on real MovieLens-1M cold-start users (the PPR protocol of configs/ml1m.<method>.yaml).

One SASRec base is pre-trained on the warm users for a short CPU budget (6 epochs instead of the configs' 30);
each method is then tuned with its config's own settings at a test budget (at most 20 epochs, patience 5; the
configs' 100 / 10 are what the benches run) on the cold tuning users and ranked on the cold test users (few-shot
and zero-shot together, 99 sampled negatives).  About 2 min on a 2-core CPU.  ML-1M comes from
``make data`` (``make test`` fetches it first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from components.data.prepare import sequences_from_config, step_parameters
from components.training import evaluate
from components.training.pretrain import pretrain_model
from components.models.tuned.methods import FROZEN_BASE, METHODS
from components.tuning.tune import tune_model
from tests.models.synthetic import one_torch_thread  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.real, pytest.mark.slow]  # ML-1M, every method tuned: minutes

REPO = Path(__file__).resolve().parents[2]
ML1M = REPO / "data" / "ml-1m"
PRETRAIN_EPOCHS = 6
#: Tuning budget of the test (the configs allow 100 epochs with patience 10, which the benches use): enough for
#: every method to beat the 6-epoch base, at a third of the time.
TUNE_EPOCHS = 20
TUNE_PATIENCE = 5
#: The modules each frozen-base method may tune (prefixes of parameter names).
TUNED_MODULES = {"ppr_light": ("profile.", "generator.", "side."),
                 "cpl": ("profile.", "behavior_emb.", "gru.", "user_enc.", "factors", "gates.", "position_scale"),
                 "pomrec": ("head.", "profile.", "side.")}


def _config(method: str) -> dict:
    return yaml.safe_load((REPO / "configs" / f"ml1m.{method}.yaml").read_text())


def _params(cfg: dict, step: str) -> dict:
    return cfg["steps"][step]["parameters"]


@pytest.fixture(scope="module")
def cold_start():
    if not (ML1M / "ml-1m.inter").exists():
        pytest.fail(f"MovieLens-1M not found at {ML1M}: run `make data` (make test does)")
    cfg = _config("ppr_light")
    data = sequences_from_config(cfg, raw_path=ML1M, seed=0)
    pretrain = step_parameters(cfg, "pretrain")
    training = {**pretrain["training"], "epochs": PRETRAIN_EPOCHS, "progress": False, "valid_protocols": ["sampled"]}
    base = pretrain_model(data, pretrain["model"], training, seed=0)
    return data, base


@pytest.fixture(scope="module")
def tuned(cold_start):
    data, base = cold_start
    out = {}
    for method in METHODS:
        p = _params(_config(method), "prompt_tune")
        out[method] = tune_model(base, data, method, p["settings"],
                                 _tune_training(p), seed=0)
    return out


def _tune_training(p: dict) -> dict:
    return {**p["training"], "epochs": TUNE_EPOCHS, "patience": TUNE_PATIENCE, "progress": False,
            "valid_protocols": ["sampled"]}


def _cold_metrics(model, data) -> dict:
    return evaluate(model, data, "cold_test", protocols=("sampled",), ks=(10,))


def test_the_split_is_ppr_cold_start(cold_start):
    data, _ = cold_start
    assert data.meta["cold_mode"] == "simulated" and data.profile_fields[:3] == ["age", "gender", "occupation"]
    ts = data.targets["cold_test"]
    assert ts.zero_shot.sum() == len(data.cold_test_users) and (~ts.zero_shot).sum() > 0.9 * len(data.cold_test_users)
    assert ts.negatives.shape[1] == 99
    n_hist = data.train_end[data.cold_tune_users] - data.offsets[data.cold_tune_users]
    assert n_hist.max() < 10  # cold users have fewer than 10 interactions before their held-out one


@pytest.mark.parametrize("method", FROZEN_BASE)
def test_frozen_methods_leave_every_base_weight_bit_identical(method, cold_start, tuned):
    _, base = cold_start
    t = tuned[method]
    assert t.info["base_frozen_verified"]
    for name, value in base.state_dict.items():
        assert torch.equal(t.state_dict[f"base.{name}"], value), name
    names = t.info["tuned_parameter_names"]
    assert names and all(n.startswith(TUNED_MODULES[method]) for n in names), names
    assert not any(n.startswith("base.") for n in names)
    # A small share of the model: far below full fine-tuning, which tunes everything.
    assert t.info["tuned_vs_finetune"] < 0.2, t.info["tuned_vs_finetune"]


@pytest.mark.parametrize("method", ["finetune", "ppr_full"])
def test_full_methods_tune_the_base(method, cold_start, tuned):
    _, base = cold_start
    t = tuned[method]
    changed = [n for n, v in base.state_dict.items() if not torch.equal(t.state_dict[f"base.{n}"], v)]
    assert "item_emb.weight" in changed and len(changed) > len(base.state_dict) // 2


@pytest.mark.parametrize("method", METHODS)
def test_zero_shot_ranking_depends_on_the_profile(method, cold_start, tuned):
    data, _ = cold_start
    model = tuned[method].build()
    vocab = dict(zip(model.config.profile_fields, model.config.profile_vocab))
    young_woman = [vocab["age"].index("18") + 1, vocab["gender"].index("F") + 1, vocab["occupation"].index("4") + 1]
    retired_man = [vocab["age"].index("56") + 1, vocab["gender"].index("M") + 1, vocab["occupation"].index("13") + 1]
    empty = torch.zeros(2, 5, dtype=torch.long)
    with torch.no_grad():
        scores = model.score_all(empty, empty, profiles=torch.tensor([young_woman, retired_man]))
    top = torch.topk(scores, 10).indices
    assert not torch.equal(top[0], top[1]), f"{method}: the same top-10 for two different profiles"


@pytest.mark.parametrize("method", METHODS)
def test_each_method_beats_the_untuned_base_on_cold_test_users(method, cold_start, tuned):
    data, base = cold_start
    before = _cold_metrics(base.build(), data)
    after = _cold_metrics(tuned[method].build(), data)
    n = len(data.targets["cold_test"])
    assert after["n"] == before["n"] == n
    # Sampled-99 protocol, few-shot and zero-shot instances together (the PPR paper's joint setting).  NDCG@10, the
    # selection metric, must improve; HR@10 may not fall by more than 1 point (10 of 966 users).  Seen with the
    # seed here: finetune NDCG@10 0.386 -> 0.444 while HR@10 went 0.589 -> 0.585 (4 users), the tuned ranking
    # putting hits higher rather than more users in the top 10; the five-seed comparison is in BENCHMARKS.md.
    assert after["sampled99_ndcg_at_10"] > before["sampled99_ndcg_at_10"], (method, before, after)
    assert after["sampled99_hr_at_10"] > before["sampled99_hr_at_10"] - 0.01, (method, before, after)


def test_tuning_is_reproducible_on_cpu(cold_start, tuned):
    data, base = cold_start
    p = _params(_config("cpl"), "prompt_tune")
    again = tune_model(base, data, "cpl", p["settings"],
                       _tune_training(p), seed=0)
    for k, v in tuned["cpl"].state_dict.items():
        assert torch.equal(again.state_dict[k], v), k
    assert np.isclose(again.best_metric["value"], tuned["cpl"].best_metric["value"])
