"""Training step time, full-ranking evaluation time and peak memory as the catalogue grows (100k, 1M, 4M items).

    python -m bench.scale [--items 100000,1000000,4000000] [--losses ce,bce,sampled] [--steps 3] [--json]

Synthetic Taobao-like data: 2,000 users with 50 events each, items drawn from a Zipf-like popularity (exponent
1.1 over the whole catalogue, so most of a large catalogue is never touched, as in the real log), four behaviors.
The model is a SASRec (hidden 64, 2 layers, window 50), its item table sized to the catalogue.  Per catalogue
size, each in a fresh process so its peak RSS is its own:

- ``step_s_<loss>``: median seconds of ``--steps`` training steps (batch 64, forward, backward, AdamW) after one
  warm-up step, for each loss (``sampled``: 1,024 shared negatives from label counts ** 0.75, logQ-corrected,
  the item table updated sparsely by ``build_optimizer``'s lazy Adam: its step should not grow with the catalogue);
- ``eval_s``: full-ranking evaluation of the 2,000 users' test targets (history items excluded; the catalogue is
  streamed in chunks when a batch's scores exceed ``evaluate``'s ``max_scores`` budget);
- ``peak_rss_gb``: the process's peak resident memory.

Prints a table and, with --json, one JSON line.  CPU times move 3-13x with the machine's load: read the growth
across sizes within one run, and the load printed with it.
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

USERS, EVENTS, BATCH, HIDDEN, WINDOW = 2_000, 50, 64, 64, 50


def synthetic(n_items: int, seed: int = 0):
    """A SequenceDataset of USERS warm users with EVENTS events each over ``n_items`` items (Zipf-like)."""
    import numpy as np

    from components.data.sequences import SequenceDataset, TargetSet

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    p = ranks ** -1.1
    p /= p.sum()
    items = (rng.choice(n_items, size=USERS * EVENTS, p=p) + 1).astype(np.int32)
    behaviors = rng.choice(np.array([1, 2, 3, 4], np.int8), size=items.size, p=[0.895, 0.055, 0.03, 0.02])
    offsets = np.zeros(USERS + 2, np.int64)
    offsets[2:] = np.cumsum(np.full(USERS, EVENTS))
    users = np.arange(1, USERS + 1, dtype=np.int32)

    def targets_at(positions: np.ndarray) -> TargetSet:
        return TargetSet(users=users, positions=positions, items=items[positions],
                         negatives=rng.integers(1, n_items + 1, size=(USERS, 99)).astype(np.int32),
                         zero_shot=np.zeros(USERS, bool), repeat=np.zeros(USERS, bool))

    test_pos = offsets[2:] - 1
    return SequenceDataset(
        n_users=USERS, n_items=n_items, behavior_names=["pv", "cart", "fav", "buy"], target_behaviors=[1, 2, 3, 4],
        offsets=offsets, items=items, behaviors=behaviors,
        timestamps=np.arange(items.size, dtype=np.int64), train_end=np.concatenate([[0], test_pos - 1]),
        warm_users=users, cold_tune_users=np.zeros(0, np.int32), cold_test_users=np.zeros(0, np.int32),
        targets={"test": targets_at(test_pos), "valid": targets_at(test_pos - 1)},
        user_ids=np.array([""] + [f"u{u}" for u in users]), item_ids=np.array([""] + [f"i{i}" for i in range(n_items)]),
        meta={"synthetic": "scale", "history_items": "excluded"})


def one_size(n_items: int, losses: list[str], steps: int) -> dict:
    import numpy as np
    import torch

    from components.models.base import Batch
    from components.models.losses import NegativeProposal, sample_negatives
    from components.training.batches import label_counts
    from components.models.registry import build_model
    from components.training.batches import training_batches
    from components.training.evaluation import evaluate
    from components.training.trainer import TrainConfig, build_optimizer

    torch.manual_seed(0)
    data = synthetic(n_items)
    out: dict = {"items": n_items}
    for loss in losses:
        model = build_model("sasrec", {"n_items": n_items, "n_behaviors": 4, "max_len": WINDOW, "hidden": HIDDEN,
                                       "n_layers": 2, "n_heads": 1, "dropout": 0.2, "seed": 0})
        cfg = TrainConfig(lr=1e-3, loss=loss, negative_power=0.75)
        optimizer = build_optimizer(model, cfg)
        rng = np.random.default_rng(0)
        proposal = NegativeProposal(n_items, cfg.sampled_negatives, label_counts(data, data.warm_users, "all"),
                                    cfg.negative_power) if loss == "sampled" else None
        batches = training_batches(data, data.warm_users, WINDOW, BATCH, rng, "all")
        times = []
        for _ in range(steps + 1):
            items, behaviors, labels, mask = next(batches)
            negatives = None if loss == "ce" else proposal.draw(rng) if proposal is not None else \
                torch.from_numpy(sample_negatives(labels.numpy(), n_items, rng))
            t = time.perf_counter()
            value = model.loss(Batch(items, behaviors, labels, mask, negatives), loss)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            times.append(time.perf_counter() - t)
        out[f"step_s_{loss}"] = statistics.median(times[1:])
    t = time.perf_counter()
    metrics = evaluate(model, data, "test", protocols=("full",), batch_size=256)
    out["eval_s"] = time.perf_counter() - t
    out["eval_users"] = int(metrics["n"])
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", default="100000,1000000,4000000")
    p.add_argument("--losses", default="ce,bce,sampled")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    losses = a.losses.split(",")
    if a.child:
        print(json.dumps(one_size(a.child, losses, a.steps)))  # noqa: T201 - read by the parent process
        return
    rows = []
    for n in [int(x) for x in a.items.split(",")]:
        done = subprocess.run([sys.executable, "-m", "bench.scale", "--child", str(n), "--losses", a.losses,
                               "--steps", str(a.steps)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    cols = ["items"] + [f"step_s_{x}" for x in losses] + ["eval_s", "eval_users", "peak_rss_gb"]
    print(" | ".join(cols))  # noqa: T201
    for r in rows:
        print(" | ".join(f"{r[c]:,}" if isinstance(r[c], int) else f"{r[c]:.3f}" for c in cols))  # noqa: T201
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {platform.node()}; torch threads "  # noqa: T201
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    if a.json:
        print(json.dumps({"rows": rows, "load": load}))  # noqa: T201


if __name__ == "__main__":
    main()
