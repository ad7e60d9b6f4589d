"""Choose PoMRec's lambda (each interest = weighted mean + lambda * weighted std) on validation targets only.

    python -m bench.pomrec_lam standalone [--lams 0,0.1,0.3,0.5,1,3] [--seeds 0,1,2]
    python -m bench.pomrec_lam tuning [--lams 0,0.1,0.3,1,3] [--seeds 0] [--pretrain-epochs 6]

``standalone``: PoMRec as a model of its own (``PoMRecConfig.lam``) on the Taobao UserBehavior head, with the data
and training of ``tests/models/test_learning_real.py`` (5-core users / 3-core items, buy as target, cold threshold
3; hidden 32, 5 epochs, ce, every behavior as label), each run keeping its best epoch on ``valid`` and scored on
``valid``: the warm users' second-to-last buy.  ``tuning``: the ``tuning: pomrec`` head
(``TuningConfig.interest_lam``) over a SASRec pre-trained on ML-1M's warm users with
``configs/ml1m.pomrec.yaml`` (pre-training cut to ``--pretrain-epochs`` for a CPU budget), tuned with that
config's settings on the cold tuning users; each run keeps its best epoch on ``cold_valid`` (the cold tuning users'
held-out last event) and is scored there.

The lambda with the best mean of ``--metric`` over the seeds is chosen (default: sampled-99 NDCG@10, the metric
every model selection of the project uses: ``training.valid_metric`` and the champion gate).  No test target is
read: the test figure of the chosen value belongs to ``bench.tuning`` / the pipeline's evaluation, never to this
choice.  Results are logged (and written as JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

logger = logging.getLogger("bench.pomrec_lam")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
REPORTED = ("sampled99_hr_at_10", "sampled99_ndcg_at_10")


def standalone_runs(lams: list[float], seeds: list[int], taobao_dir: Path) -> list[dict]:
    """One row per (lambda, seed): the standalone model's ``valid`` metrics at its best epoch on ``valid``."""
    from components.data.prepare import sequences_from_config
    from components.models.pomrec import PoMRec, PoMRecConfig
    from components.training import TrainConfig, evaluate
    from components.training.trainer import train

    # tests/models/test_learning_real.py's data: the official window, 5-core users, 3-core items, buy as target.
    data = sequences_from_config({
        "parameters": {"dataset": "taobao", "raw_path": str(taobao_dir), "seed": 42},
        "steps": {"clean": {"parameters": {"rules": {
                      "time_window": ["2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00"],
                      "min_user_events": 5, "min_item_events": 3}}},
                  "split": {"parameters": {"settings": {"target_behaviors": ["buy"], "cold_threshold": 3,
                                                        "n_negatives": 99}}}}})
    rows = []
    for lam in lams:
        for seed in seeds:
            model = PoMRec(PoMRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=50, hidden=32,
                                        n_interests=3, n_prompts=4, lam=lam, seed=seed))
            t0 = time.perf_counter()
            result = train(model, data, TrainConfig(epochs=5, loss="ce", lr=1e-3, train_on="all", seed=seed,
                                                    device="cpu", progress=False, valid_set="valid",
                                                    valid_protocols=("sampled",)))
            metrics = evaluate(model, data, "valid", protocols=("sampled",), ks=(10,))
            rows.append({"lam": lam, "seed": seed, "best_epoch": result.best_epoch, "n": int(metrics["n"]),
                         "seconds": round(time.perf_counter() - t0, 1),
                         **{f"valid_{k}": float(metrics[k]) for k in REPORTED}})
            logger.info("standalone lam %g seed %d: %s", lam, seed, rows[-1])
    return rows


def tuning_runs(lams: list[float], seeds: list[int], pretrain_epochs: int, raw_path: str | None) -> list[dict]:
    """One row per (lambda, seed): the tuned head's ``cold_valid`` metrics at its best epoch on ``cold_valid``."""
    import yaml

    from components.data.prepare import sequences_from_config, step_parameters
    from components.training import evaluate
    from components.training.pretrain import pretrain_model
    from components.tuning.tune import tune_model

    config = yaml.safe_load((REPO / "configs" / "ml1m.pomrec.yaml").read_text())
    tune, pretrain = step_parameters(config, "prompt_tune"), step_parameters(config, "pretrain")
    rows = []
    for seed in seeds:
        data = sequences_from_config(config, raw_path=raw_path, seed=seed)
        training = {**pretrain["training"], "epochs": pretrain_epochs, "progress": False,
                    "valid_protocols": ["sampled"]}
        base = pretrain_model(data, pretrain["model"], training, seed=seed)
        for lam in lams:
            t0 = time.perf_counter()
            tuned = tune_model(base, data, "pomrec", {**(tune.get("settings") or {}), "interest_lam": lam},
                               {**tune["training"], "progress": False, "valid_protocols": ["sampled"]}, seed=seed)
            metrics = evaluate(tuned.build(), data, "cold_valid", protocols=("sampled",), ks=(10,))
            rows.append({"lam": lam, "seed": seed, "best_epoch": tuned.best_epoch, "n": int(metrics["n"]),
                         "seconds": round(time.perf_counter() - t0, 1),
                         **{f"cold_valid_{k}": float(metrics[k]) for k in REPORTED}})
            logger.info("tuning lam %g seed %d: %s", lam, seed, rows[-1])
    return rows


def choose(rows: list[dict], metric: str) -> tuple[float, list[str]]:
    """The lambda with the best mean ``metric`` over seeds, and a table of every lambda's means."""
    lams = sorted({r["lam"] for r in rows})
    names = sorted(k for k in rows[0] if k.endswith(REPORTED))
    means = {lam: {k: statistics.mean(r[k] for r in rows if r["lam"] == lam) for k in names} for lam in lams}
    best = max(lams, key=lambda lam: means[lam][metric])
    lines = ["| lambda | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    lines += [f"| {lam:g}{' (chosen)' if lam == best else ''} | " + " | ".join(f"{means[lam][k]:.4f}" for k in names)
              + " |" for lam in lams]
    return best, lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["standalone", "tuning"])
    p.add_argument("--lams", help="comma-separated lambdas (standalone: 0,0.1,0.3,0.5,1,3; tuning: 0,0.1,0.3,1,3)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (standalone: 0,1,2; tuning: 0)")
    p.add_argument("--metric", default="sampled99_ndcg_at_10", choices=REPORTED,
                   help="validation metric that chooses (prefixed with the validation set's name); default: the "
                        "project's model-selection metric (training.valid_metric, the champion gate)")
    p.add_argument("--pretrain-epochs", type=int, default=6, help="tuning: SASRec pre-training epochs")
    p.add_argument("--raw-path", help="tuning: ML-1M folder (default: the config's data/ml-1m)")
    p.add_argument("--taobao-dir", default=str(SHARED_DATASETS / "taobao_userbehavior_head"),
                   help="standalone: the Taobao UserBehavior head folder")
    p.add_argument("--out", help="write every run and the choice as JSON here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    standalone = a.mode == "standalone"
    lams = [float(x) for x in (a.lams or ("0,0.1,0.3,0.5,1,3" if standalone else "0,0.1,0.3,1,3")).split(",")]
    seeds = [int(x) for x in (a.seeds or ("0,1,2" if standalone else "0")).split(",")]
    t0 = time.perf_counter()
    if standalone:
        rows, metric = standalone_runs(lams, seeds, Path(a.taobao_dir)), f"valid_{a.metric}"
    else:
        rows, metric = tuning_runs(lams, seeds, a.pretrain_epochs, a.raw_path), f"cold_valid_{a.metric}"
    best, table = choose(rows, metric)
    logger.info("PoMRec %s lambda on %s (mean over seeds %s, %.0f s):\n%s\nchosen: lambda = %g", a.mode, metric,
                seeds, time.perf_counter() - t0, "\n".join(table), best)
    if a.out:
        Path(a.out).write_text(json.dumps({"mode": a.mode, "metric": metric, "chosen": best, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
