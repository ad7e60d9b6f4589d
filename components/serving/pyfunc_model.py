"""MLflow "model from code": MLflow stores this file (not a pickled object) and runs it on load.

Input: a pandas DataFrame (or a list of dicts) with a column ``items`` (each a list of original item ids, oldest
first) and optionally ``behaviors`` (a list of behavior names per row; default: the target behavior).
A prompt-tuned model also reads each user's profile: a column ``profile`` (a dict per row, field -> value) or one
column per profile field (e.g. ``gender``, ``age``, ``occupation`` on ML-1M); an empty ``items`` list with a
profile is a zero-shot user.  A tuned model that stores only its prompt modules fetches its frozen base's weights
from the registry on load (the version its ``model.json`` names, digest checked).
Params: ``k`` (default 10), ``exclude_seen`` (default: the model's ``history_items`` setting, the one its offline
metrics were measured under: history items are returned for ``candidates`` data such as Taobao, never for
``excluded`` data such as ML-1M).  Output: a DataFrame with ``items`` (top-k original
ids, best first), ``scores`` and ``unknown_items`` (ids the model has never seen, skipped).
"""

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from components.registry.store import fetch_base_weights
from components.serving.recommender import ServedModel


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)  # NaN from a ragged frame


class SequentialRecommenderModel(PythonModel):
    def load_context(self, context):
        a = context.artifacts
        meta = json.loads(Path(a["model"]).read_text())
        base = fetch_base_weights(meta["base"]) if meta.get("base") else None  # a tuned model's frozen base
        self.recommender = ServedModel(a["weights"], a["model"], a["items"], base_weights=base)

    def predict(self, context, model_input, params=None):
        params = params or {}
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "items" not in frame.columns:
            raise ValueError(f"input needs an 'items' column (list of item ids per row); got {list(frame.columns)}")
        histories = [list(h) if h is not None else [] for h in frame["items"]]
        behaviors = None
        if "behaviors" in frame.columns:
            behaviors = [list(b) if b is not None else [] for b in frame["behaviors"]]
        profiles = None
        fields = self.recommender.profile_fields
        if "profile" in frame.columns:
            profiles = [dict(p) if isinstance(p, dict) else None for p in frame["profile"]]
        elif any(f in frame.columns for f in fields):
            profiles = [{f: row.get(f) for f in fields if f in frame.columns and _present(row.get(f))}
                        for row in frame.to_dict("records")]
        rows = self.recommender.recommend(histories, behaviors, k=int(params.get("k", 10)),
                                          exclude_seen=None if params.get("exclude_seen") is None else bool(params["exclude_seen"]),
                                          profiles=profiles)
        return pd.DataFrame(rows)


mlflow.models.set_model(SequentialRecommenderModel())
