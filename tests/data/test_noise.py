"""Controlled-noise injection finds exactly its own events again after clean and split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.data.clean import CleanConfig, clean_interactions
from components.data.noise import inject_misclicks, injected_mask
from components.data.readers import read_dataset
from components.data.split import SplitConfig, build_sequences


def test_injected_events_are_counted_and_found_after_clean_and_split(taobao_head):
    raw = read_dataset("taobao", taobao_head).interactions
    noisy, keys = inject_misclicks(raw, 0.2, seed=0)
    users = raw.column("user_id").to_numpy()
    expected = int(np.rint(np.unique(users, return_counts=True)[1] * 0.2).sum())
    assert noisy.num_rows == raw.num_rows + expected and len(keys) == expected
    added = noisy.slice(raw.num_rows)
    assert set(added.column("behavior").to_pylist()) == {"click"}
    # Injected items come from the log (popularity-proportional), injected times from the user's own span.
    assert set(added.column("item_id").to_pylist()) <= set(raw.column("item_id").to_pylist())

    # No k-core and no window: every row survives, so the mask must find every injected event exactly.
    data = build_sequences(clean_interactions(noisy, CleanConfig(drop_duplicates=False)), None,
                           SplitConfig(target_behaviors=None, cold_mode="natural", n_negatives=5, seed=0))
    mask = injected_mask(data, keys)
    assert mask.sum() == expected and mask.size == noisy.num_rows
    again, _ = inject_misclicks(raw, 0.2, seed=0)
    assert again.equals(noisy)  # seeded


def test_rate_must_be_a_share():
    table = pa.table({"user_id": [1], "item_id": [1], "behavior": pa.array(["click"]).dictionary_encode(),
                      "timestamp": [1]})
    for bad in (0.0, 1.0, 1.5):
        try:
            inject_misclicks(table, bad, seed=0)
        except ValueError as e:
            assert "rate" in str(e)
        else:
            raise AssertionError(f"rate {bad} accepted")
