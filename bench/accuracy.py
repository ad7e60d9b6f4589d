"""Accuracy of encoders across seeds, each row one config of configs/, run with the pipeline's own components.

    python -m bench.accuracy --configs configs/taobao.yaml,configs/taobao.ebm.yaml,configs/taobao.end4rec.yaml \\
        [--raw-path PATH] [--seeds 0,1,2] [--epochs N] [--json]

For every config and seed: read -> clean -> split -> pretrain -> evaluate exactly as the pipeline's steps do with
that config's parameters (``--raw-path`` replaces the config's ``raw_path``; the seed replaces its ``seed``, so the
split, the negatives and the initial weights all change with it).  Prints, per config, the test metrics under
both protocols (sampled negatives and full ranking, HR@10 and NDCG@10) as mean +- standard deviation over seeds,
beside popularity, then (with --json) one JSON line with every run.  A config label may end in ``+joint`` to run
an END4Rec config with ``training_mode: joint`` (its ``training.epochs`` then apply).  ``--epochs N`` shortens
every row to an N-epoch budget (a CPU-sized version of a GPU-sized config, said in the table's title): it sets
``training.epochs`` to N and scales a guided config's ``stage_epochs`` to add up to N.  ``--batch-size B`` sets
every row's batch size (a slice with few warm users gets one optimizer step an epoch at the full file's 128).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import yaml


def scaled_stages(stages: list[int], total: int) -> list[int]:
    """``stages`` rescaled to add up to ``total`` (largest remainders), keeping every non-empty stage >= 1."""
    whole = sum(stages)
    raw = [s * total / whole for s in stages]
    out = [max(int(r), 1 if s else 0) for r, s in zip(raw, stages)]
    for i in sorted(range(len(stages)), key=lambda i: raw[i] - int(raw[i]), reverse=True):
        if sum(out) >= total:
            break
        if stages[i]:
            out[i] += 1
    return out


def run_config(path: str, seed: int, raw_path: str | None, joint: bool = False, epochs: int | None = None,
               batch_size: int | None = None) -> dict:
    from components.models import PopularityModel
    from components.training import evaluate
    from components.training.ddp import build_data
    from components.training.pretrain import pretrain_model

    data, pretrain = build_data(yaml.safe_load(open(path)), raw_path, seed)
    model_settings = dict(pretrain.get("model") or {})
    if joint:
        model_settings["training_mode"] = "joint"
    train_settings = {**(pretrain.get("training") or {}), "progress": False}
    if batch_size is not None:
        train_settings["batch_size"] = batch_size
    if epochs is not None:
        train_settings["epochs"] = epochs
        if "stage_epochs" in model_settings:
            model_settings["stage_epochs"] = scaled_stages(list(model_settings["stage_epochs"]), epochs)
    start = time.perf_counter()
    trained = pretrain_model(data, model_settings, train_settings, seed=seed)
    seconds = time.perf_counter() - start
    model = trained.build()
    m = data.targets["test"].negatives.shape[1]
    out = {"config": path + ("+joint" if joint else ""), "seed": seed, "model": trained.architecture,
           "epochs": len(trained.history), "best_epoch": trained.best_epoch, "train_seconds": round(seconds, 1),
           "n_parameters": trained.info["n_parameters"], "test_users": int(len(data.targets["test"].users))}
    for who, scorer in (("model", model), ("popularity", PopularityModel(data.n_items).fit(data))):
        res = evaluate(scorer, data, "test", protocols=("sampled", "full"), ks=(10,))
        for k in (f"sampled{m}_hr_at_10", f"sampled{m}_ndcg_at_10", "full_hr_at_10", "full_ndcg_at_10"):
            out[f"{who}_test_{k}"] = res[k]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", required=True)
    p.add_argument("--raw-path")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, help="epoch budget for every row (guided stages scaled to it)")
    p.add_argument("--batch-size", type=int, help="batch size for every row (small slices: more steps an epoch)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="only print the table of runs saved earlier (the JSON lines a --json run printed; runs of "
                        "one config/seed split over several invocations can be put together this way)")
    a = p.parse_args()
    configs = a.configs.split(",")
    rows = []
    if a.from_json:
        for path in a.from_json:
            for line in open(path):
                if line.startswith('{"config"'):
                    rows.append(json.loads(line))
        seeds = sorted({r["seed"] for r in rows})
        a.seeds = ",".join(str(s) for s in seeds)
    else:
        for seed in (int(s) for s in a.seeds.split(",")):  # seed-major: a cut-short run still covers every config
            for c in configs:
                rows.append(run_config(c.removesuffix("+joint"), seed, a.raw_path, joint=c.endswith("+joint"),
                                       epochs=a.epochs, batch_size=a.batch_size))
                print(json.dumps(rows[-1]), flush=True)  # noqa: T201 - progress, one line a run

    metric_keys = [k for k in rows[0] if k.startswith(("model_test_", "popularity_test_"))]
    budget = (f", every row {a.epochs} epochs" if a.epochs else "") + (f", batch {a.batch_size}" if a.batch_size else "")
    print(f"\ntest set, mean +- sd over seeds {a.seeds}{budget}")  # noqa: T201
    short = [k.removeprefix("model_test_") for k in metric_keys if k.startswith("model_")]
    print("| config | model | seeds | " + " | ".join(short) + " | popularity " + " | popularity ".join(short)  # noqa: T201
          + " | epochs | train s |")
    print("|---|---|---:|" + "---:|" * (2 * len(short) + 2))  # noqa: T201
    for c in configs:
        rs = [r for r in rows if r["config"] == c]
        if not rs:
            continue

        def ms(key: str) -> str:
            vals = [r[key] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.4f} +- {sd:.4f}"

        cells = [ms(f"model_test_{k}") for k in short] + [ms(f"popularity_test_{k}") for k in short]
        print(f"| {c} | {rs[0]['model']} | {len(rs)} | " + " | ".join(cells)  # noqa: T201
              + f" | {statistics.mean(r['epochs'] for r in rs):.0f} | {statistics.mean(r['train_seconds'] for r in rs):.0f} |")
    if a.json:
        print(json.dumps({"rows": rows}))  # noqa: T201


if __name__ == "__main__":
    main()
