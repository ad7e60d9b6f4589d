"""Register (idempotently) the embedded local stack: default orchestrator and artifact store, an MLflow
experiment tracker and an MLflow model registry on ``sqlite:///<repo>/.mlflow/mlflow.db``.

    python -m infra.stacks.local_stack [--mlflow-dir .mlflow] [--stack mbprompt-local]

Also creates the MLflow experiments the pipelines log to, with their artifacts under ``<mlflow-dir>/artifacts``
(left to itself, MLflow would put them in ``./mlruns`` of whatever directory a run starts in), tagged as model
training experiments (``mlflow.experimentKind``) so that the MLflow UI opens them on their runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)
TRACKER, REGISTRY, STACK = "mlflow_tracker", "mlflow_registry", "mbprompt-local"
EXPERIMENTS = ("training_pipeline", "prompt_refresh_pipeline", "batch_inference_pipeline")


def tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{mlflow_dir.resolve() / 'mlflow.db'}"


def ensure_experiments(mlflow_dir: Path, names=EXPERIMENTS) -> None:
    import mlflow
    from mlflow import MlflowClient

    from components.tracking.mlflow_log import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    mlflow_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri(mlflow_dir))
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            # Tagged as model training: MLflow 3's UI opens it on its runs, not on the GenAI overview.
            client.create_experiment(name, artifact_location=(mlflow_dir.resolve() / "artifacts").as_uri(),
                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        elif EXPERIMENT_KIND_TAG not in experiment.tags:  # created before the tag was set here
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_tracking_uri("")


def ensure_local_stack(mlflow_dir: Path, stack: str = STACK) -> str:
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    client = Client()
    uri = tracking_uri(mlflow_dir)
    ensure_experiments(mlflow_dir)
    try:
        tracker = client.get_stack_component(T.EXPERIMENT_TRACKER, TRACKER, allow_name_prefix_match=False)
        if tracker.configuration.get("tracking_uri") != uri:
            client.update_stack_component(TRACKER, T.EXPERIMENT_TRACKER, configuration={"tracking_uri": uri})
    except KeyError:
        client.create_stack_component(TRACKER, "mlflow", T.EXPERIMENT_TRACKER, {"tracking_uri": uri})
    try:
        client.get_stack_component(T.MODEL_REGISTRY, REGISTRY, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack_component(REGISTRY, "mlflow", T.MODEL_REGISTRY, {})
    try:
        client.get_stack(stack, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack(stack, components={
            T.ORCHESTRATOR: "default", T.ARTIFACT_STORE: "default",
            T.EXPERIMENT_TRACKER: TRACKER, T.MODEL_REGISTRY: REGISTRY})
    client.activate_stack(stack)
    logger.info("active stack %s; MLflow tracking URI %s", stack, uri)
    return uri


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mlflow-dir", default=".mlflow", type=Path)
    p.add_argument("--stack", default=STACK)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_local_stack(args.mlflow_dir, args.stack)


if __name__ == "__main__":
    main()
