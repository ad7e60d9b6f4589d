"""What every step shares: the experiment tracker's name and cache keys that follow the component code."""

from __future__ import annotations

import os
from types import ModuleType

from zenml.config.cache_policy import CachePolicy

#: Name of the MLflow experiment tracker in the active stack (infra/stacks registers it under this name).
TRACKER = os.environ.get("MBPROMPT_EXPERIMENT_TRACKER", "mlflow_tracker")


def cache_on(*modules: ModuleType) -> CachePolicy:
    """ZenML hashes a step's own source only; add the components it calls, so editing them re-runs the step."""
    return CachePolicy(source_dependencies=list(modules))
