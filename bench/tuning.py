"""Cold-start tuning on ML-1M across seeds: pre-train only, fine-tuning, PPR(light), PPR(full), CPL, PoMRec, with
paired confidence intervals against fine-tuning and verdicts on the papers' claims.

    python -m bench.tuning [--methods finetune,ppr_light,ppr_full,cpl,pomrec] [--seeds 0,1,2,3,4]
        [--pretrain-epochs N] [--tune-epochs N] [--raw-path DIR] [--compare-groups cold_fewshot_all,cold_zeroshot]
        [--claims JSON] [--save-ranks DIR] [--json]
    python -m bench.tuning --from-ranks DIR [--compare-groups ...]      # every table again, no training

Each seed: ingest -> validate -> clean -> split -> pre-train with configs/ml1m.<method>.yaml's shared settings (the
split and pre-training sections are the same in every one of them, so one base per seed serves every method), then tune
each method with its own config's ``prompt_tune`` settings and rank the cold test users under both protocols (the
split's stored negatives, 99 as PPR; and full ranking).  The seed replaces the config's seed, so the simulated cold
users, their negatives, the initial weights and the batch order all change.  Popularity and, when
``components.models.history`` exists, the history baseline are ranked on the same instances.

User groups (target sets):

- ``cold_fewshot``: one instance per cold test user, its last target event with the history before it (the
  split's ``cold_test`` few-shot rows); ``cold_zeroshot``: its first target event with no history;
  ``cold_joint``: both together.
- ``cold_fewshot_all``: PPR's few-shot protocol as the paper has it: an instance for *every* target event (every
  rating on ML-1M, every click in the paper) after the user's first, each with the whole history before it, built
  here from the split (``fewshot_all_targets``).  Negatives: the instance that is also a ``cold_fewshot`` row keeps
  that row's stored negatives (so ``cold_fewshot`` is a subset of it, ranked identically); every other instance
  gets ``n_negatives`` distinct items from a draw seeded by the split seed, excluding the target and, when the
  split's ``history_items`` is ``excluded`` (ML-1M), every item in the user's events in the dataset (for
  simulated cold users the part of the history the cut removed is not in the dataset, so those items may be drawn,
  unlike in the split's own negatives); under ``excluded`` an instance whose target already occurs in its own
  history is dropped, as the split does.

Prints, in markdown: one mean +- sd table per protocol and group (AUC, HR@5/10/20/50, NDCG@5/10/20/50); the
comparison table per group of ``--compare-groups`` (default the paper's two: ``cold_fewshot_all`` and
``cold_zeroshot``): every method (and the un-tuned base) against fine-tuning on the same instances, on HR@10 and
NDCG@10 (plus any metric a claim names, e.g. PoMRec's @5) under both protocols, with the paired
stratified-bootstrap 95% CI of the difference and of the relative difference (2,000 resamples of instances within
each seed; seeds weigh the same), the stratified paired t-test p-value, the per-seed differences, the paper's
claim (built-in ``CLAIMS``, or ``--claims``) and the verdict (``components.metrics.significance``; a claim is
judged only under the protocol and group the paper measured it in, where known); and an efficiency table: tuned
parameters as % of the model and of what fine-tuning tunes, and tuning time per epoch (training only, validation
excluded; the median epoch) as % of fine-tuning's on the same data and base.  Every epoch of a method does the
same work, so per-epoch time is the same-epochs-budget comparison; the epochs each method ran before early
stopping are listed too.

``--pretrain-epochs`` / ``--tune-epochs`` cut the configs' budgets (CPU smoke runs).  ``--json`` prints every run
as one JSON line (``{"rows": [...], "comparisons": [...]}``; no per-instance ranks).  ``--save-ranks DIR`` writes
each (seed, method)'s per-instance ranks to ``DIR/seed<k>.<method>.npz`` with the run's JSON row inside, as soon
as the method is done; ``--from-ranks DIR`` prints every table from them without re-training.
"""

from __future__ import annotations

import argparse
import json
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

REPO = Path(__file__).resolve().parents[1]
KS = (5, 10, 20, 50)
COLUMNS = ["auc"] + [f"hr_at_{k}" for k in KS] + [f"ndcg_at_{k}" for k in KS]
GROUPS = {"few-shot, every target after the first (PPR)": "cold_fewshot_all", "few-shot, last target": "cold_fewshot",
          "zero-shot": "cold_zeroshot", "joint (last few-shot + zero-shot)": "cold_joint"}
BASELINE = "finetune"
METRICS = ("hr_at_10", "ndcg_at_10")
REFERENCES = ("popularity", "history")
_PPR = "PPR (CIKM, few-shot, 99 sampled negatives): fine-tuning HIT@10 0.6836 / NDCG@10 0.5255"
#: The papers' claimed relative gains over fine-tuning (../shared/design/methods.md; a range's lower end).  PPR's
#: are its few-shot figures, judged on ``cold_fewshot_all`` with sampled negatives; DPCPL/CPL's and PoMRec's
#: settings are not known here and are judged everywhere (PoMRec's are over multi-interest baselines, not over
#: fine-tuning: a weaker reference than ours).
CLAIMS: dict[str, dict[str, Claim]] = {
    "ppr_full": {"hr_at_10": Claim(0.6889 / 0.6836 - 1, f"{_PPR}; PPR(full) 0.6889 / 0.5290", "sampled",
                                   "cold_fewshot_all"),
                 "ndcg_at_10": Claim(0.5290 / 0.5255 - 1, f"{_PPR}; PPR(full) 0.6889 / 0.5290", "sampled",
                                     "cold_fewshot_all")},
    "ppr_light": {"hr_at_10": Claim(0.6854 / 0.6836 - 1, f"{_PPR}; PPR(light) 0.6854 / 0.5265", "sampled",
                                    "cold_fewshot_all"),
                  "ndcg_at_10": Claim(0.5265 / 0.5255 - 1, f"{_PPR}; PPR(light) 0.6854 / 0.5265", "sampled",
                                      "cold_fewshot_all")},
    "cpl": {"hr_at_10": Claim(0.1020, "DPCPL/CPL: HR@10 +10.20%, NDCG@10 +10.44% over fine-tuning"),
            "ndcg_at_10": Claim(0.1044, "DPCPL/CPL: HR@10 +10.20%, NDCG@10 +10.44% over fine-tuning")},
    "pomrec": {"hr_at_5": Claim(0.0962, "PoMRec: up to +9.62% Recall@5 (= HR@5, one target) and +10.77% NDCG@5 "
                                        "over multi-interest baselines (ML-1M, Movies&TV)"),
               "ndcg_at_5": Claim(0.1077, "PoMRec: up to +9.62% Recall@5 (= HR@5, one target) and +10.77% NDCG@5 "
                                          "over multi-interest baselines (ML-1M, Movies&TV)")},
}


# ---- the paper's few-shot target set ------------------------------------------------------------------------
def _draw_negatives(rng: np.random.Generator, n_items: int, m: int, excluded: np.ndarray) -> np.ndarray:
    """``m`` distinct items of 1..n_items, uniform, none in ``excluded`` (in draw order)."""
    free = n_items - np.unique(excluded[(excluded >= 1) & (excluded <= n_items)]).size
    if free < m:
        raise ValueError(f"cannot draw {m} distinct negatives: only {free} candidate items")
    got: list[int] = []
    have = set(int(x) for x in excluded)
    while len(got) < m:
        for c in rng.integers(1, n_items + 1, size=2 * m + 8):
            c = int(c)
            if c not in have:
                have.add(c)
                got.append(c)
                if len(got) == m:
                    break
    return np.asarray(got, np.int32)


def fewshot_all_targets(data, seed: int):
    """``cold_fewshot_all``: an instance for every target event after the first of each cold test user (see the
    module docstring for the negatives)."""
    from components.data.sequences import TargetSet
    from components.training.evaluation import history_excluded

    excluded_mode = history_excluded(data)
    stored = data.targets["cold_test"]
    m = int(stored.negatives.shape[1])
    reuse = {(int(u), int(p)): i for i, (u, p, z) in enumerate(zip(stored.users, stored.positions, stored.zero_shot))
             if not z}
    is_target = np.isin(data.behaviors, np.asarray(data.target_behaviors))
    rng = np.random.default_rng([int(seed), 20240607])
    users, positions, negatives = [], [], []
    for u in np.asarray(data.cold_test_users, np.int64):
        lo, hi = int(data.offsets[u]), int(data.offsets[u + 1])
        tpos = lo + np.flatnonzero(is_target[lo:hi])
        user_items = data.items[lo:hi]
        for p in tpos[1:]:
            p = int(p)
            target = int(data.items[p])
            if excluded_mode and np.any(data.items[lo:p] == target):
                continue  # a repeat target under history_items=excluded: dropped, as the split does
            users.append(u)
            positions.append(p)
            i = reuse.get((int(u), p))
            if i is not None:
                negatives.append(np.asarray(stored.negatives[i], np.int32))
            else:
                excl = np.append(user_items, target) if excluded_mode else np.asarray([target])
                negatives.append(_draw_negatives(rng, data.n_items, m, excl.astype(np.int64)))
    users_a = np.asarray(users, np.int32)
    pos_a = np.asarray(positions, np.int64)
    ts = TargetSet(users=users_a, positions=pos_a, items=data.items[pos_a].astype(np.int32),
                   negatives=np.stack(negatives) if negatives else np.zeros((0, m), np.int32),
                   zero_shot=np.zeros(len(users_a), bool))
    if hasattr(ts, "repeat") and hasattr(data, "repeat_flags"):
        ts.repeat = data.repeat_flags(ts)
    return ts


# ---- evaluation -----------------------------------------------------------------------------------------------
def group_ranks(model, data, fewshot_all) -> dict[str, dict[str, np.ndarray]]:
    """Per-instance ranks of ``model`` on ``cold_test`` (with its ``zero_shot`` flags) and ``cold_fewshot_all``."""
    from components.training import evaluate

    out = {}
    for name, ts in (("cold_test", data.targets["cold_test"]), ("cold_fewshot_all", fewshot_all)):
        inst: dict = {}
        evaluate(model, data, ts, ks=KS, protocols=("sampled", "full"), per_instance=inst)
        inst["zero_shot"] = np.asarray(ts.zero_shot, bool)[inst["index"]]
        out[name] = inst
    return out


def group_instances(ranks: dict[str, dict[str, np.ndarray]], group: str) -> dict[str, np.ndarray]:
    """The per-instance arrays of one user group (``index`` = rows of its target set)."""
    if group == "cold_fewshot_all":
        return ranks["cold_fewshot_all"]
    inst = ranks["cold_test"]
    keep = {"cold_fewshot": ~inst["zero_shot"], "cold_zeroshot": inst["zero_shot"],
            "cold_joint": np.ones(len(inst["index"]), bool)}[group]
    return {k: v[keep] for k, v in inst.items()}


def group_metrics(ranks: dict[str, dict[str, np.ndarray]], n_neg: int) -> dict[str, float]:
    """``{group}_{protocol}_{metric}`` (the evaluator's names) and ``{group}_n`` for every group."""
    out: dict[str, float] = {}
    for group in GROUPS.values():
        inst = group_instances(ranks, group)
        n = len(inst["index"])
        if n == 0:
            continue
        out[f"{group}_n"] = n
        for protocol in (f"sampled{n_neg}", "full"):
            for metric in ("mrr", *COLUMNS):
                out[f"{group}_{protocol}_{metric}"] = float(values(inst, metric, protocol, n_neg).mean())
    return out


def values(inst: dict[str, np.ndarray], metric: str, protocol: str, n_neg: int) -> np.ndarray:
    if protocol == "full":
        return instance_metric(inst["full_rank"], metric, inst["full_candidates"])
    return instance_metric(inst["sampled_rank"], metric, n_neg + 1)


def reference_models(data) -> dict:
    """The untrained baselines for ``data`` (popularity, history), as the pipeline's evaluation fits them."""
    from components.training.report import baseline_models

    return baseline_models(data)


def save_ranks(directory: str, row: dict, ranks: dict[str, dict[str, np.ndarray]]) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"{name}.{k}": np.asarray(v) for name, inst in ranks.items() for k, v in inst.items()}
    np.savez_compressed(d / f"seed{row['seed']}.{row['method']}.npz", row=np.array(json.dumps(row)), **arrays)


def load_ranks(directory: str) -> tuple[list[dict], dict[tuple[str, int], dict]]:
    rows, ranks = [], {}
    for path in sorted(Path(directory).glob("seed*.npz")):
        with np.load(path, allow_pickle=False) as z:
            row = json.loads(str(z["row"]))
            rk: dict[str, dict[str, np.ndarray]] = {}
            for key in z.files:
                if key != "row":
                    name, field = key.split(".", 1)
                    rk.setdefault(name, {})[field] = z[key]
        rows.append(row)
        ranks[(row["method"], int(row["seed"]))] = rk
    order = {"pretrain-only": 0, BASELINE: 1, "popularity": 98, "history": 99}
    rows.sort(key=lambda r: (r["seed"], order.get(r["method"], 2)))
    return rows, ranks


def run_seed(seed: int, methods: list[str], pretrain_epochs: int | None, raw_path: str | None,
             tune_epochs: int | None = None, save_dir: str | None = None) -> tuple[list[dict], dict]:
    from components.data.prepare import sequences_from_config, step_parameters
    from components.training.pretrain import pretrain_model
    from components.tuning.tune import tune_model

    configs = {m: yaml.safe_load((REPO / "configs" / f"ml1m.{m}.yaml").read_text()) for m in methods}
    data = sequences_from_config(configs[methods[0]], raw_path=raw_path, seed=seed)
    pretrain = step_parameters(configs[methods[0]], "pretrain")
    n_neg = int(data.targets["cold_test"].negatives.shape[1])
    fewshot_all = fewshot_all_targets(data, seed)
    training = {**pretrain["training"], "progress": False}
    if pretrain_epochs is not None:
        training["epochs"] = pretrain_epochs
    rows: list[dict] = []
    ranks: dict[tuple[str, int], dict] = {}

    def done(row: dict, model) -> None:
        rk = group_ranks(model, data, fewshot_all)
        row.update(n_negatives=n_neg, history_items=data.meta.get("history_items", "excluded"),
                   **group_metrics(rk, n_neg))
        rows.append(row)
        ranks[(row["method"], seed)] = rk
        if save_dir:
            save_ranks(save_dir, row, rk)

    t0 = time.perf_counter()
    base = pretrain_model(data, pretrain["model"], training, seed=seed)
    done({"seed": seed, "method": "pretrain-only", "epochs": len(base.history),
          "pretrain_seconds": round(time.perf_counter() - t0, 1), "n_parameters": base.n_parameters,
          "n_cold_test_users": len(data.cold_test_users)}, base.build())
    for method in methods:
        p = configs[method]["steps"]["prompt_tune"]["parameters"]
        train_settings = {**p["training"], "progress": False}
        if tune_epochs is not None:
            train_settings["epochs"] = tune_epochs
        tuned = tune_model(base, data, method, p.get("settings"), train_settings, seed=seed)
        epoch_seconds = [h["seconds"] for h in tuned.history]
        done({"seed": seed, "method": method, "epochs": len(tuned.history), "best_epoch": tuned.best_epoch,
              "train_seconds_per_epoch": statistics.median(epoch_seconds),
              "train_seconds": sum(epoch_seconds), **{k: tuned.info[k] for k in (
                  "n_parameters", "n_tuned_parameters", "tuned_share", "tuned_vs_finetune")}}, tuned.build())
        print(f"seed {seed} {method}: few-shot-all sampled{n_neg} HR@10 "  # noqa: T201
              f"{rows[-1][f'cold_fewshot_all_sampled{n_neg}_hr_at_10']:.4f}", flush=True)
    for who, model in reference_models(data).items():
        done({"seed": seed, "method": who}, model)
    return rows, ranks


# ---- tables ---------------------------------------------------------------------------------------------------
def _cell(values: list[float]) -> str:
    return mean_sd(values)


def tables(rows: list[dict], n_neg: int = 99) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for protocol in (f"sampled{n_neg}", "full"):
        for group, key in GROUPS.items():
            if not any(f"{key}_{protocol}_{COLUMNS[0]}" in r for r in rows):
                continue
            n = sorted({int(r[f"{key}_n"]) for r in rows if f"{key}_n" in r})
            out += [f"\n#### {group} (`{key}`, {n[0]}..{n[-1]} instances a seed), protocol `{protocol}` "
                    f"(mean ± std over seeds {seeds})\n",
                    "| method | " + " | ".join(c.replace("_at_", "@").upper() for c in COLUMNS) + " |",
                    "|---|" + "---:|" * len(COLUMNS)]
            for m in methods:
                rs = [r for r in rows if r["method"] == m]
                cells = [_cell([r[f"{key}_{protocol}_{c}"] for r in rs if f"{key}_{protocol}_{c}" in r])
                         for c in COLUMNS]
                out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += ["\n#### Efficiency (same data and base per seed; per-epoch training time, validation excluded)\n",
            "| method | tuned parameters | % of model | % of fine-tuning's | s / epoch | % of fine-tuning's time "
            "| epochs run (best) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in methods:
        rs = [r for r in rows if r["method"] == m and "train_seconds_per_epoch" in r]
        if not rs:
            continue
        ft = {r["seed"]: r for r in rows if r["method"] == BASELINE}
        ratio = [r["train_seconds_per_epoch"] / ft[r["seed"]]["train_seconds_per_epoch"] for r in rs if r["seed"] in ft]
        if not ratio:
            continue
        epochs = ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs)
        out.append(f"| {m} | {rs[0]['n_tuned_parameters']:,} | {100 * rs[0]['tuned_share']:.2f}% | "
                   f"{100 * rs[0]['tuned_vs_finetune']:.2f}% | "
                   f"{statistics.median(r['train_seconds_per_epoch'] for r in rs):.2f} | "
                   f"{100 * statistics.median(ratio):.0f}% | {epochs} |")
    return "\n".join(out)


def comparisons(rows: list[dict], ranks: dict[tuple[str, int], dict], groups: list[str],
                claims: dict[str, dict[str, Claim]], n_resamples: int = N_RESAMPLES) -> list[ComparisonRow]:
    """Every method (and the un-tuned base) against fine-tuning, per group, paired within each seed's split."""
    seeds = sorted({r["seed"] for r in rows})
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in (BASELINE, *REFERENCES)]
    n_neg = int(rows[0].get("n_negatives", 99))
    out = []
    for group in groups:
        for method in methods:
            strata_seeds = [s for s in seeds if (method, s) in ranks and (BASELINE, s) in ranks]
            if not strata_seeds:
                continue
            claim_set = claims.get(method) or {}
            for metric in dict.fromkeys([*METRICS, *claim_set]):
                for protocol in (f"sampled{n_neg}", "full"):
                    strata = []
                    for s in strata_seeds:
                        a_inst = group_instances(ranks[(method, s)], group)
                        b_inst = group_instances(ranks[(BASELINE, s)], group)
                        _, a, b = align_by_index(a_inst["index"], values(a_inst, metric, protocol, n_neg),
                                                 b_inst["index"], values(b_inst, metric, protocol, n_neg))
                        if a.size:
                            strata.append((a, b))
                    if not strata:
                        continue
                    claim = claim_set.get(metric)
                    out.append(ComparisonRow(
                        method=method, baseline=BASELINE, metric=metric, protocol=protocol, group=group,
                        comparison=compare_stratified(strata, n_resamples=n_resamples, seed=0),
                        claim=claim if claim is not None and claim.applies(protocol, group) else None,
                        extra={"seeds": strata_seeds}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--methods", default="finetune,ppr_light,ppr_full,cpl,pomrec")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--pretrain-epochs", type=int, help="override the configs' pre-training epochs (CPU budget)")
    p.add_argument("--tune-epochs", type=int, help="override every method's tuning epochs (CPU budget)")
    p.add_argument("--raw-path", help="ML-1M folder (default: the configs' data/ml-1m)")
    p.add_argument("--compare-groups", default="cold_fewshot_all,cold_zeroshot",
                   help=f"groups of the comparison table, of {','.join(GROUPS.values())}")
    p.add_argument("--claims", help="JSON object or file {method: {metric: relative claim}} added to the built-in "
                                    "papers' claims; 'none' drops them")
    p.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples (default 2000)")
    p.add_argument("--save-ranks", metavar="DIR", help="write each run's per-instance ranks to DIR/*.npz")
    p.add_argument("--from-ranks", metavar="DIR", help="print the tables of a --save-ranks DIR (no training)")
    p.add_argument("--json", action="store_true", help="also print every run as one JSON line")
    a = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    groups = a.compare_groups.split(",")
    unknown = sorted(set(groups) - set(GROUPS.values()))
    if unknown:
        p.error(f"--compare-groups: unknown {unknown}; known {list(GROUPS.values())}")
    if a.from_ranks:
        rows, ranks = load_ranks(a.from_ranks)
        if not rows:
            raise SystemExit(f"no seed*.npz in {a.from_ranks}")
        a.seeds = ",".join(str(s) for s in sorted({r["seed"] for r in rows}))
    else:
        methods = a.methods.split(",")
        if methods[0] != BASELINE and BASELINE in methods:
            methods.remove(BASELINE)
            methods.insert(0, BASELINE)
        rows, ranks = [], {}
        for seed in (int(s) for s in a.seeds.split(",")):
            r, rk = run_seed(seed, methods, a.pretrain_epochs, a.raw_path, a.tune_epochs, a.save_ranks)
            rows += r
            ranks.update(rk)
    n_neg = int(rows[0].get("n_negatives", 99))
    budget = "".join([f", pre-training cut to {a.pretrain_epochs} epochs" if a.pretrain_epochs else "",
                      f", tuning cut to {a.tune_epochs} epochs" if a.tune_epochs else ""])
    print(f"\n### ML-1M cold-start (PPR protocol: configs/ml1m.<method>.yaml), seeds {a.seeds}{budget}")  # noqa: T201
    print(tables(rows, n_neg))  # noqa: T201
    comps = comparisons(rows, ranks, groups, load_claims(a.claims, CLAIMS), n_resamples=a.resamples)
    for group in groups:
        part = [c for c in comps if c.group == group]
        if part:
            print(f"\n#### Against fine-tuning, `{group}`: paired per instance within each seed's split; "  # noqa: T201
                  f"95% CI: stratified bootstrap over seeds ({a.resamples} resamples); p: stratified paired t-test\n")
            print(markdown_table(part))  # noqa: T201
    for s in sorted({c.claim.source for c in comps if c.claim is not None and c.claim.source}):
        print(f"- claim: {s}")  # noqa: T201
    if a.json:
        print(json.dumps({"rows": rows, "comparisons": [c.to_dict() for c in comps]}))  # noqa: T201


if __name__ == "__main__":
    main()
