"""Accuracy of encoders across seeds, with paired confidence intervals against a baseline and verdicts on the papers.

    python -m bench.accuracy --configs configs/taobao.yaml,configs/taobao.ebm.yaml,configs/taobao.end4rec.yaml \\
        [--raw-path PATH] [--seeds 0,1,2,3,4] [--epochs N] [--batch-size B] [--baseline LABEL] [--claims JSON] \\
        [--groups test,test_repeat,test_new] [--save-ranks DIR] [--json]
    python -m bench.accuracy --from-ranks DIR [--configs ...] [--baseline LABEL]   # tables again, no training
    python -m bench.accuracy --from-json FILE... [--from-ranks DIR]                  # (mean +- sd only without ranks)

For every config and seed: ingest -> validate -> clean -> split -> pretrain -> evaluate as the pipeline's steps do with
that config's parameters (``--raw-path`` replaces the config's ``raw_path``; the seed replaces its ``seed``, so the
split, the negatives and the initial weights all change with it).  The test set (warm users' last target events)
is ranked by the model, by popularity and, when ``components.models.history`` exists, by the history baseline
(the user's own items by past-interaction count; evaluated exactly like popularity), under both protocols.  A
config label may end in ``+joint`` to run an END4Rec config with ``training_mode: joint`` (its
``training.epochs`` then apply).  ``--epochs N`` shortens every row to an N-epoch budget (a CPU-sized version of
a GPU-sized config, said in the table's title): it sets ``training.epochs`` to N and scales a guided config's
``stage_epochs`` to add up to N.  ``--batch-size B`` sets every row's batch size (a slice with few warm users gets
one optimizer step an epoch at the full file's 128).  Default seeds: 0..4.

Prints, in markdown:

1. per config, test HR@10 / NDCG@10 under both protocols (``sampled{m}``: against the split's m stored negatives;
   ``full``: against every candidate item, which items are candidates following the split's ``history_items``) as
   mean +- sd over seeds, then the popularity and history rows (once per distinct split);
2. the comparison table (``components.metrics.significance``): every config against the baseline config on the
   same split (``--baseline`` label; default the first config whose model is ``sasrec``, else the first config),
   and every config against the history baseline, on HR@10 and NDCG@10 (plus any metric a claim names) under both
   protocols: ours and the baseline as mean +- sd over seeds, the difference with its paired stratified-bootstrap
   95% CI (2,000 resamples of test instances within each seed; seeds weigh the same), the relative difference
   with its CI, the stratified paired t-test p-value, the per-seed differences, and for a method with a paper
   claim (built-in ``CLAIMS``, or ``--claims``) the claimed relative gain and the verdict (reproduced / not
   reproduced / inconclusive; ``significance.verdict``).  The claims are the papers' figures over *their* best
   baseline on *their* data and protocol (END4Rec: 99 sampled negatives, so its verdict is given on the sampled
   rows of the whole test set only); ours is over SASRec on this split.  ``--groups test,test_repeat,test_new``
   adds the same comparisons on the test targets already in the user's history and on the new ones.

``--json`` prints one JSON line with every run (``{"rows": [...], "comparisons": [...]}``; per-instance ranks are
not in it).  ``--save-ranks DIR`` writes every run's per-instance ranks (model, popularity, history; both
protocols; with each instance's row, user and repeat flag) to ``DIR/<config>.seed<k>.npz`` as soon as the run
ends, with the run's JSON row inside, so that
``--from-ranks DIR`` rebuilds every table without re-training (runs split over several invocations can share one
DIR); ``--from-json FILE...`` takes the runs from saved JSON lines instead (progress lines or the final line) and,
without ``--from-ranks``, prints only the mean +- sd table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from components.metrics.significance import (
    N_RESAMPLES,
    Claim,
    ComparisonRow,
    align_by_index,
    compare_stratified,
    instance_metric,
    load_claims,
    markdown_table,
    mean_sd,
)

#: The papers' claimed relative gains (../shared/design/methods.md), keyed by model name (or config label).
#: A range's lower end is the claim; a claim is judged under the protocol the paper used (END4Rec: sampled).
CLAIMS: dict[str, dict[str, Claim]] = {
    "end4rec": {
        "hr_at_10": Claim(0.0575, "END4Rec: HR@10 +5.75..8.02% over the best baseline (CIKM, IJCAI, Taobao; 99 "
                          "sampled negatives)", protocol="sampled", group="test"),
        "ndcg_at_10": Claim(0.0471, "END4Rec: NDCG@10 +4.71..8.23% over the best baseline (CIKM, IJCAI, Taobao; 99 "
                            "sampled negatives)", protocol="sampled", group="test"),
    },
}
METRICS = ("hr_at_10", "ndcg_at_10")
REFERENCES = ("popularity", "history")  # baselines evaluated beside every model (history only when importable)


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


def reference_models(data) -> dict:
    """The untrained baselines for ``data`` (popularity, history), as the pipeline's evaluation fits them."""
    from components.training.report import baseline_models

    return baseline_models(data)


def split_fingerprint(ts) -> str:
    """Short hash of a target set (users, positions, items, negatives): runs compare only on the same split."""
    h = hashlib.sha1()
    for a in (ts.users, ts.positions, ts.items, ts.negatives):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def run_config(path: str, seed: int, raw_path: str | None, joint: bool = False, epochs: int | None = None,
               batch_size: int | None = None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """One config and seed: the run's JSON row and the per-instance test ranks of every scorer."""
    from components.data.prepare import sequences_from_config, step_parameters
    from components.training import evaluate
    from components.training.pretrain import pretrain_model

    config = yaml.safe_load(open(path))
    data, pretrain = sequences_from_config(config, raw_path=raw_path, seed=seed), step_parameters(config, "pretrain")
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
    ts = data.targets["test"]
    m = ts.negatives.shape[1]
    out = {"config": path + ("+joint" if joint else ""), "seed": seed, "model": trained.architecture,
           "epochs": len(trained.history), "best_epoch": trained.best_epoch, "train_seconds": round(seconds, 1),
           "n_parameters": trained.info["n_parameters"], "test_users": int(len(ts.users)), "n_negatives": int(m),
           "history_items": data.meta.get("history_items", "excluded"), "split": split_fingerprint(ts)}
    ranks: dict[str, dict[str, np.ndarray]] = {}
    for who, scorer in {"model": trained.build(), **reference_models(data)}.items():
        inst: dict = {}
        res = evaluate(scorer, data, "test", protocols=("sampled", "full"), ks=(10,), per_instance=inst)
        if getattr(ts, "repeat", None) is not None:
            inst["repeat"] = np.asarray(ts.repeat, bool)[inst["index"]]
        ranks[who] = inst
        out[f"{who}_test_n"] = int(res["n"])
        for k in (f"sampled{m}_hr_at_10", f"sampled{m}_ndcg_at_10", "full_hr_at_10", "full_ndcg_at_10"):
            out[f"{who}_test_{k}"] = res[k]
    return out, ranks


# ---- per-instance ranks on disk ---------------------------------------------------------------------------------
def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label.removeprefix("configs/")).strip("_")


def save_ranks(directory: str, row: dict, ranks: dict[str, dict[str, np.ndarray]]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{_slug(row['config'])}.seed{row['seed']}.npz"
    arrays = {f"{who}.{k}": np.asarray(v) for who, inst in ranks.items() for k, v in inst.items()}
    np.savez_compressed(path, row=np.array(json.dumps(row)), **arrays)
    return path


def load_ranks(directory: str) -> dict[tuple[str, int], tuple[dict, dict[str, dict[str, np.ndarray]]]]:
    """``(config, seed) -> (row, ranks)`` of every ``*.npz`` that ``save_ranks`` wrote to ``directory``."""
    out = {}
    for path in sorted(Path(directory).glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            row = json.loads(str(z["row"]))
            ranks: dict[str, dict[str, np.ndarray]] = {}
            for key in z.files:
                if key != "row":
                    who, field = key.split(".", 1)
                    ranks.setdefault(who, {})[field] = z[key]
        out[(row["config"], int(row["seed"]))] = (row, ranks)
    return out


# ---- tables ---------------------------------------------------------------------------------------------------
def values(inst: dict[str, np.ndarray], metric: str, protocol: str, n_negatives: int) -> np.ndarray:
    if protocol == "full":
        return instance_metric(inst["full_rank"], metric, inst["full_candidates"])
    return instance_metric(inst["sampled_rank"], metric, n_negatives + 1)


def group_instances(inst: dict[str, np.ndarray], group: str) -> dict[str, np.ndarray]:
    """The instances of ``test`` (all), ``test_repeat`` (target already in the user's history) or ``test_new``."""
    if group == "test":
        return inst
    if "repeat" not in inst:
        raise KeyError(f"group {group!r}: these ranks carry no repeat flags (split made before they existed)")
    keep = inst["repeat"] if group == "test_repeat" else ~inst["repeat"]
    return {k: v[keep] for k, v in inst.items()}


def comparisons(rows: list[dict], ranks: dict[tuple[str, int], dict], configs: list[str], baseline: str,
                claims: dict[str, dict[str, Claim]], n_resamples: int = N_RESAMPLES,
                groups: tuple[str, ...] = ("test",)) -> tuple[list[ComparisonRow], list[str]]:
    """Every config against ``baseline`` and every config against the history baseline, paired within each seed's
    split, stratified over seeds, for each of ``groups`` (``test``, ``test_repeat``, ``test_new``).  Returns the
    rows and notes (pairs skipped, and why)."""
    by = {(r["config"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    notes: list[str] = []
    if not ranks:
        return [], notes
    pairs = [(c, baseline, "model") for c in configs if c != baseline]
    if any("history" in ranks.get((c, s), {}) for c in configs for s in seeds):
        pairs += [(c, c, "history") for c in configs]
    out: list[ComparisonRow] = []
    for method, base_cfg, base_who in pairs:
        strata_seeds = []
        for s in seeds:
            rm, rb = by.get((method, s)), by.get((base_cfg, s))
            if rm is None or rb is None:
                continue
            if (method, s) not in ranks or (base_cfg, s) not in ranks or base_who not in ranks[(base_cfg, s)]:
                notes.append(f"{method} vs {base_cfg} seed {s}: no per-instance ranks")
                continue
            if rm.get("split") != rb.get("split"):
                notes.append(f"{method} vs {base_cfg} seed {s}: different splits (config split settings differ); "
                             "not compared")
                continue
            strata_seeds.append(s)
        if not strata_seeds:
            continue
        model_name = by[(method, strata_seeds[0])]["model"]
        base_label = "history" if base_who == "history" else by[(base_cfg, strata_seeds[0])]["model"]
        claim_set = {} if base_who == "history" else (claims.get(method) or claims.get(model_name) or {})
        m = int(by[(method, strata_seeds[0])].get("n_negatives", 99))
        metrics = list(dict.fromkeys([*METRICS, *claim_set]))
        for group in groups:
            for metric in metrics:
                claim = claim_set.get(metric)
                for protocol in (f"sampled{m}", "full"):
                    strata = []
                    for s in strata_seeds:
                        a_inst = group_instances(ranks[(method, s)]["model"], group)
                        b_inst = group_instances(ranks[(base_cfg, s)][base_who], group)
                        _, a, b = align_by_index(a_inst["index"], values(a_inst, metric, protocol, m),
                                                 b_inst["index"], values(b_inst, metric, protocol, m))
                        if a.size:
                            strata.append((a, b))
                    if not strata:
                        continue
                    comp = compare_stratified(strata, n_resamples=n_resamples, seed=0)
                    out.append(ComparisonRow(
                        method=f"{method} ({model_name})", baseline=base_label if base_who == "history"
                        else f"{base_cfg} ({base_label})", metric=metric, protocol=protocol, comparison=comp,
                        claim=claim if claim is not None and claim.applies(protocol, group) else None,
                        group=group, extra={"seeds": strata_seeds}))
    return out, notes


def mean_table(rows: list[dict], configs: list[str], title: str) -> str:
    metric_keys = [k.removeprefix("model_test_") for k in rows[0]
                   if k.startswith("model_test_") and k != "model_test_n"]
    heads = [k.replace("_at_", "@").replace("_hr", " HR").replace("_ndcg", " NDCG") for k in metric_keys]
    out = [f"\n{title}\n", "| row | model | seeds | " + " | ".join(heads) + " | epochs | train s |",
           "|---|---|---:|" + "---:|" * (len(heads) + 2)]
    for c in configs:
        rs = [r for r in rows if r["config"] == c]
        if rs:
            cells = [mean_sd([r[f"model_test_{k}"] for r in rs]) for k in metric_keys]
            out.append(f"| {c} | {rs[0]['model']} | {len(rs)} | " + " | ".join(cells)
                       + f" | {statistics.mean(r['epochs'] for r in rs):.0f}"
                       f" | {statistics.mean(r['train_seconds'] for r in rs):.0f} |")
    seen: set = set()
    for c in configs:  # the references once per distinct split (configs with the same split settings share them)
        rs = [r for r in rows if r["config"] == c]
        key = tuple(sorted((r["seed"], r.get("split")) for r in rs))
        if not rs or key in seen:
            continue
        seen.add(key)
        for who in REFERENCES:
            if f"{who}_test_{metric_keys[0]}" not in rs[0]:
                continue
            cells = [mean_sd([r[f"{who}_test_{k}"] for r in rs]) for k in metric_keys]
            label = who if len(seen) == 1 else f"{who} ({c}'s split)"
            out.append(f"| {label} | - | {len(rs)} | " + " | ".join(cells) + " | - | - |")
    return "\n".join(out)


def default_baseline(rows: list[dict], configs: list[str]) -> str:
    for c in configs:
        if any(r["config"] == c and r["model"] == "sasrec" for r in rows):
            return c
    return configs[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", help="comma-separated config paths (a label may end in +joint); with --from-json "
                                     "/ --from-ranks: which rows to show, in this order (default: all)")
    p.add_argument("--raw-path")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", type=int, help="epoch budget for every row (guided stages scaled to it)")
    p.add_argument("--batch-size", type=int, help="batch size for every row (small slices: more steps an epoch)")
    p.add_argument("--baseline", help="config label every other config is compared with (default: the first "
                                      "config whose model is sasrec, else the first config)")
    p.add_argument("--claims", help="JSON object or file {method: {metric: relative claim}} added to the built-in "
                                    "papers' claims (method = model name or config label); 'none' drops them")
    p.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples (default 2000)")
    p.add_argument("--groups", default="test", help="target groups of the comparison table: test (every warm "
                                                    "test target), test_repeat, test_new (comma-separated)")
    p.add_argument("--save-ranks", metavar="DIR", help="write each run's per-instance ranks to DIR/*.npz")
    p.add_argument("--json", action="store_true")
    p.add_argument("--from-json", nargs="+", metavar="FILE",
                   help="only print the tables of runs saved earlier (the JSON lines a --json run printed; runs of "
                        "one config/seed split over several invocations can be put together this way)")
    p.add_argument("--from-ranks", metavar="DIR", help="take runs and per-instance ranks from a --save-ranks DIR")
    a = p.parse_args()
    rows: list[dict] = []
    ranks: dict[tuple[str, int], dict] = {}
    if a.from_json or a.from_ranks:
        saved = load_ranks(a.from_ranks) if a.from_ranks else {}
        if a.from_json:
            found: dict[tuple[str, int], dict] = {}
            for path in a.from_json:
                for line in open(path):
                    if line.startswith('{"config"'):
                        r = json.loads(line)
                        found[(r["config"], r["seed"])] = r
                    elif line.startswith('{"rows"'):
                        found.update({(r["config"], r["seed"]): r for r in json.loads(line)["rows"]})
            rows = list(found.values())
        else:
            rows = [row for row, _ in saved.values()]
        ranks = {key: rk for key, (_, rk) in saved.items()}
        if not rows:
            raise SystemExit("no saved runs found")
        seeds = sorted({r["seed"] for r in rows})
        configs = a.configs.split(",") if a.configs else list(dict.fromkeys(r["config"] for r in rows))
    else:
        if not a.configs:
            p.error("--configs is required unless --from-json / --from-ranks")
        configs = a.configs.split(",")
        seeds = [int(s) for s in a.seeds.split(",")]
        for seed in seeds:  # seed-major: a cut-short run still covers every config
            for c in configs:
                row, rk = run_config(c.removesuffix("+joint"), seed, a.raw_path, joint=c.endswith("+joint"),
                                     epochs=a.epochs, batch_size=a.batch_size)
                rows.append(row)
                ranks[(row["config"], seed)] = rk
                if a.save_ranks:
                    save_ranks(a.save_ranks, row, rk)
                print(json.dumps(row), flush=True)  # noqa: T201 - progress, one line a run

    budget = (f", every row {a.epochs} epochs" if a.epochs else "") + (
        f", batch {a.batch_size}" if a.batch_size else "")
    title = f"test set, mean ± sd over seeds {','.join(map(str, seeds))}{budget}"
    print(mean_table(rows, configs, title))  # noqa: T201
    baseline = a.baseline or default_baseline(rows, configs)
    claims = load_claims(a.claims, CLAIMS)
    groups = tuple(a.groups.split(","))
    unknown = sorted(set(groups) - {"test", "test_repeat", "test_new"})
    if unknown:
        p.error(f"--groups: unknown {unknown}; use test, test_repeat, test_new")
    comps, notes = comparisons(rows, ranks, configs, baseline, claims, n_resamples=a.resamples, groups=groups)
    if comps:
        print(f"\nagainst {baseline} and the history baseline, paired per test instance within each "  # noqa: T201
              "seed's split; "
              f"95% CI: stratified bootstrap over seeds ({a.resamples} resamples); p: stratified paired t-test; "
              "claims: the papers' relative gains (lower end of a range)\n")
        print(markdown_table(comps, with_group=len(groups) > 1))  # noqa: T201
        sources = {c.claim.source for c in comps if c.claim is not None and c.claim.source}
        for s in sorted(sources):
            print(f"- claim: {s}")  # noqa: T201
    elif not ranks:
        print("\n(no per-instance ranks: pass --from-ranks DIR of a --save-ranks run for confidence "  # noqa: T201
              "intervals)")
    for n in notes:
        print(f"- note: {n}")  # noqa: T201
    if a.json:
        print(json.dumps({"rows": rows, "comparisons": [c.to_dict() for c in comps]}))  # noqa: T201


if __name__ == "__main__":
    main()
