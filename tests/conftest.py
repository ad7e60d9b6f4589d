"""Test-wide setup: every ZenML and MLflow store lives in a temp dir, never in the user's home or the repo.

The environment must be set before zenml is first imported, hence module level here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real data slices: ../shared/datasets beside the checkout (as CI lays it out), or wherever
# MBPROMPT_SHARED_DATASETS points for a checkout elsewhere.
SHARED_DATASETS = Path(os.environ.get("MBPROMPT_SHARED_DATASETS") or REPO.parent / "shared" / "datasets")

_TMP = Path(tempfile.mkdtemp(prefix="mbprompt-tests-"))
os.environ.update({
    "ZENML_CONFIG_PATH": str(_TMP / "zenml-config"),
    "ZENML_REPOSITORY_PATH": str(_TMP / "zenml-repo"),
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_AUTO_OPEN_DASHBOARD": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_VERBOSITY": "WARNING",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TQDM_DISABLE": "1",
})
logging.getLogger("great_expectations").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATASETS} (CI checks shared/ out beside the repo; elsewhere set MBPROMPT_SHARED_DATASETS)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def taobao_head(shared_datasets: Path) -> Path:
    return shared_datasets / "taobao_userbehavior_head" / "UserBehavior.csv"


@pytest.fixture(scope="session")
def zenml_env() -> dict:
    """A real ZenML local store (SQLite) and a real MLflow SQLite store, both in the session's temp dir, with
    the local stack registered exactly as `make setup` registers it."""
    from zenml.client import Client

    from infra.stacks.local_stack import ensure_local_stack

    repo = Path(os.environ["ZENML_REPOSITORY_PATH"])
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".zen").exists():
        Client.initialize(root=repo)
    mlflow_dir = _TMP / "mlflow"
    uri = ensure_local_stack(mlflow_dir)
    return {"tracking_uri": uri, "mlflow_dir": mlflow_dir, "tmp": _TMP}


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_checkout():
    """Every store lives in the temp dir: a run that falls back to MLflow's default artifact root (./mlruns under
    the working directory) or ZenML's local paths would write into the checkout; the session fails if one did."""
    strays = ("mlruns", ".zen", "mlartifacts")
    before = {name for name in strays if (REPO / name).exists()}
    yield
    after = {name for name in strays if (REPO / name).exists()}
    assert after <= before, f"tests wrote {sorted(after - before)} into the checkout {REPO}"


#: Test levels (README, *Tests and benchmarks*): every test gets exactly one, from its place and its fixtures unless
#: it declares one: ``pipeline`` (tests/pipeline: real ZenML and MLflow stores), ``real`` (reads the real data
#: slices or ML-1M), ``unit`` (small data it makes itself).  ``slow`` is declared by the tests that take more
#: than a few seconds; ``pytest -m "not slow"`` is the fast subset.
LEVELS = ("unit", "real", "pipeline")
_REAL_FIXTURES = {"shared_datasets", "taobao_head", "zenml_env"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        declared = [m.name for m in item.iter_markers() if m.name in LEVELS]
        if declared:
            continue
        if Path(str(item.fspath)).resolve().parent.name == "pipeline":
            item.add_marker(pytest.mark.pipeline)
        elif _REAL_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.real)
        else:
            item.add_marker(pytest.mark.unit)
