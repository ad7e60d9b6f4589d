"""MLflow "model from code": MLflow stores this file (not a pickled object) and runs it on load.

Input: a pandas DataFrame (or a list of dicts) with a column ``items`` (each a list of original item ids, oldest
first; a missing value is an empty history) and optionally ``behaviors`` (a list of behavior names per row; default:
the target behavior).  A prompt-tuned model also reads each user's profile: a column ``profile`` (a dict per row,
field -> value) or one column per profile field (e.g. ``gender``, ``age``, ``occupation`` on ML-1M); an empty
``items`` list with a profile is a zero-shot user.  A tuned model that stores only its prompt modules fetches its
frozen base's weights from the registry on load (the version its ``model.json`` names, digest checked).
Params: ``k`` (default 10), ``max_k`` (default 1,000: the most items one answer holds), ``exclude_seen`` (default:
the model's ``history_items`` setting, the one its offline metrics were measured under: history items are returned
for ``candidates`` data such as Taobao, never for ``excluded`` data such as ML-1M).  Output: a DataFrame with
``items`` (top original ids, best first), ``scores``, ``unknown_items`` (ids the model has never seen, skipped) and
``all_unknown`` (True when the history had items but none the model knows: the answer is the zero-shot one).

The request contract is ``components.serving.recommender``'s (module docstring): ``k`` >= 1, at most
``min(k, max_k, items left)`` real items a row with finite scores, histories as lists of at most 10,000 items
(environment variable ``MBPROMPT_MAX_HISTORY`` on the serving machine changes the cap).  A request that breaks it
raises :class:`InvalidRequest`: over REST (``mlflow models serve``) an HTTP 400 whose body's ``message`` is one
line naming the row and the rule, with no stack trace.  An unexpected failure is logged with its traceback on the
server and answered with a one-line HTTP 500.
"""

import json
import logging
import os
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from components.registry.integrity import verify_model_dir
from components.registry.store import fetch_base_weights
from components.serving.recommender import MAX_HISTORY, MAX_K, RequestError, ServedModel

logger = logging.getLogger(__name__)
OUTPUT_COLUMNS = ["items", "scores", "unknown_items", "all_unknown"]


class OneLineError(MlflowException):
    """An MlflowException whose message stays one line over REST.

    MLflow's scoring server (``mlflow.pyfunc.scoring_server.invocations``) rewrites the message of an
    MlflowException raised by ``predict`` to ``Failed to predict data '<the whole input frame>'. \\nError: ...``
    before it serialises it: the request echoed back over several lines.  This exception keeps the message it was
    made with (the first one set); the HTTP status follows the error code (INVALID_PARAMETER_VALUE: 400)."""

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE):
        super().__init__(" ".join(str(message).split()), error_code=error_code)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):  # set by MlflowException.__init__; later rewrites are ignored
            self._message = value


class InvalidRequest(OneLineError):
    """A request that breaks the contract: HTTP 400 with a one-line message."""


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN from a ragged frame


def _as_list(value):
    """A cell of ``items`` / ``behaviors`` as a list; anything that is not a sequence is left for the contract
    check to refuse (a string is not read as its characters)."""
    if _missing(value):
        return []
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1):
        return list(value)
    return value


def _max_history() -> int:
    raw = os.environ.get("MBPROMPT_MAX_HISTORY")
    if raw is None:
        return MAX_HISTORY
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"MBPROMPT_MAX_HISTORY must be an integer; got {raw!r}") from None


class SequentialRecommenderModel(PythonModel):
    # predict() has no type hints: the model's explicit signature and our own checks (one-line request errors)
    # describe its input.  MLflow 3 wraps every PythonModel subclass's predict() for type-hint validation and, for
    # one without hints, warns "Add type hints to the `predict` method ..." each time this file runs (on every
    # registration and every load); this attribute, which MLflow reads in PythonModel.__init_subclass__ (3.x),
    # skips that wrapping.
    _skip_type_hint_validation = True

    def load_context(self, context):
        a = context.artifacts
        # Every file of the model folder against the registered version's integrity manifest, before the weights
        # and config are read (IntegrityError names the model, version, file and check).  The stored code has run
        # by now (MLflow imported this file): see components/registry/integrity.py for that limit.
        verify_model_dir(Path(a["weights"]).parents[1])
        meta = json.loads(Path(a["model"]).read_text())
        base = fetch_base_weights(meta["base"]) if meta.get("base") else None  # a tuned model's frozen base
        self.recommender = ServedModel(a["weights"], a["model"], a["items"], base_weights=base,
                                       max_history=_max_history())

    def predict(self, context, model_input, params=None):
        try:
            return self._recommend(model_input, params or {})
        except RequestError as e:
            raise InvalidRequest(str(e)) from e
        except MlflowException:
            raise
        except Exception as e:
            logger.exception("scoring failed")
            raise OneLineError(f"the model failed on this request ({type(e).__name__}); the server log has the "
                               "details", INTERNAL_ERROR) from e

    def _recommend(self, model_input, params: dict) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            frame = model_input
        else:
            try:
                frame = pd.DataFrame(model_input)
            except (ValueError, TypeError) as e:
                raise RequestError(f"input must be a table with an 'items' column; got {type(model_input).__name__} "
                                   f"({e})") from None
        if "items" not in frame.columns:
            raise RequestError(f"input needs an 'items' column (list of item ids per row); got {list(frame.columns)}")
        rec = self.recommender
        histories = [_as_list(h) for h in frame["items"]]
        behaviors = None
        if "behaviors" in frame.columns:
            behaviors = [[rec.default_behavior] * len(h) if _missing(b) and isinstance(h, list) else _as_list(b)
                         for h, b in zip(histories, frame["behaviors"])]
        profiles = None
        fields = rec.profile_fields
        if "profile" in frame.columns:
            profiles = []
            for r, p in enumerate(frame["profile"]):
                if not (_missing(p) or isinstance(p, dict)):
                    raise RequestError(f"row {r}: profile must be a dict (field -> value); got {type(p).__name__}")
                profiles.append(None if _missing(p) else dict(p))
        elif any(f in frame.columns for f in fields):
            profiles = [{f: row.get(f) for f in fields if f in frame.columns and not _missing(row.get(f))}
                        for row in frame.to_dict("records")]
        exclude = params.get("exclude_seen")
        rows = rec.recommend(histories, behaviors, k=params.get("k", 10), max_k=params.get("max_k", MAX_K),
                             exclude_seen=None if exclude is None else bool(exclude), profiles=profiles)
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(SequentialRecommenderModel())
