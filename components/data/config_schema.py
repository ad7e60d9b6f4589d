"""The typed schemas of the data steps' parameters and of the pipelines' data parameters, derived from the
components' config dataclasses (``components.settings.schema_of``): ZenML checks a run's YAML against them when it
compiles the run, before ingest starts, and a refused value names its full key path.

What is stated here and not in the dataclasses: the keys a pipeline or the data fills in (``exclude``), the bounds
and the allowed values of a few fields.  Keys, types and defaults come from the dataclasses; the dataclasses' own
checks run too (``check``: each is parsed as its step parses it).
"""

from __future__ import annotations

from typing import Literal, Optional

from components.data.clean import CleanConfig
from components.data.drift import MODES, DriftConfig, DriftThresholds
from components.data.readers.generic import GenericMapping
from components.data.readers.registry import DATASETS, FORMATS
from components.data.split import SplitConfig
from components.data.validation import ValidationConfig
from components.settings import ConfigError, from_dict, located, schema_of, schema_type

SHARE = {"ge": 0.0, "le": 1.0}

#: ``parameters.dataset``: a name of the one list of formats (components/data/readers/registry.py).
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]

#: ``parameters.mapping`` (dataset ``generic``): the columns of the user's file.
MappingSettings = schema_of(GenericMapping, name="MappingSettings",
                            check=lambda v: from_dict(GenericMapping, v, where="parameters.mapping"))


def _validation_check(values: dict) -> None:
    # The behaviors come from the dataset (components.data.datasets.validation_config): any name stands in here.
    from_dict(ValidationConfig, {"behaviors": ["any"], **values}, where="steps.validate.parameters.rules")


ValidationRules = schema_of(ValidationConfig, name="ValidationRules", exclude=("behaviors",),
                            bounds={"time_window_mostly": SHARE, "min_users": {"ge": 0}, "chunk_rows": {"ge": 1}},
                            check=_validation_check)
DriftThresholdSettings = schema_of(DriftThresholds, name="DriftThresholdSettings")
DriftSettings = schema_of(DriftConfig, name="DriftSettings", choices={"mode": MODES}, bounds={"sketch_k": {"ge": 1}},
                          fields={"thresholds": (Optional[DriftThresholdSettings], None)},
                          check=lambda v: DriftConfig.from_dict(v))
CleanRules = schema_of(CleanConfig, name="CleanRules",
                       bounds={"min_user_events": {"ge": 0}, "min_item_events": {"ge": 0}, "max_kcore_rounds": {"ge": 1}},
                       check=lambda v: from_dict(CleanConfig, v, where="steps.clean.parameters.rules"))
#: The split's ``seed`` is the pipeline's (``parameters.seed``), not a split setting.
SplitSettings = schema_of(SplitConfig, name="SplitSettings", exclude=("seed",),
                          choices={"cold_mode": ("auto", "natural", "simulated"),
                                   "history_items": ("candidates", "excluded")},
                          bounds={"cold_threshold": {"ge": 1}, "n_negatives": {"ge": 1},
                                  "min_natural_cold_share": SHARE, "simulated_cold_share": SHARE,
                                  "cold_tune_share": SHARE},
                          check=lambda v: from_dict(SplitConfig, v, where="steps.split.parameters.settings"))

# ---- the parameters, where each sits in a run's YAML ---------------------------------------------------------------
Dataset = located(DatasetName, "parameters.dataset")
Mapping = located(Optional[MappingSettings], "parameters.mapping")
MaxMalformedFraction = located(schema_type(float, bounds=SHARE), "steps.ingest.parameters.max_malformed_fraction")
ValidateRules = located(Optional[ValidationRules], "steps.validate.parameters.rules")
Drift = located(Optional[DriftSettings], "steps.validate.parameters.drift")
Clean = located(Optional[CleanRules], "steps.clean.parameters.rules")
Split = located(Optional[SplitSettings], "steps.split.parameters.settings")


def check_dataset_mapping(dataset: str, mapping: dict | None) -> None:
    """A mapped format (``generic``) needs ``parameters.mapping``; every other format refuses one."""
    fmt = FORMATS[dataset]
    if fmt.mapping is not None and not mapping:
        raise ConfigError([("parameters.mapping", f"dataset {dataset!r} reads its columns through a mapping: name "
                                                  "them under parameters.mapping (see configs/generic.yaml)")])
    if fmt.mapping is None and mapping:
        mapped = [f.name for f in FORMATS.values() if f.mapping is not None]
        raise ConfigError([("parameters.mapping", f"only datasets {mapped} take a mapping, not {dataset!r}")])


def pipeline_mapping(dataset: str, mapping) -> dict | None:
    """A pipeline's ``mapping`` as the dict the steps take (ZenML hands the pipeline the checked schema model),
    checked against ``dataset`` (:func:`check_dataset_mapping`)."""
    from components.settings import settings_dict

    mapping = settings_dict(mapping, Mapping)
    check_dataset_mapping(dataset, mapping)
    return mapping
