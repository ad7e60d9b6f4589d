from typing import Annotated, Optional

from zenml import log_metadata, step

from components.data.sequences import SequenceDataset
from components.metrics.report import EvaluationReport
from components.models.trained import TrainedModel
from components.registry.register import register_recommender
from steps._common import TRACKER, cache_on_code
from steps._runs import link_model_version


@step(experiment_tracker=TRACKER, enable_cache=False, cache_policy=cache_on_code(__name__))
def register(
    model: TrainedModel,
    sequences: SequenceDataset,
    evaluation: EvaluationReport,
    dataset: str,
    selection_metric: str = "valid_sampled99_ndcg_at_10",
    data_profile: Optional[dict] = None,
    base_model: Optional[TrainedModel] = None,
    model_name: Optional[str] = None,
    unscorable: str = "keep",
) -> Annotated[dict, "registration"]:
    """Register the model as an MLflow pyfunc under ``model_name`` (the pipeline's; default mbprompt-<dataset>)
    with its training data profile (the drift gate's reference) and an integrity manifest of its files; move the
    champion alias only if it beats the champion scored on this run's validation data (``unscorable``: keep |
    promote, when the champion cannot be scored on it).  A tuned model registers under <model_name>-<method> and
    records its base (registered first, or reused when the same weights are already registered)."""
    result = register_recommender(model, sequences, evaluation, dataset, selection_metric=selection_metric,
                                  data_profile=data_profile, base_model=base_model, model_name=model_name,
                                  unscorable=unscorable)
    log_metadata(result)
    link_model_version(result)  # a ZenML Model version for the MLflow version, linked to this run
    return result
