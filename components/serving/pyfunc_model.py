"""MLflow "model from code": MLflow stores this file (not a pickled object) and runs it on load.

Input: a pandas DataFrame (or a list of dicts) with a column ``items`` (each a list of original item ids, oldest
first) and optionally ``behaviors`` (a list of behavior names per row; default: the target behavior).
Params: ``k`` (default 10), ``exclude_seen`` (default True).  Output: a DataFrame with ``items`` (top-k original
ids, best first), ``scores`` and ``unknown_items`` (ids the model has never seen, skipped).
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from components.serving.recommender import Recommender


class SequentialRecommenderModel(PythonModel):
    def load_context(self, context):
        a = context.artifacts
        self.recommender = Recommender(a["weights"], a["model"], a["items"])

    def predict(self, context, model_input, params=None):
        params = params or {}
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "items" not in frame.columns:
            raise ValueError(f"input needs an 'items' column (list of item ids per row); got {list(frame.columns)}")
        histories = [list(h) if h is not None else [] for h in frame["items"]]
        behaviors = None
        if "behaviors" in frame.columns:
            behaviors = [list(b) if b is not None else [] for b in frame["behaviors"]]
        rows = self.recommender.recommend(histories, behaviors, k=int(params.get("k", 10)),
                                          exclude_seen=bool(params.get("exclude_seen", True)))
        return pd.DataFrame(rows)


mlflow.models.set_model(SequentialRecommenderModel())
