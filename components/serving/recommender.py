"""The served model, ``ServedModel`` (around a torch ``components.models.base.Recommender``): original item ids
in, top-K original item ids out.

Kept free of MLflow so it can be tested and used on its own; ``pyfunc_model.py`` wraps it for MLflow.
Files it reads (the registered model's artifacts): ``weights.safetensors``, ``model.json`` (architecture,
config, behavior names, max length) and ``items.json`` (original item id of each contiguous id, index 0 = pad).

The request contract (:meth:`ServedModel.recommend`; a request that breaks it raises :class:`RequestError`, a
``ValueError`` whose one-line message names the row and the rule):

- each history is a list of item ids (str or int), oldest first, at most ``max_history`` (default
  :data:`MAX_HISTORY`) long; a string is refused, not read as a list of characters.  The model reads the last
  ``max_len`` known items; every known item counts as seen.  Behaviors, when given, are a list of the same length.
- ``k`` is an integer >= 1.  A row gets ``min(k, max_k, items left)`` items: ``max_k`` (default :data:`MAX_K`;
  a request may raise it, the catalogue caps it anyway) caps one answer, and the items left are the catalogue less
  the row's seen items when they are excluded.  So a huge ``k`` returns every item left, best first, and never the
  padding id, an excluded item or a non-finite score; rows may then differ in length.
- unknown item ids are skipped and listed (``unknown_items``); a non-empty history of unknown items only gets the
  zero-shot answer and is flagged ``all_unknown``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from components.models.registry import build_model
from components.models.trained import from_stored
from components.models.tuned.profiles import encode_requests

#: Longest history a request may send (the model reads only its last ``max_len`` known items; the rest only counts
#: as seen).  Longer ones are refused rather than cut, so a caller never gets an answer to a history it did not send.
MAX_HISTORY = 10_000
#: Most items one answer holds unless the request raises ``max_k`` (the catalogue caps it in any case).
MAX_K = 1_000


class RequestError(ValueError):
    """A request the served model refuses (the caller's to fix); the message is one line naming the row and rule."""


def weights_digest(state_dict: dict) -> str:
    """sha256 over a state dict's names and tensor bytes (in name order): identifies a set of weights."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode() + t.numpy().tobytes())
    return h.hexdigest()


def write_bundle(directory: Path, *, architecture: str, config: dict, state_dict: dict, behavior_names: list[str],
                 target_behaviors: list[str], item_ids: list[str], base: dict | None = None,
                 history_items: str = "excluded", method: str | None = None) -> dict[str, str]:
    """Write the files a recommender needs; returns MLflow's ``artifacts`` mapping (name -> path).

    ``base`` (a prompt-tuned model with a frozen base): ``state_dict`` then holds only the tuned modules' tensors
    and ``base`` names the registered version whose weights are the rest (``name``, ``version``, ``sha256``);
    the loader fetches them from the registry and checks the digest.  ``history_items`` (the split's setting the
    model was evaluated under) sets the served default of ``exclude_seen``, so the served answers are the ones
    the offline figures measured."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, directory / "weights.safetensors")
    meta = {"architecture": architecture, "method": method, "config": config, "behavior_names": behavior_names,
            "target_behaviors": target_behaviors, "history_items": history_items}
    if base is not None:
        meta["base"] = base
    (directory / "model.json").write_text(json.dumps(meta, indent=1))
    (directory / "items.json").write_text(json.dumps(item_ids))
    return {"weights": str(directory / "weights.safetensors"), "model": str(directory / "model.json"),
            "items": str(directory / "items.json")}


class ServedModel:
    """Top-K from a bundle.  A tuned model (``method`` set) also reads each user's profile; when its bundle
    stores only the tuned modules (frozen base), ``base_weights`` is the base version's weights file."""

    def __init__(self, weights: str | Path, model_json: str | Path, items_json: str | Path, device: str = "cpu",
                 base_weights: str | Path | None = None, max_history: int = MAX_HISTORY):
        if not _is_int(max_history) or max_history < 1:
            raise ValueError(f"max_history must be an integer >= 1; got {max_history!r}")
        self.max_history = int(max_history)
        meta = json.loads(Path(model_json).read_text())
        self.behavior_names: list[str] = meta["behavior_names"]
        self.default_behavior = meta["target_behaviors"][-1]
        #: Served default of ``exclude_seen``: as evaluated (bundles from before the setting excluded history).
        self.history_items: str = meta.get("history_items", "excluded")
        self.exclude_seen_default = self.history_items == "excluded"
        config = meta["config"]
        architecture, method = from_stored(meta["architecture"], config, meta.get("method"))
        self.model = build_model(architecture, config, method)
        self.max_len = int(self.model.max_len)
        state = load_file(str(weights))
        if meta.get("base"):
            if base_weights is None:
                raise ValueError(f"{method or architecture} stores only its tuned modules: it needs the weights of base "
                                 f"{meta['base'].get('name')} v{meta['base'].get('version')} (base_weights=)")
            base_state = load_file(str(base_weights))
            digest = weights_digest(base_state)
            if meta["base"].get("sha256") and digest != meta["base"]["sha256"]:
                raise ValueError(f"base weights digest {digest[:12]} does not match the one the model was tuned on "
                                 f"({meta['base']['sha256'][:12]}): wrong base version")
            state = {**{f"base.{k}": v for k, v in base_state.items()}, **state}
        self.model.load_state_dict(state)
        self.profile_fields: list[str] = list(config.get("profile_fields") or []) if self.model.uses_profiles else []
        self.profile_vocab: list[list[str]] = list(config.get("profile_vocab") or [])
        self.model.to(device).eval()
        self.device = device
        self.item_ids: list[str] = json.loads(Path(items_json).read_text())
        self.index = {str(v): i for i, v in enumerate(self.item_ids) if i > 0}

    @property
    def n_items(self) -> int:
        """Real items in the catalogue (the padding id not counted)."""
        return len(self.item_ids) - 1

    def check_request(self, histories, behaviors=None, k=10, max_k=MAX_K) -> int:
        """Check a request against the contract (module docstring); returns the largest answer length it allows,
        ``min(k, max_k)``.  Raises :class:`RequestError` naming the first broken rule."""
        if not _is_int(k) or k < 1:
            raise RequestError(f"k must be an integer >= 1; got {k!r}")
        if not _is_int(max_k) or max_k < 1:
            raise RequestError(f"max_k must be an integer >= 1; got {max_k!r}")
        if not isinstance(histories, (list, tuple)):
            raise RequestError(f"histories must be a list of histories (one list of item ids per row); "
                               f"got {type(histories).__name__}")
        if behaviors is not None and len(behaviors) != len(histories):
            raise RequestError(f"{len(histories)} histories but {len(behaviors)} behavior lists")
        for r, hist in enumerate(histories):
            _check_list(hist, r, "items", self.max_history)
            bad = next((i for i in hist if not (isinstance(i, (str, np.integer)) or _is_int(i))), None)
            if bad is not None:
                raise RequestError(f"row {r}: item ids must be strings or integers; got {bad!r} "
                                   f"({type(bad).__name__})")
            if behaviors is not None:
                _check_list(behaviors[r], r, "behaviors", self.max_history)
                if len(behaviors[r]) != len(hist):
                    raise RequestError(f"row {r}: {len(hist)} items but {len(behaviors[r])} behaviors")
                unknown = sorted({str(b) for b in behaviors[r] if b not in self.behavior_names})
                if unknown:
                    raise RequestError(f"row {r}: unknown behavior(s) {unknown}; known: {self.behavior_names}")
        return int(min(k, max_k, self.n_items))

    @torch.no_grad()
    def recommend(self, histories: list[list], behaviors: list[list[str]] | None = None, k: int = 10,
                  exclude_seen: bool | None = None, profiles: list[dict | None] | None = None,
                  max_k: int = MAX_K) -> list[dict]:
        """Top items per history (oldest first), under the contract in the module docstring: at most
        ``min(k, max_k)`` real items per row, fewer when fewer are left after exclusions, each with a finite score.
        ``exclude_seen`` None follows the model's ``history_items`` (history items are answers for
        ``candidates``, never for ``excluded``).  Unknown item ids are skipped and reported (``unknown_items``); an
        empty history is a zero-shot request and gets the model's answer for no history (for SASRec:
        popular-ish items; for a tuned model: its answer for the user's profile), and so does a history of
        unknown items only, flagged ``all_unknown``.  ``profiles``: one dict (field -> value) per row, read by
        tuned models (a missing field or value they never saw counts as unknown)."""
        limit = self.check_request(histories, behaviors, k, max_k)
        n = len(histories)
        items = np.zeros((n, self.max_len), np.int64)
        behs = np.zeros((n, self.max_len), np.int64)
        unknown: list[list[str]] = []
        seen: list[list[int]] = []  # every known history item of each row, not only the window the model reads
        for r, hist in enumerate(histories):
            names = behaviors[r] if behaviors is not None else [self.default_behavior] * len(hist)
            pairs = [(self.index.get(str(i)), b) for i, b in zip(hist, names)]
            unknown.append([str(i) for i, (c, _) in zip(hist, pairs) if c is None])
            pairs = [(c, self.behavior_names.index(b) + 1) for c, b in pairs if c is not None]
            seen.append([c for c, _ in pairs])
            pairs = pairs[-self.max_len:]
            if pairs:
                items[r, -len(pairs):] = [c for c, _ in pairs]
                behs[r, -len(pairs):] = [b for _, b in pairs]
        profile_codes = None
        if self.profile_fields:
            if profiles is not None and len(profiles) != n:
                raise RequestError(f"{n} histories but {len(profiles)} profiles")
            profile_codes = encode_requests(list(profiles) if profiles is not None else [None] * n,
                                            self.profile_fields, self.profile_vocab)
        seen_rows = np.asarray([r for r, s in enumerate(seen) for _ in s], np.int64)
        seen_items = np.asarray([c for s in seen for c in s], np.int64)
        top = self.top_k(items, behs, limit, exclude_seen=exclude_seen, seen=(seen_rows, seen_items),
                         profile_codes=profile_codes)
        values, indices = top.values.cpu().numpy(), top.indices.cpu().numpy()
        out = []
        for r in range(n):
            # top_k fills a row with excluded items (-inf) once fewer than ``limit`` are left: never answers
            keep = np.isfinite(values[r]) & (indices[r] > 0)
            out.append({"items": [self.item_ids[i] for i in indices[r][keep].tolist()],
                        "scores": [float(s) for s in values[r][keep]],
                        "unknown_items": unknown[r], "all_unknown": bool(unknown[r]) and not seen[r]})
        return out

    @torch.no_grad()
    def top_k(self, items: np.ndarray, behaviors: np.ndarray, k: int, *, exclude_seen: bool | None = None,
              seen: tuple[np.ndarray, np.ndarray] | None = None,
              profile_codes: np.ndarray | None = None) -> torch.return_types.topk:
        """The scoring core of :meth:`recommend` on the model's own ids: ``items`` / ``behaviors`` [n, max_len]
        (right-aligned contiguous ids, 0 = padding), ``seen`` = (row, item id) pairs of every history item (read
        when ``exclude_seen``; None follows the model's ``history_items``), ``profile_codes`` [n, n_fields] for a
        model that reads profiles.  Returns torch's topk (``values``, ``indices``) over contiguous item ids; the
        padding id never appears, an excluded item only as -inf when fewer than ``k`` items are left."""
        if self.profile_fields and profile_codes is None:
            profile_codes = np.zeros((len(items), len(self.profile_fields)), np.int64)  # every field unknown
        codes = None if profile_codes is None else torch.as_tensor(profile_codes, dtype=torch.long,
                                                                    device=self.device)
        scores = self.model.score_all(torch.as_tensor(items, dtype=torch.long, device=self.device),
                                      torch.as_tensor(behaviors, dtype=torch.long, device=self.device),
                                      codes).float()
        scores[:, 0] = -torch.inf
        if exclude_seen is None:
            exclude_seen = self.exclude_seen_default
        if exclude_seen and seen is not None and len(seen[0]):
            scores[torch.as_tensor(seen[0], dtype=torch.long, device=self.device),
                   torch.as_tensor(seen[1], dtype=torch.long, device=self.device)] = -torch.inf
        return torch.topk(scores, k, dim=1)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_list(value, row: int, what: str, cap: int) -> None:
    """A row's ``items`` / ``behaviors`` must be a list (a string would read as its characters), at most ``cap``."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise RequestError(f"row {row}: {what} must be a list of {'item ids' if what == 'items' else 'names'}; "
                           f"got {type(value).__name__} {_short(value)}")
    if len(value) > cap:
        raise RequestError(f"row {row}: {len(value)} {what}, more than the {cap} a request may send "
                           "(send the most recent ones)")


def _short(value, width: int = 40) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= width else text[:width - 3] + "..."


def example_request(item_ids: list[str], behavior: str, profile_fields: list[str] = (),
                    profile_vocab: list[list[str]] = ()) -> pd.DataFrame:
    """A small valid request (the registered model's input example): one user with up to three real items, each
    with ``behavior``, and for a model that reads profiles one known value of each field."""
    items = [str(i) for i in item_ids[1:4]]
    row = {"items": [items], "behaviors": [[behavior] * len(items)]}
    for field, values in zip(profile_fields, profile_vocab):
        row[field] = [str(values[0]) if len(values) else None]
    return pd.DataFrame(row)
