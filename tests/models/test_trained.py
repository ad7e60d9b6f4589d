"""A TrainedModel knows its architecture and tuning method, stores as safetensors + JSON through one save/load pair,
and reads models stored before it carried a method (``tuned-<method>``)."""

from __future__ import annotations

import json

import pytest
import torch

from components.models.base import Recommender
from components.models.registry import ARCHITECTURES, build_model, model_classes
from components.models.trained import Lineage, TrainedModel
from components.models.tuned.methods import METHODS, TuningConfig, method_config

from .synthetic import one_torch_thread  # noqa: F401  (autouse fixture)

BASE = {"n_items": 30, "n_behaviors": 2, "max_len": 8, "hidden": 16, "n_layers": 1, "n_heads": 1, "seed": 0}


def _tuned(method: str = "ppr_light") -> TrainedModel:
    cfg = method_config(method, dict(base_architecture="sasrec", base_config=BASE, n_items=30,
                                     profile_fields=["gender"], profile_vocab=[["F", "M"]], seed=1)).to_dict()
    model = build_model("sasrec", cfg, method)
    return TrainedModel(architecture="sasrec", method=method, config=cfg, state_dict=model.state_dict(),
                        history=[{"epoch": 1, "loss": 2.5}], best_epoch=1, best_metric={"name": "m", "value": 0.5},
                        info={"n": 3})


def _scores(model: Recommender) -> torch.Tensor:
    items = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    behaviors = (items != 0).long()
    profiles = torch.tensor([[1], [2]]) if model.uses_profiles else None
    with torch.no_grad():
        return model.score_all(items, behaviors, profiles)


def test_save_and_load_give_the_same_model(tmp_path):
    for trained in (_tuned(), TrainedModel("sasrec", BASE, build_model("sasrec", BASE).state_dict())):
        trained.save(tmp_path / trained.name)
        again = TrainedModel.load(tmp_path / trained.name)
        assert (again.architecture, again.method, again.config, again.history, again.best_metric, again.info) == \
            (trained.architecture, trained.method, trained.config, trained.history, trained.best_metric, trained.info)
        assert again.state_dict.keys() == trained.state_dict.keys()
        assert all(torch.equal(again.state_dict[k], v) for k, v in trained.state_dict.items())
        torch.testing.assert_close(_scores(again.build()), _scores(trained.build()), rtol=0, atol=0)


def test_lineage_is_typed_and_stored_and_an_older_artifacts_info_keys_become_it(tmp_path):
    source = {"name": "mbprompt-ml1m", "version": "3", "run_id": "r1"}
    trained = TrainedModel("sasrec", BASE, build_model("sasrec", BASE).state_dict(), info={"n_parameters": 7},
                           lineage=Lineage(source=source, tags={"base_version": "2"}))
    trained.save(tmp_path / "new")
    again = TrainedModel.load(tmp_path / "new")
    assert again.lineage == Lineage(source=source, tags={"base_version": "2"}) and again.info == {"n_parameters": 7}
    # Before the lineage had a field of its own it rode in ``info`` (``registry``, ``registry_tags``).
    meta = json.loads((tmp_path / "new" / "model.json").read_text())
    meta.pop("lineage")
    meta["info"] = {"n_parameters": 7, "registry": source, "registry_tags": {"base_version": "2"}}
    (tmp_path / "new" / "model.json").write_text(json.dumps(meta))
    old = TrainedModel.load(tmp_path / "new")
    assert old.lineage == again.lineage and old.info == {"n_parameters": 7}
    assert TrainedModel("sasrec", BASE, {}).lineage == Lineage(source=None, tags={})


def test_a_model_stored_as_tuned_prefix_loads_with_its_method(tmp_path):
    """Artifacts and registered bundles written before ``method`` existed named tuned models ``tuned-<method>``."""
    trained = _tuned("cpl")
    trained.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta.pop("method")
    meta["architecture"] = "tuned-cpl"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    old = TrainedModel.load(tmp_path)
    assert (old.architecture, old.method, old.name, old.is_tuned) == ("sasrec", "cpl", "cpl", True)
    torch.testing.assert_close(_scores(old.build()), _scores(trained.build()), rtol=0, atol=0)


def test_names_and_the_registry():
    assert TrainedModel("ebm", {}, {}).name == "ebm" and not TrainedModel("ebm", {}, {}).is_tuned
    assert set(ARCHITECTURES) == {"sasrec", "ebm", "end4rec", "pomrec", "gru4rec", "repeat"}
    for method in METHODS:
        assert issubclass(model_classes("sasrec", method)[1], TuningConfig)
    with pytest.raises(ValueError, match="unknown model 'gru'"):
        build_model("gru", BASE)
    with pytest.raises(ValueError, match="unknown tuning method 'lora'"):
        model_classes("sasrec", "lora")


def test_every_encoder_takes_the_same_options():
    """Changing ``name:`` alone switches the encoder: the shared options mean the same in every encoder config."""
    shared = {"n_items": 30, "n_behaviors": 2, "max_len": 12, "hidden": 16, "n_layers": 2, "n_heads": 2,
              "dropout": 0.1, "seed": 0}
    for name in ("sasrec", "ebm", "end4rec", "pomrec", "gru4rec"):
        model = build_model(name, shared)
        assert model.max_len == 12 and model.config.hidden == 16 and model.config.n_layers == 2, name
        assert _scores(model).shape == (2, 31)


def test_a_sasrec_stored_with_n_blocks_loads(tmp_path):
    """SASRec's ``n_blocks`` became ``n_layers``; models registered before read under the new name."""
    old = {k: v for k, v in BASE.items() if k != "n_layers"} | {"n_blocks": 1}
    trained = TrainedModel("sasrec", old, build_model("sasrec", BASE).state_dict())
    torch.testing.assert_close(_scores(trained.build()), _scores(build_model("sasrec", BASE).eval()), rtol=0, atol=0)
