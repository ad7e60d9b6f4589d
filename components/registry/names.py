"""What things are called in the model registry: registered model names, the champion alias, the version tags
and run artifacts the gateway writes and reads.  Pure; no MLflow."""

from __future__ import annotations

import re

#: The alias of the version that serves (and that the drift gate, the refresh and prompt tuning start from).
CHAMPION = "champion"
#: Version tag: sha256 of the version's weights (``components.serving.recommender.weights_digest``).
WEIGHTS_TAG = "weights_sha256"
#: Version tag: sha256 of the version's integrity manifest (components.registry.integrity), kept in the registry's
#: database so that editing files in the artifact store alone cannot make a tampered version pass.
MANIFEST_TAG = "manifest_sha256"
#: Version tag: where in the version's run the manifest JSON is (``integrity/<name>-v<version>.json``).
MANIFEST_PATH_TAG = "manifest"
#: Version tag: why the version did or did not become the champion.
DECISION_TAG = "champion_decision"
#: Where REGISTER stores the training data profile (components.data.drift) in the registered version's run.
PROFILE_ARTIFACT = "data/profile.json"
#: Version tag that points at :data:`PROFILE_ARTIFACT`.
PROFILE_TAG = "data_profile"
#: The files of a registered recommender (``components.serving.recommender.write_bundle``).
BUNDLE_FILES = ("weights.safetensors", "model.json", "items.json")


def model_name(dataset: str, method: str | None = None, *, root: str | None = None) -> str:
    """The registered name: ``root`` (the config's ``model_name``; default ``mbprompt-<dataset>``) for pre-trained
    encoders, ``<root>-<method>`` for models tuned with a tuning method (each method has its own champion: their
    selection metrics are measured on different users)."""
    if not dataset:
        raise ValueError("model_name: the dataset name is empty")
    base = root or f"mbprompt-{dataset}"
    return base if method is None else f"{base}-{method}"


def resolve_model_name(dataset: str, configured: str | None = None) -> str:
    """The registered name a pipeline run uses: the config's ``parameters.model_name``, else ``mbprompt-<dataset>``.

    A format that reads unrelated data sets under one ``dataset`` value (``generic``: any CSV or Parquet;
    ``seqtxt``: any "user item item ..." file; ``DatasetFormat.any_data``) would make a Beauty model compete with a
    Tmall champion under a default name: there the name is required, and its absence is an error before anything
    runs.  A name holds letters, digits, ``.``, ``_`` and ``-`` only."""
    from components.data.readers.registry import FORMATS

    if not configured:
        fmt = FORMATS.get(dataset)
        if fmt is not None and fmt.any_data:
            raise ValueError(f"parameters.model_name is required for dataset {dataset!r}: the {dataset} reader reads "
                             "any data set, so the registered model needs a name of its own (e.g. "
                             "model_name: mbprompt-beauty); without one, unrelated data sets would share one champion")
        return model_name(dataset)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", configured):
        raise ValueError(f"parameters.model_name {configured!r}: use letters, digits, '.', '_' and '-' only "
                         "(it names the registered model and its lock file)")
    return configured

