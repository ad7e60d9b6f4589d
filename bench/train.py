"""Encoder training seconds per epoch and evaluation seconds (both protocols) on ML-1M at the paper's setting.

    python -m bench.train [--data data/ml-1m] [--epochs 3] [--losses ce,bce] [--models sasrec,ebm]
        [--device auto] [--amp on|off|both] [--batch-sizes 128,512,2048] [--buckets on|off|both] [--seed 0]
        [--accuracy] [--json]

On a GPU, ``--amp both`` times every row with and without mixed precision, and several ``--batch-sizes`` give
the throughput (sequences/s) as the batch grows towards filling the GPU.

The SASRec paper's setting: 5-core ML-1M (6,040 users, 3,416 items), max length 200, hidden 50, 2 blocks, 1 head,
dropout 0.2, batch 128, 100 sampled negatives.  The first epoch is burn-in; the table shows the median of the
rest.  Evaluation runs on the 6,040 test targets, each protocol timed on its own.  Prints a table, then (with
--json) one JSON line with every figure.

``--buckets`` trains with ``TrainConfig(length_buckets=...)`` on, off or both (rows ``..._buckets`` / ``..._plain``).
Each row also gets its FLOP rate: the FLOPs of one epoch's steps (forward + backward, counted by
``torch.utils.flop_counter.FlopCounterMode`` in a separate one-epoch run of the same settings and seed; matmuls,
attention and convolutions, not elementwise ops) divided by the steps, over the row's median seconds per step:
``achieved_gflops_<row>`` (the FLOPs its batches computed), ``full_width_gflops_<row>`` (the FLOPs the same
users' batches would take at the full 200 columns, i.e. the work the untrimmed step does, over the same time) and
``ceiling_gflops``, a 2048 x 2048 fp32 matmul timed in the same process.  The box is shared and that matmul's
speed moves (88 to 116 GFLOP/s across one session's runs on the 2-core VM, 155 to 161 on another day), so the
ceiling is timed again after every epoch, next to the steps it is compared with: ``ceiling_share_<row>`` is the
row's achieved rate over ``ceiling_gflops_<row>``, the median of the ceilings timed just before the row and after
each of its epochs; ``ceiling_gflops`` is the median of every sample, ``ceiling_gflops_min`` / ``_max`` their range.

``--accuracy`` evaluates each row's model on the test targets after its last epoch (both protocols: ``sampled100``,
the split's 100 stored negatives, and ``full``, every item; K = 10): ``test_<metric>_<row>``.  With ``--seed`` (the
split stays the same; the weights, batches, negatives and dropout masks follow the seed) it checks that a faster
step learns as much per epoch, e.g. the same command on two commits, seeds 0, 1, 2.
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


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n fp32 matmul on ``device`` (median of ``repeats`` after a warm-up)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def epoch_flops(build, data, cfg) -> tuple[float, float, int]:
    """(FLOPs per step of the batches one epoch of ``cfg`` computes, FLOPs per step of the same users' batches at
    the full max_len width, steps), counted by FlopCounterMode over a one-epoch run of a fresh model."""
    import dataclasses

    from torch.utils.flop_counter import FlopCounterMode

    from components.training.trainer import train

    out = []
    for buckets in (cfg.length_buckets, False):
        one = dataclasses.replace(cfg, epochs=1, length_buckets=buckets)
        counter = FlopCounterMode(display=False)
        with counter:
            res = train(build(), data, one, checkpoint_dir=None)
        out.append((counter.get_total_flops(), res.history[0]["steps"]))
    (flops, steps), (full, full_steps) = out
    return flops / max(steps, 1), full / max(full_steps, 1), steps


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
    p.add_argument("--buckets", default="on", choices=["on", "off", "both"],
                   help="TrainConfig.length_buckets: batches of similar lengths cut to their longest row")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP counting run of each row")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batches, negatives and dropout")
    p.add_argument("--accuracy", action="store_true", help="test HR@10 / NDCG@10 (sampled100, full) of each row")
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
    bucket_modes = {"on": [True], "off": [False], "both": [False, True]}[a.buckets]
    ceilings: list[float] = []  # every timing of the 2048^2 matmul, in order

    def time_ceiling(*_) -> None:
        ceilings.append(matmul_gflops(device, repeats=3))

    for name in a.models.split(","):
        for loss in a.losses.split(","):
            for amp in amps:
                for bs in batch_sizes:
                    for buckets in bucket_modes:
                        torch.manual_seed(a.seed)
                        model = builders[name]()
                        cfg = TrainConfig(epochs=a.epochs, batch_size=bs, lr=1e-3, loss=loss, valid_set=None,
                                          device=str(device), amp=amp, progress=False, seed=a.seed,
                                          length_buckets=buckets)
                        time_ceiling()
                        first = len(ceilings) - 1
                        res = train(model, data, cfg, checkpoint_dir=None, on_epoch_end=time_ceiling)
                        row_ceiling = statistics.median(ceilings[first:])
                        secs = [h["seconds"] for h in res.history[1:]] or [res.history[0]["seconds"]]
                        per_epoch = statistics.median(secs)
                        seq_per_s = len(data.warm_users) / per_epoch
                        key = f"{name}_{loss}{'_amp' if amp else ''}_b{bs}_{'buckets' if buckets else 'plain'}"
                        figures[f"epoch_s_{key}"] = round(per_epoch, 2)
                        figures[f"seq_per_s_{key}"] = round(seq_per_s, 1)
                        step_s = per_epoch / res.history[-1]["steps"]
                        figures[f"step_s_{key}"] = round(step_s, 4)
                        extra = ""
                        if not a.no_flops:
                            flops, full, _ = epoch_flops(builders[name], data, cfg)
                            figures[f"gflop_per_step_{key}"] = round(flops / 1e9, 2)
                            figures[f"achieved_gflops_{key}"] = round(flops / step_s / 1e9, 1)
                            figures[f"full_width_gflops_{key}"] = round(full / step_s / 1e9, 1)
                            figures[f"ceiling_gflops_{key}"] = round(row_ceiling, 1)
                            figures[f"ceiling_share_{key}"] = round(flops / step_s / 1e9 / row_ceiling, 3)
                            extra = (f", {flops / 1e9:.1f} GFLOP/step, {flops / step_s / 1e9:.0f} GFLOP/s "
                                     f"({full / step_s / 1e9:.0f} at full width), "
                                     f"{flops / step_s / 1e9 / row_ceiling:.0%} of {row_ceiling:.0f}")
                        if a.accuracy:
                            m = evaluate(model.eval(), data, "test", protocols=("sampled", "full"), device=device)
                            got = {k: v for k, v in m.items() if k.endswith(("ndcg_at_10", "hr_at_10"))}
                            figures.update({f"test_{k}_{key}": round(v, 4) for k, v in got.items()})
                            extra += "; test " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(got.items()))
                        rows.append((f"{name} train epoch, loss={loss}{', amp' if amp else ''}, batch {bs}, "
                                     f"{'buckets' if buckets else 'plain'}", per_epoch,
                                     f"{seq_per_s:,.0f} seq/s, {step_s:.3f} s/step{extra}"))
    for protocol in ("sampled", "full"):
        t = time.perf_counter()
        m = evaluate(model.eval(), data, "test", protocols=(protocol,), device=device)
        secs = time.perf_counter() - t
        figures[f"eval_s_{protocol}"] = round(secs, 2)
        rows.append((f"evaluate test ({protocol}, {int(m['n'])} targets)", secs, ""))

    figures["ceiling_gflops"] = round(statistics.median(ceilings), 1)
    figures["ceiling_gflops_min"], figures["ceiling_gflops_max"] = round(min(ceilings), 1), round(max(ceilings), 1)
    print(f"\n{a.models} on ML-1M (paper setting), device {device}, torch {torch.__version__}, "  # noqa: T201
          f"{torch.get_num_threads()} threads; median of epochs 2..{a.epochs}; 2048^2 fp32 matmul "
          f"{figures['ceiling_gflops']:.0f} GFLOP/s (median of {len(ceilings)} timings, "
          f"{figures['ceiling_gflops_min']:.0f}-{figures['ceiling_gflops_max']:.0f}); load {os.getloadavg()[0]:.2f}")
    print("| what | seconds | throughput |\n|---|---:|---:|")  # noqa: T201
    for what, secs, extra in rows:
        print(f"| {what} | {secs:.2f} | {extra} |")  # noqa: T201
    if a.json:
        print(json.dumps(figures))  # noqa: T201


if __name__ == "__main__":
    main()
