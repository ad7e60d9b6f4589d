"""Encoder training seconds per epoch and evaluation seconds (both protocols) on ML-1M at the paper's setting.

    python -m bench.train [--data data/ml-1m] [--epochs 3] [--losses ce,bce] [--models sasrec,ebm]
        [--device auto] [--amp on|off|both] [--batch-sizes 128,512,2048] [--json]

On a GPU, ``--amp both`` times every row with and without mixed precision, and several ``--batch-sizes`` give
the throughput (sequences/s) as the batch grows towards filling the GPU.

The SASRec paper's setting: 5-core ML-1M (6,040 users, 3,416 items), max length 200, hidden 50, 2 blocks, 1 head,
dropout 0.2, batch 128, 100 sampled negatives.  The first epoch is burn-in; the table shows the median of the
rest.  Evaluation runs on the 6,040 test targets, each protocol timed on its own.  Prints a table, then (with
--json) one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch


def load_ml1m(path: str, seed: int = 42):
    from components.data.prepare import sequences_from_config

    return sequences_from_config({
        "parameters": {"dataset": "ml1m", "raw_path": path, "seed": seed},
        "steps": {"clean": {"parameters": {"rules": {"min_user_events": 5, "min_item_events": 5}}},
                  "split": {"parameters": {"settings": {"cold_mode": "natural", "n_negatives": 100}}}}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/ml-1m")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--losses", default="ce,bce")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="on", choices=["on", "off", "both"])
    p.add_argument("--batch-size", type=int, default=128, help="one batch size (see --batch-sizes)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes, e.g. 128,512,2048 (overrides --batch-size)")
    p.add_argument("--models", default="sasrec", help="comma-separated: sasrec, ebm")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    from components.models.ebm import EBM, EBMConfig
    from components.models.sasrec import SASRec, SASRecConfig
    from components.training.evaluation import evaluate, resolve_device
    from components.training.trainer import TrainConfig, train

    data = load_ml1m(a.data)
    device = resolve_device(a.device)
    rows, figures = [], {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "users": int(len(data.warm_users)), "items": data.n_items, "batch_size": a.batch_size,
                         "machine": f"{platform.machine()} cores={len(os.sched_getaffinity(0))}"}
    if device.type == "cuda":
        figures["gpu"] = torch.cuda.get_device_name(device)
    amps = {"on": [True], "off": [False], "both": [True, False]}[a.amp] if device.type == "cuda" else [False]
    batch_sizes = [int(b) for b in a.batch_sizes.split(",")] if a.batch_sizes else [a.batch_size]
    common = dict(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=200, hidden=50, dropout=0.2)
    builders = {"sasrec": lambda: SASRec(SASRecConfig(**common, n_layers=2, n_heads=1)),
                "ebm": lambda: EBM(EBMConfig(**common, n_layers=2, chunks=10))}
    for name in a.models.split(","):
        for loss in a.losses.split(","):
            for amp in amps:
                for bs in batch_sizes:
                    torch.manual_seed(0)
                    model = builders[name]()
                    cfg = TrainConfig(epochs=a.epochs, batch_size=bs, lr=1e-3, loss=loss, valid_set=None,
                                      device=str(device), amp=amp, progress=False, seed=0)
                    res = train(model, data, cfg, checkpoint_dir=None)
                    secs = [h["seconds"] for h in res.history[1:]] or [res.history[0]["seconds"]]
                    per_epoch = statistics.median(secs)
                    seq_per_s = len(data.warm_users) / per_epoch
                    key = f"{name}_{loss}{'_amp' if amp else ''}_b{bs}"
                    figures[f"epoch_s_{key}"] = round(per_epoch, 2)
                    figures[f"seq_per_s_{key}"] = round(seq_per_s, 1)
                    rows.append((f"{name} train epoch, loss={loss}{', amp' if amp else ''}, batch {bs}", per_epoch,
                                 f"{seq_per_s:,.0f} seq/s"))
    for protocol in ("sampled", "full"):
        t = time.perf_counter()
        m = evaluate(model.eval(), data, "test", protocols=(protocol,), device=device)
        secs = time.perf_counter() - t
        figures[f"eval_s_{protocol}"] = round(secs, 2)
        rows.append((f"evaluate test ({protocol}, {int(m['n'])} targets)", secs, ""))

    print(f"\n{a.models} on ML-1M (paper setting), device {device}, torch {torch.__version__}, "  # noqa: T201
          f"{torch.get_num_threads()} threads; median of epochs 2..{a.epochs}")
    print("| what | seconds | throughput |\n|---|---:|---:|")  # noqa: T201
    for what, secs, extra in rows:
        print(f"| {what} | {secs:.2f} | {extra} |")  # noqa: T201
    if a.json:
        print(json.dumps(figures))  # noqa: T201


if __name__ == "__main__":
    main()
