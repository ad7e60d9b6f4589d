"""Bit-identity of results across a refactor: run fixed configs through the real pipeline and dump every metric.

    python -m bench.identity run --out before.json [--raw-path data/ml-1m] [--only quickstart,ebm,cpl]
    python -m bench.identity tuned --out before-tuned.json [--raw-path data/ml-1m]
    python -m bench.identity compare before.json after.json

``run`` trains each case through ``training_pipeline`` exactly as ``zenml pipeline run`` does, in a fresh ZenML
store and a fresh MLflow SQLite store under a temp dir (nothing cached, nothing of the user's touched), then
writes, per case, every MLflow run's metrics with their whole history (every epoch's validation and loss, every
test metric, as logged) to one JSON file. Time- and memory-like metrics (seconds, rates, RSS) are left out: they
move with the machine's load. ``compare`` prints each metric that differs between two such files (a metric
present on one side only counts as a difference) and exits 1 if any does; float values are compared exactly.

The cases are the redesign check of issue 12 (same configs and seeds, metrics bit-identical on CPU):

- ``quickstart``: configs/quickstart.yaml at 2 epochs;
- ``ebm``: configs/ml1m.ebm.yaml at 2 epochs;
- ``cpl``: configs/ml1m.cpl.yaml at 2 pre-training and 3 tuning epochs.

``tuned`` checks every tuning method, not only the pipeline's ``cpl`` case, without the pipeline: one SASRec base
pre-trained for 1 epoch on configs/ml1m.ppr_light.yaml's split (seed 0), then each method tuned for 2 epochs with
its config's settings; per method it records the SHA-256 of the tuned weights and every epoch's loss and
validation metrics, in the same format, so ``compare`` reads it too.

Run ``run`` (or ``tuned``) on the commit before a change (a ``git worktree`` of it, with this file copied in if it predates it)
and on the change, on the same machine, then ``compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES: dict[str, dict] = {
    "quickstart": {"config": "configs/quickstart.yaml", "pretrain_epochs": 2},
    "ebm": {"config": "configs/ml1m.ebm.yaml", "pretrain_epochs": 2},
    "cpl": {"config": "configs/ml1m.cpl.yaml", "pretrain_epochs": 2, "tune_epochs": 3},
}

#: Metrics that measure the machine, not the model.
VOLATILE = re.compile(r"(second|_s$|time|per_sec|/s$|throughput|rss|memory|bytes|_mb$|_gb$)", re.I)


def _case_config(name: str, raw_path: str, tmp: Path) -> Path:
    import yaml

    case = CASES[name]
    cfg = yaml.safe_load((REPO / case["config"]).read_text())
    cfg["run_name"] = f"identity-{name}"
    cfg["enable_cache"] = False
    cfg["parameters"]["raw_path"] = raw_path
    steps = cfg["steps"]
    steps["pretrain"]["parameters"]["training"].update(epochs=case["pretrain_epochs"], progress=False)
    if "tune_epochs" in case:
        steps["prompt_tune"]["parameters"]["training"].update(epochs=case["tune_epochs"], progress=False)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _collect(uri: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    out: dict[str, dict] = {}
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments, order_by=["attributes.start_time ASC"]):
        name = run.info.run_name or run.info.run_id
        metrics = {}
        for key in sorted(run.data.metrics):
            if VOLATILE.search(key):
                continue
            hist = client.get_metric_history(run.info.run_id, key)
            metrics[key] = [[m.step, repr(float(m.value))] for m in sorted(hist, key=lambda m: (m.step, m.timestamp))]
        label, i = name, 2
        while label in out:
            label, i = f"{name}#{i}", i + 1
        out[label] = metrics
    return out


def run_cases(names: list[str], raw_path: str) -> dict:
    results = {}
    for name in names:
        tmp = Path(tempfile.mkdtemp(prefix=f"mbprompt-identity-{name}-"))
        # A fresh store per case: the environment must be set before zenml is imported, so each case runs in
        # its own interpreter.
        env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp / "zenml-config"),
               "ZENML_REPOSITORY_PATH": str(tmp / "zenml-repo"), "ZENML_ANALYTICS_OPT_IN": "false",
               "ZENML_AUTO_OPEN_DASHBOARD": "false", "ZENML_ENABLE_RICH_TRACEBACK": "false",
               "ZENML_LOGGING_VERBOSITY": "WARNING", "GX_ANALYTICS_ENABLED": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", "TQDM_DISABLE": "1"}
        config = _case_config(name, raw_path, tmp)
        out = tmp / "metrics.json"
        import subprocess

        subprocess.run([sys.executable, "-m", "bench.identity", "_one", str(config), str(tmp), str(out)],
                       cwd=REPO, env=env, check=True)
        results[name] = json.loads(out.read_text())
    return results


def _one(config: str, tmp: str, out: str) -> None:
    from zenml.client import Client

    from infra.stacks.local_stack import ensure_local_stack
    from pipelines.training import training_pipeline

    repo = Path(os.environ["ZENML_REPOSITORY_PATH"])
    repo.mkdir(parents=True, exist_ok=True)
    Client.initialize(root=repo)
    uri = ensure_local_stack(Path(tmp) / "mlflow")
    training_pipeline.with_options(config_path=config)()
    Path(out).write_text(json.dumps(_collect(uri)))


def tuned_cases(raw_path: str) -> dict:
    import hashlib

    import yaml

    from components.data.prepare import sequences_from_config, step_parameters
    from components.training.pretrain import pretrain_model
    from components.tuning.tune import tune_model

    def config(method: str) -> dict:
        return yaml.safe_load((REPO / "configs" / f"ml1m.{method}.yaml").read_text())

    data = sequences_from_config(config("ppr_light"), raw_path=raw_path, seed=0)
    pre = step_parameters(config("ppr_light"), "pretrain")
    base = pretrain_model(data, pre["model"], {**pre["training"], "epochs": 1, "progress": False,
                                               "valid_protocols": ["sampled"]}, seed=0)
    runs = {}
    for method in ("finetune", "ppr_light", "ppr_full", "cpl", "pomrec"):
        p = step_parameters(config(method), "prompt_tune")
        tuned = tune_model(base, data, method, p["settings"], {**p["training"], "epochs": 2, "progress": False,
                                                               "valid_protocols": ["sampled"]}, seed=0)
        digest = hashlib.sha256()
        for k in sorted(tuned.state_dict):
            digest.update(k.encode() + tuned.state_dict[k].numpy().tobytes())
        metrics = {"weights_sha256": [[0, digest.hexdigest()]]}
        for record in tuned.history:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not VOLATILE.search(key):
                    metrics.setdefault(key, []).append([int(record["epoch"]), repr(float(value))])
        runs[method] = metrics
    return {"tuned": runs}


def compare(a: dict, b: dict) -> list[str]:
    diffs = []
    for case in sorted(set(a) | set(b)):
        ra, rb = a.get(case, {}), b.get(case, {})
        for run in sorted(set(ra) | set(rb)):
            ma, mb = ra.get(run, {}), rb.get(run, {})
            for key in sorted(set(ma) | set(mb)):
                if ma.get(key) != mb.get(key):
                    diffs.append(f"{case} / {run} / {key}: {ma.get(key, 'absent')} != {mb.get(key, 'absent')}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--raw-path", default=str(REPO / "data" / "ml-1m"))
    r.add_argument("--only", default=",".join(CASES))
    t = sub.add_parser("tuned")
    t.add_argument("--out", required=True)
    t.add_argument("--raw-path", default=str(REPO / "data" / "ml-1m"))
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    o = sub.add_parser("_one")
    o.add_argument("config")
    o.add_argument("tmp")
    o.add_argument("out")
    a = p.parse_args(argv)
    if a.cmd == "_one":
        _one(a.config, a.tmp, a.out)
        return 0
    if a.cmd == "tuned":
        results = tuned_cases(str(Path(a.raw_path).resolve()))
        Path(a.out).write_text(json.dumps(results, indent=1, sort_keys=True))
        print(f"{len(results['tuned'])} methods -> {a.out}")
        return 0
    if a.cmd == "run":
        results = run_cases(a.only.split(","), str(Path(a.raw_path).resolve()))
        Path(a.out).write_text(json.dumps(results, indent=1, sort_keys=True))
        n = sum(len(m) for runs in results.values() for m in runs.values())
        print(f"{len(results)} cases, {n} metric histories -> {a.out}")
        return 0
    diffs = compare(json.loads(Path(a.a).read_text()), json.loads(Path(a.b).read_text()))
    n = sum(len(m) for runs in json.loads(Path(a.a).read_text()).values() for m in runs.values())
    for d in diffs:
        print(d)
    print(f"{len(diffs)} of {n} metric histories differ")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
