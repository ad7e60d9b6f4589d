"""ZenML materializers for mbprompt's artifact types.  Importing this package registers them."""

from materializers.arrow import ArrowTableMaterializer
from materializers.data import CleanResultMaterializer, SequenceDatasetMaterializer
from materializers.model import TrainedModelMaterializer
from materializers.reports import EvaluationReportMaterializer, ValidationReportMaterializer

__all__ = [
    "ArrowTableMaterializer", "CleanResultMaterializer", "SequenceDatasetMaterializer", "TrainedModelMaterializer",
    "EvaluationReportMaterializer", "ValidationReportMaterializer",
]
