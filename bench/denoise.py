"""Controlled-noise check of END4Rec's hard noise eliminator on the real Taobao head.

    python -m bench.denoise --data ../shared/datasets/taobao_userbehavior_head [--rate 0.2] [--seeds 0,1,2] [--json]

Injects random click events ("mis-clicks": items drawn in proportion to their counts, at uniform times inside
each user's span) at ``--rate`` of each user's events, cleans (window, 5-core users, 3-core items) and splits
(every behavior a target), trains END4Rec with guided training, and reports the share of injected and of original
events its hard noise eliminator drops (training prefixes of warm users; deterministic decisions and expected
training-time drops), the eliminator's learned fit weight and behavior preferences, and the test sampled-99
HR@10 / NDCG@10 beside popularity.  ``--model '{"fit_weight": 0}'`` runs the eliminator without the fit term.
"""

from __future__ import annotations

import argparse
import json
import statistics

from components.data.clean import CleanConfig, clean_interactions
from components.data.noise import drop_rates, inject_misclicks, injected_mask
from components.data.readers import read_dataset
from components.data.split import SplitConfig, build_sequences

CLEAN = dict(time_window=("2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00"), min_user_events=5,
             min_item_events=3)
# Every behavior a target, so that the 815 users of the head are warm users (with buys as the only target, 165
# are, and the eliminator gets too few optimizer steps to learn anything).
SPLIT = dict(target_behaviors=None, cold_threshold=10, cold_mode="natural", n_negatives=99)


def noisy_taobao(path: str, rate: float, seed: int):
    raw = read_dataset("taobao", path)
    table, keys = inject_misclicks(raw.interactions, rate, seed=seed)
    data = build_sequences(clean_interactions(table, CleanConfig(**CLEAN)), None, SplitConfig(**SPLIT, seed=seed),
                           dataset="taobao")
    return data, injected_mask(data, keys)


def run(path: str, rate: float, seed: int, stage_epochs: list[int], max_len: int = 50, batch_size: int = 32,
        lr: float = 3e-3, **model_kw) -> dict:
    from components.models import PopularityModel
    from components.models.end4rec import END4Rec, END4RecConfig
    from components.training import TrainConfig, evaluate
    from components.training.pretrain import train_guided

    data, injected = noisy_taobao(path, rate, seed)
    model = END4Rec(END4RecConfig(n_items=data.n_items, n_behaviors=data.n_behaviors, max_len=max_len, hidden=32,
                                  chunks=4, seed=seed, stage_epochs=stage_epochs, **model_kw))
    train_guided(model, data, TrainConfig(epochs=1, batch_size=batch_size, loss="ce", lr=lr, train_on="all", seed=seed, device="cpu",
                                          progress=False, valid_protocols=("sampled",)))
    out = drop_rates(model, data, injected)
    if model.hne is not None:
        out["hne_fit_weight"] = round(float(model.hne.fit_weight), 4)
        out["hne_pref"] = [round(float(v), 4) for v in model.hne.pref[1:]]  # per behavior, padding left out
    metrics = evaluate(model, data, "test", protocols=("sampled",), ks=(10,))
    pop = evaluate(PopularityModel(data.n_items).fit(data), data, "test", protocols=("sampled",), ks=(10,))
    return {**out, "seed": seed, "rate": rate, "injected_share_of_events": float(injected.mean()),
            "test_sampled99_hr_at_10": metrics["sampled99_hr_at_10"],
            "test_sampled99_ndcg_at_10": metrics["sampled99_ndcg_at_10"],
            "popularity_test_sampled99_hr_at_10": pop["sampled99_hr_at_10"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/datasets/taobao_userbehavior_head")
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--stage-epochs", default="8,8,3,5")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--model", default="{}", help="extra END4RecConfig settings as JSON, e.g. '{\"tau\": 0.5}'")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    stages = [int(x) for x in a.stage_epochs.split(",")]
    extra = json.loads(a.model)
    rows = [run(a.data, a.rate, int(s), stages, batch_size=a.batch_size, lr=a.lr, **extra) for s in a.seeds.split(",")]
    print(f"\nEND4Rec hard noise eliminator, Taobao head + {a.rate:.0%} injected mis-clicks, stages {stages}, {extra}")  # noqa: T201
    print("| seed | injected events | dropped: injected | dropped: original | expected drop: injected | "  # noqa: T201
          "expected drop: original | test sampled99 HR@10 | popularity |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")  # noqa: T201
    for r in rows:
        print(f"| {r['seed']} | {r['injected_events']:,} | {r['drop_rate_injected']:.3f} | "  # noqa: T201
              f"{r['drop_rate_original']:.3f} | {r['expected_drop_injected']:.3f} | {r['expected_drop_original']:.3f} | "
              f"{r['test_sampled99_hr_at_10']:.3f} | {r['popularity_test_sampled99_hr_at_10']:.3f} |")
    keys = ("drop_rate_injected", "drop_rate_original", "expected_drop_injected", "expected_drop_original")
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    print("\nmedians: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))  # noqa: T201
    if a.json:
        print(json.dumps({"rows": rows, "median": med, "stage_epochs": stages}))  # noqa: T201


if __name__ == "__main__":
    main()
