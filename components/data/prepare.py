"""From a pipeline config to sequences: ingest -> validate -> clean -> split, one function per stage.

The training pipeline's data steps (steps/ingest.py, validate.py, clean.py, split.py) are thin wrappers over
:func:`ingest`, :func:`validate`, :func:`clean` and :func:`split_config` + :func:`split`.  :func:`sequences_from_config`
chains the same functions outside ZenML with the parameters a pipeline run hands those steps
(:func:`stage_parameters`), so the DDP launcher (components.training.ddp), the benches and the tests build the very
split a pipeline run builds, from data that passed the same validation.

How a config reaches the steps (pipelines/training.py): the YAML's ``parameters`` are the pipeline's arguments, which
it passes on as ``dataset``, ``raw_path`` and ``mapping`` to ingest and validate, and as ``seed`` (default 42) and
``dataset`` to split; each step's ``steps.<name>.parameters`` give the rest (``STEP_SETTINGS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from components.data.clean import CleanConfig, CleanResult, clean_interactions
from components.data.readers import read_dataset
from components.data.sequences import SequenceDataset
from components.data.split import SplitConfig, build_sequences
from components.settings import from_dict, refuse_unknown

if TYPE_CHECKING:
    from components.data.readers import IngestResult
    from components.data.validation import ValidationReport

#: What each data step takes from its ``steps.<name>.parameters`` (the rest comes from the pipeline's arguments).
#: validate's ``drift`` gates a run on the registered champion's data (steps/validate.py): no part of the sequences.
STEP_SETTINGS = {"ingest": ("max_malformed_fraction",), "validate": ("rules", "drift"), "clean": ("rules",),
                 "split": ("settings",)}
#: The pipeline's ``seed`` when the config's ``parameters`` leave it out (pipelines/training.py).
DEFAULT_SEED = 42


def step_parameters(config: dict, step: str) -> dict:
    """The config's ``steps.<step>.parameters`` (empty when absent)."""
    return ((config.get("steps") or {}).get(step) or {}).get("parameters") or {}


def stage_parameters(config: dict, *, raw_path: str | Path | None = None, seed: int | None = None) -> dict[str, dict]:
    """The keyword arguments a pipeline run of ``config`` hands each data step (ingest, validate, clean, split),
    ``raw_path`` and ``seed`` replacing the config's ``parameters.raw_path`` and ``parameters.seed``.  A key of
    ``steps.<step>.parameters`` outside ``STEP_SETTINGS`` is refused (ZenML refuses one the step does not take, and
    one the pipeline passes itself unless the values agree)."""
    params = config["parameters"]
    pipeline = {"dataset": params["dataset"], "raw_path": str(raw_path or params["raw_path"]),
                "mapping": params.get("mapping")}
    own = {}
    for step, known in STEP_SETTINGS.items():
        own[step] = step_parameters(config, step)
        refuse_unknown(own[step], known, where=f"steps.{step}.parameters")
    return {
        "ingest": {**pipeline, **own["ingest"]},
        "validate": {**pipeline, "rules": own["validate"].get("rules")},
        "clean": {"rules": own["clean"].get("rules")},
        "split": {"seed": int(params.get("seed", DEFAULT_SEED) if seed is None else seed), "dataset": params["dataset"],
                  "settings": own["split"].get("settings")},
    }


def ingest(dataset: str, raw_path: str | Path, *, mapping: dict | None = None,
           max_malformed_fraction: float = 0.001) -> IngestResult:
    """INGEST: the raw logs as the canonical interactions and profile tables (malformed rows skipped, reported)."""
    return read_dataset(dataset, raw_path, mapping=mapping, max_malformed_fraction=max_malformed_fraction)


def validate(interactions: pa.Table, profiles: pa.Table, dataset: str, raw_path: str | Path, *,
             mapping: dict | None = None, rules: dict | None = None) -> ValidationReport:
    """VALIDATE: the Great Expectations report on the tables under the dataset's behaviors and the config's
    ``rules``; the caller decides what a failure stops (``report.raise_for_failure()``)."""
    from components.data.datasets import validation_config
    from components.data.validation import validate_interactions

    cfg = validation_config(dataset, rules, mapping)
    return validate_interactions(interactions, profiles, cfg, source=str(raw_path))


def clean(interactions: pa.Table, rules: dict | None = None) -> CleanResult:
    """CLEAN: duplicates and out-of-window rows dropped, k-core filter, ids remapped, sorted by time."""
    cfg = from_dict(CleanConfig, rules, where="steps.clean.parameters.rules")
    return clean_interactions(interactions, cfg)


def split_config(seed: int = DEFAULT_SEED, settings: dict | None = None) -> SplitConfig:
    """SPLIT's settings with the pipeline's seed."""
    return from_dict(SplitConfig, {**(settings or {}), "seed": seed}, where="steps.split.parameters.settings")


def split(cleaned: CleanResult, profiles: pa.Table | None, cfg: SplitConfig,
          dataset: str | None = None) -> SequenceDataset:
    """SPLIT: warm and cold users, leave-one-out targets and sampled negatives (``dataset`` picks the default of
    ``history_items``)."""
    return build_sequences(cleaned, profiles, cfg, dataset=dataset)


def sequences_from_config(config: dict, *, raw_path: str | Path | None = None,
                          seed: int | None = None) -> SequenceDataset:
    """ingest -> validate -> clean -> split with the parameters a pipeline run of ``config`` (the YAML as a dict)
    hands those steps (:func:`stage_parameters`); raises ``DataValidationError`` where the validate step would stop
    the run."""
    p = stage_parameters(config, raw_path=raw_path, seed=seed)
    raw = ingest(**p["ingest"])
    validate(raw.interactions, raw.profiles, **p["validate"]).raise_for_failure()
    cleaned = clean(raw.interactions, **p["clean"])
    return split(cleaned, raw.profiles, split_config(p["split"]["seed"], p["split"]["settings"]),
                 dataset=p["split"]["dataset"])
