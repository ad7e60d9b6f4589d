"""Seeded generator of Taobao UserBehavior-format CSV files, for scale tests of the ingest step.

The real file (100M rows) is too large to keep around, so benchmarks and scale tests write a synthetic one of the
same layout: headerless ``user_id,item_id,category_id,behavior_type,timestamp`` with behavior in pv / cart / fav /
buy and Unix-second timestamps.  The shape follows the real 84k-row head: rows grouped by user (the real file is
sorted by user, not by time within a user), about 100 events per user with a long tail (log-normal), item
popularity that is Zipf-like, a behavior mix of roughly 90% pv / 5% cart / 3% fav / 2% buy, timestamps spread over
the official window 2017-11-25..2017-12-03 (UTC+8) with a small share (default 0.05%) outside it, as in the real
data.  Optionally a fraction of timestamps is replaced by text, to exercise the malformed-row path.

Rows are produced in chunks with numpy and written with ``pyarrow.csv.write_csv``, so ten million rows take seconds,
not minutes, and memory stays bounded by one chunk.

Usage: ``python -m bench.gen_taobao --rows 10000000 --out /some/dir/UserBehavior.csv --seed 0``
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

logger = logging.getLogger(__name__)

#: 2017-11-25 00:00:00 and 2017-12-03 23:59:59 at UTC+8, as Unix seconds (the dataset's official window).
WINDOW_START = 1_511_539_200
WINDOW_END = 1_512_316_799
BEHAVIOR_CODES = ("pv", "cart", "fav", "buy")


@dataclass
class TaobaoGenConfig:
    rows: int = 1_000_000
    seed: int = 0
    mean_events_per_user: float = 100.0  # real head: mean 104, median 78
    n_items: int | None = None  # None -> scales with rows like the real file (4.16M items per 100M rows), >= 1000
    n_categories: int = 9_439
    behavior_mix: tuple[float, float, float, float] = (0.895, 0.055, 0.03, 0.02)
    outside_window_fraction: float = 0.0005
    corrupt_timestamp_fraction: float = 0.0  # share of rows whose timestamp is replaced by text
    item_zipf_exponent: float = 1.1
    chunk_rows: int = 2_000_000


def _user_counts(rng: np.random.Generator, rows: int, mean: float) -> np.ndarray:
    """Events per user: log-normal (long tail like the real head), rescaled so the counts sum to ``rows``."""
    sigma = 0.8
    mu = np.log(mean) - sigma**2 / 2
    n_users = max(1, int(round(rows / mean)))
    counts = np.maximum(1, np.round(rng.lognormal(mu, sigma, n_users))).astype(np.int64)
    # Fix the total exactly: trim or pad the largest users, which changes the shape least.
    diff = rows - int(counts.sum())
    while diff != 0:
        order = np.argsort(-counts)
        k = min(abs(diff), len(counts))
        step = np.sign(diff)
        take = order[:k]
        if step < 0:
            take = take[counts[take] > 1]
            if len(take) == 0:  # all users at 1 event: drop users instead
                counts = counts[: rows]
                break
        counts[take] += step
        diff -= int(step) * len(take)
    return counts


def _zipf_ranks(rng: np.random.Generator, n: int, n_items: int, exponent: float) -> np.ndarray:
    """Item ranks 0..n_items-1 drawn with probability ~ 1 / (rank + 1) ** exponent (inverse-CDF on a grid)."""
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** (-exponent))
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(n), side="right").clip(0, n_items - 1)


def generate_taobao_csv(out: str | Path, rows: int, *, seed: int = 0, corrupt_timestamp_fraction: float = 0.0,
                        cfg: TaobaoGenConfig | None = None) -> Path:
    """Write ``rows`` Taobao-format rows to ``out`` (headerless CSV) and return the path.

    Same seed and config -> byte-identical file.  ``corrupt_timestamp_fraction`` of the rows get a non-numeric
    timestamp (e.g. ``ts_err``), chosen at random with the same seed.
    """
    cfg = cfg or TaobaoGenConfig()
    cfg = TaobaoGenConfig(**{**cfg.__dict__, "rows": rows, "seed": seed,
                             "corrupt_timestamp_fraction": corrupt_timestamp_fraction})
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if not 0.0 <= cfg.corrupt_timestamp_fraction <= 1.0:
        raise ValueError(f"corrupt_timestamp_fraction must be in [0, 1], got {cfg.corrupt_timestamp_fraction}")
    rng = np.random.default_rng(cfg.seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    counts = _user_counts(rng, rows, cfg.mean_events_per_user)
    # Sparse, increasing user ids like the real file (ids up to ~1.02M for 988k users).
    user_ids = np.cumsum(rng.integers(1, 3, len(counts))).astype(np.int64)
    n_items = cfg.n_items or max(1000, int(rows * 4_162_024 / 100_150_807))
    # Item ids: a random injective map from popularity rank to an id in 1..~1.24 * n_items.
    item_of_rank = rng.choice(int(n_items * 1.24) + 1, size=n_items, replace=False).astype(np.int64) + 1
    category_of_rank = rng.integers(1, 5_162_429, cfg.n_categories)[rng.integers(0, cfg.n_categories, n_items)]
    user_rows = np.repeat(user_ids, counts)
    mix = np.asarray(cfg.behavior_mix, dtype=np.float64)
    mix = mix / mix.sum()
    behavior_dict = pa.array(BEHAVIOR_CODES, pa.string())

    write_opts = pcsv.WriteOptions(include_header=False, quoting_style="none")
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("category_id", pa.int64()),
                        ("behavior_type", pa.dictionary(pa.int8(), pa.string())),
                        ("timestamp", pa.string() if cfg.corrupt_timestamp_fraction > 0 else pa.int64())])
    with pcsv.CSVWriter(out, schema, write_options=write_opts) as writer:
        for start in range(0, rows, cfg.chunk_rows):
            n = min(cfg.chunk_rows, rows - start)
            ranks = _zipf_ranks(rng, n, n_items, cfg.item_zipf_exponent)
            behavior = rng.choice(4, size=n, p=mix).astype(np.int8)
            ts = rng.integers(WINDOW_START, WINDOW_END + 1, n)
            outside = rng.random(n) < cfg.outside_window_fraction
            # Outside the window: up to ~30 days before or after, like the stray rows of the real file.
            shift = rng.integers(1, 30 * 86_400, n)
            ts = np.where(outside, np.where(rng.random(n) < 0.5, WINDOW_START - shift, WINDOW_END + shift), ts)
            ts_col: pa.Array = pa.array(ts, pa.int64())
            if cfg.corrupt_timestamp_fraction > 0:
                bad = rng.random(n) < cfg.corrupt_timestamp_fraction
                ts_col = pc.if_else(pa.array(bad), pa.scalar("ts_err"), ts_col.cast(pa.string()))
            batch = pa.record_batch([
                pa.array(user_rows[start:start + n]),
                pa.array(item_of_rank[ranks]),
                pa.array(category_of_rank[ranks]),
                pa.DictionaryArray.from_arrays(pa.array(behavior), behavior_dict),
                ts_col,
            ], schema=schema)
            writer.write_batch(batch)
    logger.info("wrote %s Taobao-format rows to %s (seed %s)", f"{rows:,}", out, cfg.seed)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corrupt-timestamp-fraction", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate_taobao_csv(args.out, args.rows, seed=args.seed,
                        corrupt_timestamp_fraction=args.corrupt_timestamp_fraction)


if __name__ == "__main__":
    main()
