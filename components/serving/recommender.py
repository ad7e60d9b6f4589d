"""The served recommender: original item ids in, top-K original item ids out.

Kept free of MLflow so it can be tested and used on its own; ``pyfunc_model.py`` wraps it for MLflow.
Files it reads (the registered model's artifacts): ``weights.safetensors``, ``model.json`` (architecture,
config, behavior names, max length) and ``items.json`` (original item id of each contiguous id, index 0 = pad).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from components.models.trained import build_model


def write_bundle(directory: Path, *, architecture: str, config: dict, state_dict: dict, behavior_names: list[str],
                 target_behaviors: list[str], item_ids: list[str]) -> dict[str, str]:
    """Write the files a recommender needs; returns MLflow's ``artifacts`` mapping (name -> path)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, directory / "weights.safetensors")
    (directory / "model.json").write_text(json.dumps({
        "architecture": architecture, "config": config, "behavior_names": behavior_names,
        "target_behaviors": target_behaviors}, indent=1))
    (directory / "items.json").write_text(json.dumps(item_ids))
    return {"weights": str(directory / "weights.safetensors"), "model": str(directory / "model.json"),
            "items": str(directory / "items.json")}


class Recommender:
    def __init__(self, weights: str | Path, model_json: str | Path, items_json: str | Path, device: str = "cpu"):
        meta = json.loads(Path(model_json).read_text())
        self.behavior_names: list[str] = meta["behavior_names"]
        self.default_behavior = meta["target_behaviors"][-1]
        self.max_len = int(meta["config"].get("max_len", 200))
        self.model = build_model(meta["architecture"], meta["config"])
        self.model.load_state_dict(load_file(str(weights)))
        self.model.to(device).eval()
        self.device = device
        self.item_ids: list[str] = json.loads(Path(items_json).read_text())
        self.index = {str(v): i for i, v in enumerate(self.item_ids) if i > 0}

    @torch.no_grad()
    def recommend(self, histories: list[list], behaviors: list[list[str]] | None = None, k: int = 10,
                  exclude_seen: bool = True) -> list[dict]:
        """Top-k items per history (oldest first).  Unknown item ids are skipped and reported; an empty history
        is a zero-shot request and gets the model's answer for no history (for SASRec: popular-ish items)."""
        n = len(histories)
        items = np.zeros((n, self.max_len), np.int64)
        behs = np.zeros((n, self.max_len), np.int64)
        unknown: list[list[str]] = []
        for r, hist in enumerate(histories):
            names = behaviors[r] if behaviors is not None else [self.default_behavior] * len(hist)
            if len(names) != len(hist):
                raise ValueError(f"row {r}: {len(hist)} items but {len(names)} behaviors")
            pairs = [(self.index.get(str(i)), b) for i, b in zip(hist, names)]
            unknown.append([str(i) for i, (c, _) in zip(hist, pairs) if c is None])
            bad = [b for b in names if b not in self.behavior_names]
            if bad:
                raise ValueError(f"row {r}: unknown behavior(s) {sorted(set(bad))}; known: {self.behavior_names}")
            pairs = [(c, self.behavior_names.index(b) + 1) for c, b in pairs if c is not None][-self.max_len:]
            if pairs:
                items[r, -len(pairs):] = [c for c, _ in pairs]
                behs[r, -len(pairs):] = [b for _, b in pairs]
        it = torch.as_tensor(items, device=self.device)
        scores = self.model.score_all(it, torch.as_tensor(behs, device=self.device)).float()
        scores[:, 0] = -torch.inf
        if exclude_seen:
            scores.scatter_(1, it, -torch.inf)
        k = min(k, len(self.item_ids) - 1)
        top = torch.topk(scores, k, dim=1)
        out = []
        for r in range(n):
            idx = top.indices[r].tolist()
            out.append({"items": [self.item_ids[i] for i in idx], "scores": [float(s) for s in top.values[r]],
                        "unknown_items": unknown[r]})
        return out
