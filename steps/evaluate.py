from typing import Annotated, Optional

from zenml import step

import components.training.report as reporting
from components.data.sequences import SequenceDataset
from components.metrics.report import EvaluationReport
from components.models.trained import TrainedModel
from components.settings import settings_dict
from components.tracking import mlflow_log
from components.training import config_schema as schema
from steps._common import TRACKER, cache_on_code


@step(experiment_tracker=TRACKER, cache_policy=cache_on_code(__name__))
def evaluate(
    model: TrainedModel,
    sequences: SequenceDataset,
    dataset: str,
    ks: schema.EvaluateKs = None,
    batch_size: schema.EvaluateBatchSize = 256,
    base_model: Optional[TrainedModel] = None,
) -> Annotated[EvaluationReport, "evaluation"]:
    """Rank test targets under both protocols (sampled negatives, full ranking) for the model, popularity and,
    when the model was tuned, the pre-trained model it came from."""
    ks = settings_dict(ks, schema.EvaluateKs)
    report = reporting.evaluation_report(model, sequences, dataset, ks=tuple(ks or (5, 10, 20, 50)),
                                         batch_size=batch_size, pretrained=base_model)
    for name, metrics in report.metrics.items():
        prefix = "" if name == model.name else f"{name}_"
        mlflow_log.log_metrics(metrics, prefix=prefix)
    mlflow_log.log_text(report.to_markdown(), "evaluation/metrics.md")
    mlflow_log.log_dict(report.to_json(), "evaluation/metrics.json")
    if report.curves_png:
        mlflow_log.log_bytes(report.curves_png, "evaluation/training_curves.png")
    return report
