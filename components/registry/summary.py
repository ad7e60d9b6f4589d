"""Print where a run's results are: the MLflow tracking URI, the registered model version and its metrics.

    python -m components.registry.summary --tracking-uri sqlite:///.mlflow/mlflow.db --dataset ml1m \
        [--model-name mbprompt-ml1m]   # the config's model_name, when it sets one
"""

from __future__ import annotations

import argparse
import json

from mlflow import MlflowClient

from components.registry import store
from components.registry.names import CHAMPION, DECISION_TAG, resolve_model_name


def summary(tracking_uri: str, dataset: str, model_name: str | None = None) -> str:
    """The run's results for the registered model ``model_name`` (default mbprompt-<dataset>)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    name = resolve_model_name(dataset, model_name)
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return f"MLflow tracking URI: {tracking_uri}\nno registered version of {name} yet"
    latest = max(versions, key=lambda v: int(v.version))
    champion = store.aliased_version(name, CHAMPION, tracking_uri)
    run = client.get_run(latest.run_id)
    lines = [f"MLflow tracking URI : {tracking_uri}", f"MLflow run          : {latest.run_id}",
             f"registered model    : {name} version {latest.version} (models:/{name}/{latest.version})",
             f"champion            : version {champion and champion.version}  ({latest.tags.get(DECISION_TAG, '')})",
             ""]
    try:
        lines.append(client.download_artifacts(latest.run_id, "evaluation/metrics.md") and
                     open(client.download_artifacts(latest.run_id, "evaluation/metrics.md")).read())
    except Exception:  # noqa: BLE001 - fall back to the raw metrics
        m = {k: round(v, 4) for k, v in run.data.metrics.items() if "_at_10" in k}
        lines.append(json.dumps(m, indent=1))
    lines += ["", "Browse it: make mlflow-ui, then http://127.0.0.1:5000"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--model-name", default=None, help="the config's model_name (default mbprompt-<dataset>)")
    a = p.parse_args()
    print(summary(a.tracking_uri, a.dataset, a.model_name))  # noqa: T201 - a CLI's output


if __name__ == "__main__":
    main()
