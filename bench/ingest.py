"""Ingest + clean throughput and peak memory on a generated Taobao-format file.

    python -m bench.ingest [--rows 10000000] [--repeats 3] [--json]

Each repeat runs in a fresh process, so its peak RSS is its own.  Prints a table (median of the repeats) and, with
--json, one JSON line with every figure last.  The generated file is cached under bench/out/.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00")


def one_run(path: str) -> dict:
    """Read + clean once, in this process; returns seconds per stage and peak RSS."""
    from components.data.clean import CleanConfig, clean_interactions
    from components.data.readers import read_dataset

    t0 = time.perf_counter()
    res = read_dataset("taobao", path)
    t1 = time.perf_counter()
    cleaned = clean_interactions(res.interactions, CleanConfig(time_window=WINDOW))
    t2 = time.perf_counter()
    rows = res.interactions.num_rows
    return {"rows": rows, "rows_clean": cleaned.interactions.num_rows, "read_s": t1 - t0, "clean_s": t2 - t1,
            "total_s": t2 - t0, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one_run(a.child)))  # noqa: T201 - read by the parent process
        return

    from bench.gen_taobao import generate_taobao_csv

    OUT.mkdir(exist_ok=True)
    path = OUT / f"taobao_{a.rows}.csv"
    if not path.exists():
        t = time.perf_counter()
        generate_taobao_csv(path, a.rows, seed=0)
        print(f"generated {path.name} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s")  # noqa: T201
    runs = []
    for _ in range(a.repeats):
        out = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", str(path)], check=True,
                             capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rps = med["rows"] / med["total_s"]
    figures = {
        "rows": int(med["rows"]), "file_gb": round(path.stat().st_size / 1e9, 3), "repeats": a.repeats,
        "read_s": round(med["read_s"], 2), "clean_s": round(med["clean_s"], 2), "total_s": round(med["total_s"], 2),
        "rows_per_s": round(rps), "peak_rss_gb": round(med["peak_rss_gb"], 2),
        "extrapolated_100M_s": round(100e6 / rps, 1),
        "extrapolated_100M_rss_gb": round(med["peak_rss_gb"] * 100e6 / med["rows"], 1),
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={len(__import__('os').sched_getaffinity(0))}",
    }
    print(f"\ningest + clean, Taobao format, {figures['rows']:,} rows ({figures['file_gb']} GB), "  # noqa: T201
          f"median of {a.repeats} fresh processes")
    print("| stage | seconds |\n|---|---:|")  # noqa: T201
    for k in ("read_s", "clean_s", "total_s"):
        print(f"| {k[:-2]} | {figures[k]} |")  # noqa: T201
    print(f"\nthroughput {rps / 1e6:.2f} M rows/s end to end; peak RSS {figures['peak_rss_gb']} GB")  # noqa: T201
    if a.json:
        print(json.dumps(figures))  # noqa: T201


if __name__ == "__main__":
    main()
