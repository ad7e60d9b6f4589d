"""Seconds per training step: the public PyTorch port of SASRec (pmixer/SASRec.pytorch) against ours, interleaved.

    python -m bench.port_compare PORT_DIR [--data data/ml-1m] [--rounds 12] [--steps 2] [--losses bce,ce]
        [--variants port,plain,buckets] [--threads N] [--json]

PORT_DIR is a checkout of https://github.com/pmixer/SASRec.pytorch (its ``python/model.py`` is imported from
there; none of its code is in this repository).  Both sides train at the port's ML-1M setting: max length 200,
hidden 50, 2 blocks, 1 head, dropout 0.2, batch 128, on CPU in this one process.

- ``port``: the port's ``SASRec`` (post-norm, its default) and its training step as in its ``main.py``: BCE with
  logits on the positive and one sampled negative at every non-padding position, ``Adam(betas=(0.9, 0.98))``,
  always 200 columns wide.  It reads our plain batches of the same users (items, next items, negatives).
- ``plain``: ours (``components.training.trainer``'s ``_step``: ``model.loss`` + AdamW), plain batches, 200 wide.
- ``buckets``: ours with ``TrainConfig(length_buckets=True)``: batches of similar history lengths cut to their
  longest row.
Each of ours runs every loss in ``--losses``.  A round times ``--steps`` steps of each variant in turn, so load
from other processes falls on all of them alike; the table shows the median seconds per step over the rounds,
the port's bce time over each row's (higher is faster than the port), the same for the means (bucketed batches
vary in width, so their mean over many steps is what an epoch costs), and the load average before and after.
Batches are built outside the timed region on both sides (the port builds them in worker processes).
Each round also times a 2048 x 2048 fp32 matmul (the ceiling: median over the rounds); after the timing the timed
steps (their batches: bucketed widths vary) are run again under ``FlopCounterMode`` (matmuls and attention, forward
and backward; not elementwise ops), giving each variant's achieved GFLOP/s = their FLOPs / their timed seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MAX_LEN, HIDDEN, BLOCKS, HEADS, DROPOUT, BATCH = 200, 50, 2, 1, 0.2, 128


def load_port(port_dir: str):
    """The port's model module, imported from its checkout (under a name of its own)."""
    path = Path(port_dir) / "python" / "model.py"
    if not path.exists():
        raise SystemExit(f"port_compare: {path} not found; PORT_DIR must be a checkout of pmixer/SASRec.pytorch")
    spec = importlib.util.spec_from_file_location("sasrec_port_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Port:
    """The port's model and its training step (python/main.py), on our batches."""

    def __init__(self, module, n_users: int, n_items: int):
        args = SimpleNamespace(device="cpu", norm_first=False, hidden_units=HIDDEN, maxlen=MAX_LEN,
                               dropout_rate=DROPOUT, num_blocks=BLOCKS, num_heads=HEADS)
        torch.manual_seed(0)
        self.model = module.SASRec(n_users, n_items, args)
        for _, p in self.model.named_parameters():  # main.py's initialisation
            try:
                torch.nn.init.xavier_normal_(p.data)
            except ValueError:
                pass
        self.model.pos_emb.weight.data[0, :] = 0
        self.model.item_emb.weight.data[0, :] = 0
        self.model.train()
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.98))

    def step(self, seq: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
        pos_logits, neg_logits = self.model(None, seq, pos, neg)
        pos_labels, neg_labels = torch.ones(pos_logits.shape), torch.zeros(neg_logits.shape)
        self.opt.zero_grad()
        indices = np.where(pos != 0)
        loss = self.bce(pos_logits[indices], pos_labels[indices])
        loss += self.bce(neg_logits[indices], neg_labels[indices])
        loss.backward()
        self.opt.step()
        return float(loss.item())


def ours(data, loss: str, buckets: bool, seed: int = 0):
    """A trainer run (model, optimizer, generators) of SASRec at the port's setting, and an endless batch stream."""
    from components.models.sasrec import SASRec, SASRecConfig
    from components.training import trainer as T

    model = SASRec(SASRecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=MAX_LEN, hidden=HIDDEN,
                                n_layers=BLOCKS, n_heads=HEADS, dropout=DROPOUT))
    cfg = T.TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, loss=loss, valid_set=None, device="cpu",
                        progress=False, seed=seed, length_buckets=buckets)
    run = T._start(model, data, cfg, None, None, False)
    model.train()

    def stream():
        while True:
            yield from T._batches(run, run.users, None, 10**9)

    return run, stream()


def matmul_gflops(n: int = 2048) -> float:
    """GFLOP/s of one n x n fp32 matmul (after a warm-up one)."""
    x, y = torch.randn(n, n), torch.randn(n, n)
    x @ y
    t = time.perf_counter()
    x @ y
    return 2 * n**3 / (time.perf_counter() - t) / 1e9


def load_avg() -> float:
    return os.getloadavg()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port_dir")
    p.add_argument("--data", default="data/ml-1m")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=2, help="steps of each variant per round")
    p.add_argument("--losses", default="bce,ce")
    p.add_argument("--variants", default="port,plain,buckets")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--flop-steps", type=int, default=-1,
                   help="timed steps of each variant whose FLOPs are counted afterwards (-1: all, 0: none)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from bench.train import load_ml1m
    from components.models.losses import sample_negatives
    from components.training import trainer as T
    from components.training.batches import training_batches

    data = load_ml1m(a.data)
    variants = a.variants.split(",")
    steppers = {}
    if "port" in variants:
        port = Port(load_port(a.port_dir), len(data.offsets), data.n_items)
        rng = np.random.default_rng(1)

        def port_batches():
            while True:
                for items, _, labels, _ in training_batches(data, data.warm_users, MAX_LEN, BATCH, rng):
                    seq, pos = items.numpy(), labels.numpy()
                    yield seq, pos, sample_negatives(pos, data.n_items, rng) * (pos != 0)

        stream = port_batches()
        steppers["port bce"] = lambda s=stream: (lambda b: port.step(*b), next(s))
    for loss in a.losses.split(","):
        for v in variants:
            if v in ("plain", "buckets"):
                run, stream = ours(data, loss, v == "buckets")
                steppers[f"ours {loss} {v}"] = lambda r=run, s=stream: (lambda b, r=r: T._step(r, b), next(s))

    for name, make in steppers.items():  # warm-up: one step each
        fn, batch = make()
        fn(batch)
    times: dict[str, list[float]] = {k: [] for k in steppers}
    timed: dict[str, list] = {k: [] for k in steppers}  # (step function, batch) of every timed step
    ceiling: list[float] = []
    load_before = load_avg()
    for _ in range(a.rounds):
        ceiling.append(matmul_gflops())
        for name, make in steppers.items():
            for _ in range(a.steps):
                fn, batch = make()
                t = time.perf_counter()
                fn(batch)
                times[name].append(time.perf_counter() - t)
                timed[name].append((fn, batch))
    load_after = load_avg()
    flops, flop_time = {}, {}
    if a.flop_steps:  # FLOPs (forward + backward) of the first timed steps of each variant, run again
        from torch.utils.flop_counter import FlopCounterMode

        for name, steps in timed.items():
            steps = steps[:a.flop_steps] if a.flop_steps > 0 else steps
            counter = FlopCounterMode(display=False)
            with counter:
                for fn, batch in steps:
                    fn(batch)
            flops[name] = counter.get_total_flops() / len(steps)
            flop_time[name] = statistics.fmean(times[name][:len(steps)])

    med = {k: statistics.median(v) for k, v in times.items()}
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    ref, ref_mean = med.get("port bce"), mean.get("port bce")
    print(f"\nSASRec training step on ML-1M (max len {MAX_LEN}, hidden {HIDDEN}, {BLOCKS} blocks, batch {BATCH}), "  # noqa: T201
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.rounds} rounds x {a.steps} steps "
          f"interleaved, load {load_before:.2f} -> {load_after:.2f}")
    print("| variant | median s / step | port bce / this | mean s / step | port bce / this (means) |\n"  # noqa: T201
          "|---|---:|---:|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.4f} | {ref / v:.2f}x | {mean[k]:.4f} | {ref_mean / mean[k]:.2f}x |" if ref  # noqa: T201
              else f"| {k} | {v:.4f} | | {mean[k]:.4f} | |")
    top = statistics.median(ceiling)
    achieved = {k: f / flop_time[k] / 1e9 for k, f in flops.items()}
    if flops:
        print(f"\n2048^2 fp32 matmul (median over the rounds): {top:.1f} GFLOP/s\n"  # noqa: T201
              "| variant | GFLOP / step | achieved GFLOP/s | share of the matmul |\n|---|---:|---:|---:|")
        for k, f in flops.items():
            print(f"| {k} | {f / 1e9:.2f} | {achieved[k]:.1f} | {achieved[k] / top:.0%} |")  # noqa: T201
    if a.json:
        print(json.dumps({"median_step_s": {k: round(v, 5) for k, v in med.items()},  # noqa: T201
                          "mean_step_s": {k: round(v, 5) for k, v in mean.items()},
                          "speedup_over_port_bce": {k: round(ref / v, 3) for k, v in med.items()} if ref else None,
                          "ceiling_gflops": round(top, 1),
                          "gflop_per_step": {k: round(f / 1e9, 3) for k, f in flops.items()},
                          "achieved_gflops": {k: round(v, 2) for k, v in achieved.items()},
                          "load_before": load_before, "load_after": load_after, "threads": torch.get_num_threads(),
                          "rounds": a.rounds, "steps": a.steps, "torch": torch.__version__,
                          "machine": f"{platform.machine()} cores={len(os.sched_getaffinity(0))}"}))


if __name__ == "__main__":
    main()
