"""What things are called in the model registry: registered model names, the champion alias, the version tags
and run artifacts the gateway writes and reads.  Pure; no MLflow."""

from __future__ import annotations

#: The alias of the version that serves (and that the drift gate, the refresh and prompt tuning start from).
CHAMPION = "champion"
#: Version tag: sha256 of the version's weights (``components.serving.recommender.weights_digest``).
WEIGHTS_TAG = "weights_sha256"
#: Version tag: why the version did or did not become the champion.
DECISION_TAG = "champion_decision"
#: Where REGISTER stores the training data profile (components.data.drift) in the registered version's run.
PROFILE_ARTIFACT = "data/profile.json"
#: Version tag that points at :data:`PROFILE_ARTIFACT`.
PROFILE_TAG = "data_profile"
#: The files of a registered recommender (``components.serving.recommender.write_bundle``).
BUNDLE_FILES = ("weights.safetensors", "model.json", "items.json")


def model_name(dataset: str, method: str | None = None) -> str:
    """``mbprompt-<dataset>`` for pre-trained encoders, ``mbprompt-<dataset>-<method>`` for models tuned with a
    tuning method (each method has its own champion: their selection metrics are measured on different users)."""
    if not dataset:
        raise ValueError("model_name: the dataset name is empty")
    return f"mbprompt-{dataset}" if method is None else f"mbprompt-{dataset}-{method}"
