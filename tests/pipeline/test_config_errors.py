"""A config mistake stops the real training pipeline before its first step (issue 14): ZenML checks every step
and pipeline parameter against its typed schema when it compiles the run (``BaseStep._validate_function_parameters``
validates each configured parameter against the step function's annotation), so the run fails with the key's full
path before ingest, let alone pretrain, is scheduled, and nothing is recorded in the ZenML store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _bad_quickstart(tmp_path: Path, change) -> str:
    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    change(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _set(*keys, value):
    def change(cfg: dict) -> None:
        node = cfg
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


@pytest.mark.parametrize("change, path", [
    (_set("steps", "pretrain", "parameters", "training", "epochs", value="ten"),
     "steps.pretrain.parameters.training.epochs"),
    (_set("steps", "pretrain", "parameters", "model", "name", value="sasrek"), "steps.pretrain.parameters.model.name"),
    (_set("parameters", "tuning", value="ppr"), "parameters.tuning"),
], ids=["epochs-ten", "model-name", "tuning-method"])
def test_a_bad_config_fails_before_the_ingest_step_starts(zenml_env, tmp_path, change, path):
    from zenml.client import Client

    from pipelines.training import training_pipeline

    client = Client()
    runs_before = client.list_pipeline_runs(size=1).total
    ingest_before = client.list_run_steps(name="ingest", size=1).total
    with pytest.raises(ConfigError) as err:
        training_pipeline.with_options(config_path=_bad_quickstart(tmp_path, change))()
    assert str(err.value).startswith(f"{path}: "), str(err.value)
    assert [p for p, _ in err.value.errors] == [path]
    # Nothing ran: no pipeline run was even created, so no ingest step run either.
    assert client.list_pipeline_runs(size=1).total == runs_before
    assert client.list_run_steps(name="ingest", size=1).total == ingest_before
