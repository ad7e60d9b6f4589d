"""A step's cache key follows the project code its run can reach (steps/_common.py), and nothing else.

The first tests check the key's reach statically (no pipeline runs); the last two run the real training pipeline on
a real ZenML store: twice with nothing changed (the second run is served from the cache), then from a copy of the
sources with one model file edited by a comment (pretrain runs again, the data steps stay cached).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from steps._common import PROJECT_PACKAGES, code_digest, key_files, key_modules

pytestmark = pytest.mark.slow  # pipeline runs in a copy of the repository

REPO = Path(__file__).resolve().parents[2]
STEP_MODULES = sorted(f"steps.{p.stem}" for p in (REPO / "steps").glob("*.py") if not p.stem.startswith("_"))
DATA_STEPS = ("steps.ingest", "steps.validate", "steps.clean", "steps.split")
MODEL_STEPS = ("steps.pretrain", "steps.prompt_tune", "steps.evaluate")
#: The files issue 11 found missing from pretrain's key (evaluate and prompt_tune had the same gap).
ISSUE_FILES = ("components/models/ebm.py", "components/models/base.py", "components/models/trained.py",
               "components/training/evaluation.py", "components/metrics/ranking.py")


def copy_sources(dest: Path, src: Path = REPO) -> Path:
    """The importable project (every .py file of the project packages), as a fresh checkout would have it."""
    for package in PROJECT_PACKAGES:
        for path in sorted((src / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                target = dest / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    return dest


def append_comment(path: Path) -> None:
    path.write_text(path.read_text() + f"\n# cache test edit {uuid.uuid4().hex}\n")


def rel(paths: list[Path], root: Path = REPO) -> set[str]:
    return {p.relative_to(root).as_posix() for p in paths}


# ---- what a key covers (static) ---------------------------------------------------------------------------------


def test_the_rules_on_a_toy_project(tmp_path):
    files = {
        # the step catalogue imports every step: not followed
        "steps/__init__.py": "from steps.a import a\nfrom steps.b import b\n",
        "steps/a.py": "import os\nimport components.x\n\ndef a():\n    from components.lazy import g  # lazy\n",
        "steps/b.py": "from components import y\n",
        "components/__init__.py": "",
        "components/x.py": "from . import registry\nfrom .sub.deep import thing\n",
        # a registry of module names counts as imports of them; a string that merely starts like one does not
        "components/registry.py": 'R = {"p": ("components.plugins.p1", "C")}\nWHERE = "components.plugins.p1.C"\n',
        "components/plugins/__init__.py": "from components.plugins.p2 import *\n",  # runs before p1: followed
        "components/plugins/p1.py": "",
        "components/plugins/p2.py": "",
        "components/sub/__init__.py": "",
        "components/sub/deep.py": "from ..lazy import g\n",
        "components/lazy.py": "def g(): pass\n",
        "components/y.py": "",
        "components/unrelated.py": "",
        "components/broken.py": "def (:\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert key_modules("steps.a", tmp_path) == {
        "steps.a", "components", "components.x", "components.registry", "components.plugins",
        "components.plugins.p1", "components.plugins.p2", "components.sub", "components.sub.deep", "components.lazy"}
    assert key_modules("steps.b", tmp_path) == {"steps.b", "components", "components.y"}
    (tmp_path / "steps/c.py").write_text("import components.broken\n")
    assert key_modules("steps.c", tmp_path) == {"steps.c", "components", "components.broken"}  # hashed, not parsed
    with pytest.raises(ValueError):
        key_modules("steps.nope", tmp_path)


def test_model_steps_cover_the_files_the_issue_found_missing():
    from components.models.registry import ARCHITECTURES

    registry = {cls.__module__.replace(".", "/") + ".py" for cls, _ in ARCHITECTURES.values()}
    for step in MODEL_STEPS:
        covered = rel(key_files(step))
        assert set(ISSUE_FILES) <= covered, (step, set(ISSUE_FILES) - covered)
        assert registry <= covered, (step, registry - covered)  # every model the registry can build
        assert f"{step.replace('.', '/')}.py" in covered and "steps/_common.py" in covered
        assert "steps/__init__.py" not in covered


def test_data_steps_do_not_cover_models_or_training():
    for step in DATA_STEPS:
        covered = rel(key_files(step))
        assert f"{step.replace('.', '/')}.py" in covered
        assert not {f for f in covered if f.startswith(("components/models/", "components/training/",
                                                        "components/tuning/", "components/serving/"))}, step


def test_the_digest_follows_file_content_and_nothing_else(tmp_path):
    a = copy_sources(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    before = {s: code_digest(s, a) for s in STEP_MODULES}
    assert {s: code_digest(s, b) for s in STEP_MODULES} == before  # the checkout's location is not in the key
    assert {s: code_digest(s, b) for s in STEP_MODULES} == before  # nor is the time of asking
    (b / "tests").mkdir()
    (b / "tests/test_x.py").write_text("import components.models.base\n")
    (b / "README.md").write_text("changed\n")
    (b / "components/models/notes.txt").write_text("not code\n")
    assert {s: code_digest(s, b) for s in STEP_MODULES} == before
    append_comment(b / "components/models/base.py")  # a comment is enough: the key hashes file content
    after = {s: code_digest(s, b) for s in STEP_MODULES}
    changed = {s for s in STEP_MODULES if after[s] != before[s]}
    assert set(MODEL_STEPS) <= changed
    assert not changed & set(DATA_STEPS), changed
    assert "steps.fingerprint" not in changed


# ---- on a real ZenML store -------------------------------------------------------------------------------------

RUNNER = """
import sys
import steps._common
from pipelines.training import training_pipeline
run = training_pipeline.with_options(config_path=sys.argv[1])()
print("MBPROMPT_RUN", run.id, steps._common.ROOT)
"""


def write_events(path: Path, n_users: int = 120, n_items: int = 150, seed: int = 0) -> Path:
    """A small multi-behavior log for the generic reader: every user clicks, carts and buys a few items."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    lines = ["user,item,ts,event"]
    for u in range(n_users):
        t = start + timedelta(hours=rng.randint(0, 48))
        for _ in range(rng.randint(20, 30)):
            t += timedelta(minutes=rng.randint(1, 90))
            event = rng.choices(["view", "add_to_cart", "purchase"], weights=[6, 2, 2])[0]
            item = min(int(rng.paretovariate(1.2)), n_items)
            lines.append(f"u{u},i{(item * 7 + u % 5) % n_items},{int(t.timestamp())},{event}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(path: Path, raw_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "generic.yaml").read_text())
    cfg["run_name"] = f"test-cache-{uuid.uuid4().hex[:8]}-{{date}}-{{time}}"
    cfg["parameters"]["raw_path"] = str(raw_path)
    steps = cfg["steps"]
    steps["split"]["parameters"]["settings"].update(cold_threshold=3, n_negatives=20)
    steps["pretrain"]["parameters"]["model"].update(hidden=16, max_len=20, n_layers=1)
    steps["pretrain"]["parameters"]["training"].update(epochs=1, batch_size=64)
    path.write_text(yaml.safe_dump(cfg))
    return path


def statuses(run_id) -> dict[str, str]:
    from zenml.client import Client

    return {name: step.status.value for name, step in Client().get_pipeline_run(run_id).steps.items()}


@pytest.fixture(scope="module")
def two_runs(zenml_env, tmp_path_factory):
    from pipelines.training import training_pipeline

    tmp = tmp_path_factory.mktemp("cache")
    cfg = write_config(tmp / "cache.yaml", write_events(tmp / "events.csv"))
    first = training_pipeline.with_options(config_path=str(cfg))()
    second = training_pipeline.with_options(config_path=str(cfg))()
    return cfg, first.id, second.id


def test_an_unchanged_rerun_is_served_from_the_cache(two_runs):
    _, first, second = two_runs
    assert statuses(first)["pretrain"] == "completed"
    status = statuses(second)
    for name in ("ingest", "validate", "clean", "split", "pretrain", "evaluate"):
        assert status[name] == "cached", (name, status)
    assert status["fingerprint_input"] == "completed"  # never cached: it notices changed input files


def test_a_model_file_edit_reruns_pretrain_but_not_the_data_steps(two_runs, tmp_path):
    cfg, _, _ = two_runs
    copy = copy_sources(tmp_path / "repo")
    append_comment(copy / "components/models/base.py")  # the encoders' shared layers; sasrec trains here
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}  # ZENML_*: conftest's stores
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(cfg)], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    marker = [line.split() for line in proc.stdout.splitlines() if line.startswith("MBPROMPT_RUN")]
    assert marker and Path(marker[-1][2]) == copy, proc.stdout[-2000:]  # it ran the copy's code
    status = statuses(marker[-1][1])
    for name in ("ingest", "validate", "clean", "split"):
        assert status[name] == "cached", (name, status)
    for name in ("pretrain", "evaluate"):
        assert status[name] == "completed", (name, status)
