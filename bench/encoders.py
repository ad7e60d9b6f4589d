"""Training seconds per step and peak memory of each encoder as the sequence grows (attention's N^2 vs FFT's N log N).

    python -m bench.encoders [--lengths 50,200,1000] [--models sasrec,ebm] [--steps 5] [--device auto] [--json]
    python -m bench.encoders --interleave 1000 [--models sasrec,ebm] [--steps 5] [--json]

Setting (the issue's): batch 64, hidden 64, 2 layers, dropout 0.2, 10,000 items, every position labelled, binary
CE with one sampled negative per position (the SASRec paper's loss: its cost is the same for every encoder and
small, so the step time is the encoder's; a full softmax over 10,000 items x 64,000 positions would dominate and
hide the difference), AdamW step included; random full-length sequences of 4 behaviors.  Each (model, N) runs in a fresh
process so its peak memory is its own: on CPU the peak RSS growth over the process's state before the model was
built, on CUDA ``torch.cuda.max_memory_allocated``.  Seconds per step are the median of ``--steps`` steps after one
warm-up step.  Prints a table, the N = max time ratios against SASRec, then (with --json) one JSON line.

``--interleave N`` times the models' steps at length N in ONE process, alternating (sasrec, ebm, sasrec, ebm, ...
``--steps`` rounds), so load from other processes falls on both alike: the time ratio to trust on a shared
machine (no memory figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

BATCH, HIDDEN, LAYERS, ITEMS, BEHAVIORS = 64, 64, 2, 10_000, 4


def _config(name: str, n: int) -> dict:
    common = dict(n_items=ITEMS, n_behaviors=BEHAVIORS, max_len=n, hidden=HIDDEN, dropout=0.2, seed=0)
    if name == "sasrec":
        return {**common, "n_layers": LAYERS, "n_heads": 1}
    return {**common, "n_layers": LAYERS}


def make_step(name: str, n: int, device):
    """A model of ``name`` at length n and a function timing one training step of it on a fixed random batch."""
    import torch

    from components.models.base import Batch
    from components.models.registry import build_model, model_classes

    _, cfg_cls = model_classes(name)
    model = build_model(name, cfg_cls(**_config(name, n)).to_dict()).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)  # as the trainer's build_optimizer
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, ITEMS + 1, (BATCH, n), generator=g).to(device)
    behaviors = torch.randint(1, BEHAVIORS + 1, (BATCH, n), generator=g).to(device)
    labels = torch.randint(1, ITEMS + 1, (BATCH, n), generator=g).to(device)
    negatives = torch.randint(1, ITEMS + 1, (BATCH, n), generator=g).to(device)
    mask = torch.ones(BATCH, n, dtype=torch.bool, device=device)
    batch = Batch(items, behaviors, labels, mask, negatives)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        loss = model.loss(batch, "bce")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    return model, step


def one_run(name: str, n: int, steps: int, device_name: str) -> dict:
    import torch

    from components.training.evaluation import resolve_device

    device = resolve_device(device_name)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB
    model, step = make_step(name, n, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up
    times = [step() for _ in range(steps)]
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    return {"model": name, "N": n, "step_s": statistics.median(times), "peak_mb": peak_mb, "device": str(device),
            "n_parameters": sum(p.numel() for p in model.parameters())}


def interleaved(names: list[str], n: int, steps: int, device_name: str) -> dict:
    """Median seconds per step of each model at length n, their steps alternating in this one process."""
    from components.training.evaluation import resolve_device

    device = resolve_device(device_name)
    steppers = {name: make_step(name, n, device)[1] for name in names}
    for step in steppers.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()[0]
    for _ in range(steps):
        for name, step in steppers.items():
            times[name].append(step())
    medians = {name: statistics.median(t) for name, t in times.items()}
    out = {"N": n, "device": str(device), "steps": steps, "load_before": load_before,
           "load_after": os.getloadavg()[0], "step_s": medians}
    if "sasrec" in medians:
        out["ratios"] = {f"{name}_over_sasrec_time_N{n}": round(v / medians["sasrec"], 3)
                         for name, v in medians.items() if name != "sasrec"}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="50,200,1000")
    p.add_argument("--models", default="sasrec,ebm")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--interleave", type=int, help="time the models' steps at this length alternating in one process")
    a = p.parse_args()
    if a.interleave:
        import torch

        out = interleaved(a.models.split(","), a.interleave, a.steps, a.device)
        print(f"\nencoders at N={out['N']}, interleaved in one process, device {out['device']}, torch "  # noqa: T201
              f"{torch.__version__}, {torch.get_num_threads()} threads, median of {a.steps} steps, load "
              f"{out['load_before']:.2f} -> {out['load_after']:.2f}")
        print("| model | s / step |\n|---|---:|")  # noqa: T201
        for name, v in out["step_s"].items():
            print(f"| {name} | {v:.4f} |")  # noqa: T201
        print("\n".join(f"{k}: {v}" for k, v in out.get("ratios", {}).items()))  # noqa: T201
        if a.json:
            print(json.dumps({**out, "torch": torch.__version__,  # noqa: T201
                              "machine": f"{platform.machine()} cores={len(os.sched_getaffinity(0))}"}))
        return
    if a.child:
        print(json.dumps(one_run(a.child[0], int(a.child[1]), a.steps, a.device)))  # noqa: T201 - read by parent
        return

    rows = []
    for n in (int(x) for x in a.lengths.split(",")):
        for name in a.models.split(","):
            out = subprocess.run([sys.executable, "-m", "bench.encoders", "--child", name, str(n), "--steps",
                                  str(a.steps), "--device", a.device], check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    device = rows[0]["device"]
    print(f"\nencoders, one training step (batch {BATCH}, hidden {HIDDEN}, {LAYERS} layers, {ITEMS:,} items, bce with "  # noqa: T201
          f"1 sampled negative), device {device}, torch {torch.__version__}, median of {a.steps} steps")
    print("| model | N | parameters | s / step | peak MB |\n|---|---:|---:|---:|---:|")  # noqa: T201
    for r in rows:
        print(f"| {r['model']} | {r['N']} | {r['n_parameters']:,} | {r['step_s']:.4f} | {r['peak_mb']:.0f} |")  # noqa: T201
    ratios = {}
    by = {(r["model"], r["N"]): r for r in rows}
    for (name, n), r in by.items():
        if name != "sasrec" and ("sasrec", n) in by:
            ratios[f"{name}_over_sasrec_time_N{n}"] = round(r["step_s"] / by[("sasrec", n)]["step_s"], 3)
            ratios[f"{name}_over_sasrec_memory_N{n}"] = round(r["peak_mb"] / max(by[("sasrec", n)]["peak_mb"], 1), 3)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in sorted(ratios.items())))  # noqa: T201
    if a.json:
        figures = {"rows": rows, "ratios": ratios, "torch": torch.__version__,
                   "machine": f"{platform.machine()} cores={len(os.sched_getaffinity(0))}"}
        print(json.dumps(figures))  # noqa: T201


if __name__ == "__main__":
    main()
