"""Ingest + clean (optionally + split) throughput and peak memory on a generated Taobao-format file.

    python -m bench.ingest [--rows 10000000] [--repeats 3] [--split] [--keep-file] [--json]

Each repeat runs in a fresh process, so its peak RSS is its own.  A run hands the raw table over to cleaning (no
reference kept), as a memory-bounded caller should, so the raw table is freed while cleaning.  ``--split`` also
builds the split (configs/taobao.yaml's settings: buy targets, cold_threshold 5, natural cold users, 99 negatives,
history items as candidates) and reports the whole path's peak RSS.  Prints a table (median of the repeats) and,
with --json, one JSON line with every figure last (``rows_per_s`` and ``peak_rss_gb`` are ingest + clean;
``path_rows_per_s`` and ``path_peak_rss_gb`` ingest + clean + split).

The file is generated under bench/out/ (git-ignored; ~35 bytes a row, 3.5 GB for 100M rows) after checking the free
disk space, and deleted at the end of the run unless ``--keep-file`` (a kept file is reused by later runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
WINDOW = ("2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00")
#: configs/taobao.yaml's split settings.
SPLIT = {"target_behaviors": ["buy"], "cold_threshold": 5, "cold_mode": "natural", "n_negatives": 99,
         "history_items": "candidates"}
BYTES_PER_ROW = 36  # generated file size per row (measured: 34.9)


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _hand_over(res) -> object:
    """The ingest result's interactions table, with the result's reference dropped (the caller passes it on)."""
    table, res.interactions = res.interactions, None
    return table


def one_run(path: str, split: bool) -> dict:
    """Read + clean (+ split) once, in this process; returns seconds per stage and peak RSS."""
    from components.data.clean import CleanConfig, clean_interactions
    from components.data.readers import read_dataset

    t0 = time.perf_counter()
    res = read_dataset("taobao", path)
    t1 = time.perf_counter()
    rows = res.report["rows"]
    read_peak = _peak_gb()
    cleaned = clean_interactions(_hand_over(res), CleanConfig(time_window=WINDOW))
    t2 = time.perf_counter()
    out = {"rows": rows, "rows_clean": cleaned.interactions.num_rows, "read_s": t1 - t0, "clean_s": t2 - t1,
           "total_s": t2 - t0, "read_peak_rss_gb": read_peak, "peak_rss_gb": _peak_gb()}
    if split:
        from components.data.split import SplitConfig, build_sequences

        data = build_sequences(cleaned, res.profiles, SplitConfig(**SPLIT), dataset="taobao")
        t3 = time.perf_counter()
        out.update(split_s=t3 - t2, path_s=t3 - t0, path_peak_rss_gb=_peak_gb(), events=int(data.items.size))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--split", action="store_true", help="also build the split; report the whole path's peak RSS")
    p.add_argument("--keep-file", action="store_true", help="keep the generated file under bench/out/")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one_run(a.child, a.split)))  # noqa: T201 - read by the parent process
        return

    from bench.gen_taobao import generate_taobao_csv

    OUT.mkdir(exist_ok=True)
    path = OUT / f"taobao_{a.rows}.csv"
    try:
        if not path.exists():
            need, free = a.rows * BYTES_PER_ROW + (1 << 30), shutil.disk_usage(OUT).free
            if free < need:
                sys.exit(f"not enough disk for {path}: {need / 1e9:.1f} GB needed (file + 1 GB), "
                         f"{free / 1e9:.1f} GB free")
            t = time.perf_counter()
            generate_taobao_csv(path, a.rows, seed=0)
            print(f"generated {path.name} ({path.stat().st_size / 1e9:.2f} GB) in "  # noqa: T201
                  f"{time.perf_counter() - t:.1f} s")
        file_gb = round(path.stat().st_size / 1e9, 3)
        runs = []
        for _ in range(a.repeats):
            cmd = [sys.executable, "-m", "bench.ingest", "--child", str(path)] + (["--split"] if a.split else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        if not a.keep_file and path.exists():
            path.unlink()
            print(f"deleted {path.name}")  # noqa: T201
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rps = med["rows"] / med["total_s"]
    figures = {
        "rows": int(med["rows"]), "rows_clean": int(med["rows_clean"]), "file_gb": file_gb, "repeats": a.repeats,
        "read_s": round(med["read_s"], 2), "clean_s": round(med["clean_s"], 2), "total_s": round(med["total_s"], 2),
        "rows_per_s": round(rps), "read_peak_rss_gb": round(med["read_peak_rss_gb"], 2),
        "peak_rss_gb": round(med["peak_rss_gb"], 2),
        "extrapolated_100M_s": round(100e6 / rps, 1),
    }
    if a.split:
        figures.update(split_s=round(med["split_s"], 2), path_s=round(med["path_s"], 2),
                       path_rows_per_s=round(med["rows"] / med["path_s"]),
                       path_peak_rss_gb=round(med["path_peak_rss_gb"], 2), events=int(med["events"]))
    figures.update(
        machine=f"{platform.machine()} {platform.processor() or ''} cores={len(os.sched_getaffinity(0))}",
        load_avg=[round(x, 2) for x in os.getloadavg()], date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    stages = ("read_s", "clean_s", "total_s") + (("split_s", "path_s") if a.split else ())
    print(f"\ningest + clean{' + split' if a.split else ''}, Taobao format, {figures['rows']:,} rows "  # noqa: T201
          f"({file_gb} GB), median of {a.repeats} fresh processes")
    print("| stage | seconds |\n|---|---:|")  # noqa: T201
    for k in stages:
        print(f"| {k[:-2]} | {figures[k]} |")  # noqa: T201
    print(f"\nthroughput {rps / 1e6:.2f} M rows/s ingest + clean; peak RSS {figures['peak_rss_gb']} GB"  # noqa: T201
          f" (read alone {figures['read_peak_rss_gb']} GB)")
    if a.split:
        print(f"whole path with split: {figures['path_rows_per_s'] / 1e6:.2f} M rows/s, "  # noqa: T201
              f"peak RSS {figures['path_peak_rss_gb']} GB")
    if a.json:
        print(json.dumps(figures))  # noqa: T201


if __name__ == "__main__":
    main()
