from typing import Annotated, Optional

from zenml import log_metadata, step

from components.data.sequences import SequenceDataset
from components.metrics.report import EvaluationReport
from components.models.trained import TrainedModel
from components.registry.register import register_recommender
from steps._common import TRACKER, cache_on_code


@step(experiment_tracker=TRACKER, enable_cache=False, cache_policy=cache_on_code(__name__))
def register(
    model: TrainedModel,
    sequences: SequenceDataset,
    evaluation: EvaluationReport,
    dataset: str,
    selection_metric: str = "valid_sampled99_ndcg_at_10",
    data_profile: Optional[dict] = None,
    base_model: Optional[TrainedModel] = None,
) -> Annotated[dict, "registration"]:
    """Register the model as an MLflow pyfunc with its training data profile (the drift gate's reference); move
    the champion alias only if it beats the champion.  A tuned model registers under mbprompt-<dataset>-<method>
    and records its base (registered first, or reused when the same weights are already registered)."""
    result = register_recommender(model, sequences, evaluation, dataset, selection_metric=selection_metric,
                                  data_profile=data_profile, base_model=base_model)
    log_metadata(result)
    return result
