"""Cold-start tuning on ML-1M across seeds: pre-train only, fine-tuning, PPR(light), PPR(full), CPL, PoMRec.

    python -m bench.tuning [--methods finetune,ppr_light,ppr_full,cpl,pomrec] [--seeds 0,1,2]
        [--pretrain-epochs N] [--json]

Each seed: read -> clean -> split -> pre-train with configs/ml1m.<method>.yaml's shared settings (the split and
pre-training sections are the same in every one of them, so one base per seed serves every method), then tune
each method with its own config's ``prompt_tune`` settings and rank the cold test users: few-shot, zero-shot and
joint, under both protocols (99 sampled negatives, the PPR paper's; and full ranking).  The seed replaces the
config's seed, so the simulated cold users, their negatives, the initial weights and the batch order all change.

Prints one table per protocol and user group (mean +- std over seeds: AUC, HR@5/10/20/50, NDCG@5/10/20/50) and an
efficiency table: tuned parameters as % of the model and of what fine-tuning tunes, and tuning time per epoch
(training only, validation excluded; the median epoch) as % of fine-tuning's on the same data and base.  Every
epoch of a method does the same work, so per-epoch time is the same-epochs-budget comparison; the epochs each
method ran before early stopping are listed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KS = (5, 10, 20, 50)
COLUMNS = ["auc"] + [f"hr_at_{k}" for k in KS] + [f"ndcg_at_{k}" for k in KS]
GROUPS = {"few-shot": "cold_fewshot", "zero-shot": "cold_zeroshot", "joint": "cold_joint"}


def _cold_metrics(model, data) -> dict:
    import numpy as np

    from components.training import evaluate
    from components.training.report import cold_test_groups

    ts = data.targets["cold_test"]
    out = {}
    for label, subset in cold_test_groups(ts).items():
        if subset is not None and not np.any(subset):
            continue
        r = evaluate(model, data, "cold_test", ks=KS, protocols=("sampled", "full"), subset=subset)
        out.update({f"{label}_{k}": float(v) for k, v in r.items()})
    return out


def run_seed(seed: int, methods: list[str], pretrain_epochs: int | None, raw_path: str | None) -> list[dict]:
    from components.training.ddp import build_data
    from components.training.pretrain import pretrain_model
    from components.tuning.tune import tune_model

    configs = {m: yaml.safe_load((REPO / "configs" / f"ml1m.{m}.yaml").read_text()) for m in methods}
    data, pretrain = build_data(configs[methods[0]], raw_path, seed)
    training = {**pretrain["training"], "progress": False}
    if pretrain_epochs is not None:
        training["epochs"] = pretrain_epochs
    t0 = time.perf_counter()
    base = pretrain_model(data, pretrain["model"], training, seed=seed)
    rows = [{"seed": seed, "method": "pretrain-only", "epochs": len(base.history),
             "pretrain_seconds": round(time.perf_counter() - t0, 1), "n_parameters": base.n_parameters,
             "n_cold_test_users": len(data.cold_test_users), **_cold_metrics(base.build(), data)}]
    for method in methods:
        p = configs[method]["steps"]["prompt_tune"]["parameters"]
        tuned = tune_model(base, data, method, p.get("settings"), {**p["training"], "progress": False}, seed=seed)
        epoch_seconds = [h["seconds"] for h in tuned.history]
        rows.append({"seed": seed, "method": method, "epochs": len(tuned.history), "best_epoch": tuned.best_epoch,
                     "train_seconds_per_epoch": statistics.median(epoch_seconds),
                     "train_seconds": sum(epoch_seconds), **{k: tuned.info[k] for k in (
                         "n_parameters", "n_tuned_parameters", "tuned_share", "tuned_vs_finetune")},
                     **_cold_metrics(tuned.build(), data)})
        print(f"seed {seed} {method}: joint sampled99 HR@10 {rows[-1]['cold_joint_sampled99_hr_at_10']:.4f}",
              flush=True)
    return rows


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def tables(rows: list[dict], n_neg: int = 99) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for protocol in (f"sampled{n_neg}", "full"):
        for group, key in GROUPS.items():
            out += [f"\n#### {group} users, protocol `{protocol}` (mean ± std over seeds {seeds})\n",
                    "| method | " + " | ".join(c.replace("_at_", "@").upper() for c in COLUMNS) + " |",
                    "|---|" + "---:|" * len(COLUMNS)]
            for m in methods:
                rs = [r for r in rows if r["method"] == m]
                cells = [_cell([r[f"{key}_{protocol}_{c}"] for r in rs]) if f"{key}_{protocol}_{c}" in rs[0] else ""
                         for c in COLUMNS]
                out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += ["\n#### Efficiency (same data and base per seed; per-epoch training time, validation excluded)\n",
            "| method | tuned parameters | % of model | % of fine-tuning's | s / epoch | % of fine-tuning's time "
            "| epochs run (best) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        if m == "pretrain-only":
            continue
        rs = [r for r in rows if r["method"] == m]
        ft = {r["seed"]: r for r in rows if r["method"] == "finetune"}
        ratio = [r["train_seconds_per_epoch"] / ft[r["seed"]]["train_seconds_per_epoch"] for r in rs if r["seed"] in ft]
        if not ratio:
            continue
        epochs = ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs)
        out.append(f"| {m} | {rs[0]['n_tuned_parameters']:,} | {100 * rs[0]['tuned_share']:.2f}% | "
                   f"{100 * rs[0]['tuned_vs_finetune']:.2f}% | "
                   f"{statistics.median(r['train_seconds_per_epoch'] for r in rs):.2f} | "
                   f"{100 * statistics.median(ratio):.0f}% | {epochs} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="finetune,ppr_light,ppr_full,cpl,pomrec")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--pretrain-epochs", type=int, help="override the configs' pre-training epochs (CPU budget)")
    p.add_argument("--raw-path", help="ML-1M folder (default: the configs' data/ml-1m)")
    p.add_argument("--json", action="store_true", help="also print every run as one JSON line")
    a = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    methods = a.methods.split(",")
    if methods[0] != "finetune" and "finetune" in methods:
        methods.remove("finetune")
        methods.insert(0, "finetune")
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        rows += run_seed(seed, methods, a.pretrain_epochs, a.raw_path)
    print(f"\n### ML-1M cold-start (PPR protocol: configs/ml1m.<method>.yaml), seeds {a.seeds}"
          + (f", pre-training cut to {a.pretrain_epochs} epochs" if a.pretrain_epochs else ""))
    print(tables(rows))
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
