"""The serving contract (issue 14): on ``ServedModel`` directly, on the registered pyfunc (signature, input example,
clean errors) and over REST through ``make serve`` (the real ``mlflow models serve`` process on a free port, started
with the venv off PATH, stopped with ``make serve-stop``).

The model is a small SASRec with untrained weights on a synthetic chain dataset: the contract does not depend on
what the model learned."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.metrics.report import EvaluationReport
from components.models.registry import build_model
from components.models.trained import TrainedModel
from components.registry.register import register_recommender, signature
from components.serving.recommender import MAX_K, RequestError, ServedModel, example_request, write_bundle
from tests.http_wait import wait_until_ok
from tests.models.synthetic import make_chain_dataset, one_torch_thread  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
METRIC = "valid_sampled99_ndcg_at_10"
N_ITEMS = 83


@pytest.fixture(scope="module")
def data():
    return make_chain_dataset(n_warm=20, n_cold_tune=3, n_cold_test=3, n_items=N_ITEMS, n_negatives=20, seed=4)


@pytest.fixture(scope="module")
def trained(data) -> TrainedModel:
    config = {"n_items": data.n_items, "n_behaviors": data.n_behaviors, "max_len": 8, "hidden": 8, "n_layers": 1,
              "seed": 2}
    model = build_model("sasrec", config)
    return TrainedModel(architecture="sasrec", config=config,
                        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def served(data, trained, tmp_path_factory) -> ServedModel:
    files = write_bundle(tmp_path_factory.mktemp("bundle"), architecture="sasrec", config=trained.config,
                         state_dict=trained.state_dict, behavior_names=data.behavior_names,
                         target_behaviors=["buy"], item_ids=[str(x) for x in data.item_ids.tolist()],
                         history_items="excluded")
    return ServedModel(files["weights"], files["model"], files["items"], max_history=50)


HISTORY = ["i3", "i7", "i12", "i3", "i40"]  # "i3" twice: 4 distinct seen items


# ---- ServedModel -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [-1, 0, 2.5, "3", True, None])
def test_k_must_be_an_integer_of_at_least_one(served, k):
    with pytest.raises(RequestError, match=f"^{re.escape(f'k must be an integer >= 1; got {k!r}')}$"):
        served.recommend([HISTORY], k=k)


def test_a_huge_k_returns_every_unseen_real_item_with_finite_scores(served):
    row = served.recommend([HISTORY], k=1_000_000)[0]
    catalogue = set(served.item_ids[1:])
    assert len(row["items"]) == N_ITEMS - 4 == len(set(row["items"]))
    assert set(row["items"]) == catalogue - set(HISTORY) and "" not in row["items"]
    assert all(math.isfinite(s) for s in row["scores"]) and row["scores"] == sorted(row["scores"], reverse=True)
    assert row["items"][:10] == served.recommend([HISTORY], k=10)[0]["items"]
    # history items shown (exclude_seen False): the whole catalogue, still no padding
    shown = served.recommend([HISTORY], k=1_000_000, exclude_seen=False)[0]
    assert set(shown["items"]) == catalogue and len(shown["items"]) == N_ITEMS


def test_max_k_caps_an_answer(served):
    assert MAX_K == 1_000
    assert len(served.recommend([[]], k=50, max_k=7)[0]["items"]) == 7
    with pytest.raises(RequestError, match=r"^max_k must be an integer >= 1; got 0$"):
        served.recommend([[]], max_k=0)


def test_a_history_must_be_a_list(served):
    with pytest.raises(RequestError, match=r"^row 1: items must be a list of item ids; got str 'i3i7'$"):
        served.recommend([HISTORY, "i3i7"])
    with pytest.raises(RequestError, match=r"^row 0: item ids must be strings or integers; got \['i3'\] \(list\)$"):
        served.recommend([[["i3"]]])
    with pytest.raises(RequestError, match=r"^row 0: behaviors must be a list of names; got str 'buy'$"):
        served.recommend([["i3"]], ["buy"])
    with pytest.raises(RequestError, match=r"^row 0: 1 items but 2 behaviors$"):
        served.recommend([["i3"]], [["buy", "buy"]])


def test_a_history_above_the_cap_is_refused(served):
    assert served.recommend([["i3"] * 50], k=3)[0]["items"]
    with pytest.raises(RequestError, match=r"^row 0: 51 items, more than the 50 a request may send"):
        served.recommend([["i3"] * 51])
    with pytest.raises(ValueError, match="max_history must be an integer >= 1; got 0"):
        ServedModel("weights", "model.json", "items.json", max_history=0)


def test_an_all_unknown_history_is_flagged_never_silent(served):
    rows = served.recommend([["x1", "x2"], [], ["x1", "i3"], [3]], k=5)
    zero_shot = rows[1]
    assert rows[0]["all_unknown"] is True and rows[0]["unknown_items"] == ["x1", "x2"]
    assert rows[0]["items"] == zero_shot["items"]  # the zero-shot answer, flagged
    assert zero_shot["all_unknown"] is False and zero_shot["unknown_items"] == []
    assert rows[2]["all_unknown"] is False and rows[2]["unknown_items"] == ["x1"]
    assert rows[3]["all_unknown"] is True and rows[3]["unknown_items"] == ["3"]  # ints are ids too ("3" unknown)


def test_a_profile_models_signature_and_example_name_its_fields():
    sig = signature("candidates", ["age", "gender"])
    assert sig.inputs.input_names() == ["items", "behaviors", "profile", "age", "gender"]
    assert sig.inputs.required_input_names() == ["items"]
    assert {p.name: p.default for p in sig.params.params}["exclude_seen"] is False  # as evaluated (candidates)
    example = example_request(["", "a", "b"], "buy", ["age", "gender"], [["18", "25"], ["F", "M"]])
    assert example.to_dict("list") == {"items": [["a", "b"]], "behaviors": [["buy", "buy"]], "age": ["18"],
                                       "gender": ["F"]}


# ---- registered pyfunc -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registered(data, trained, tmp_path_factory):
    """The model registered by register_recommender into a real MLflow SQLite store in a temp dir."""
    tmp = tmp_path_factory.mktemp("mlflow")
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient(uri).create_experiment("serving", artifact_location=(tmp / "artifacts").as_uri())
    report = EvaluationReport(dataset="serve", metrics={"sasrec": {METRIC: 0.3}})
    try:
        with mlflow.start_run(experiment_id=experiment):
            info = register_recommender(trained, data, report, "servetest", selection_metric=METRIC)
        assert info["champion"] is True
        yield {"uri": uri, "name": info["name"], "dir": tmp,
               "model": mlflow.pyfunc.load_model(f"models:/{info['name']}@champion")}
    finally:
        mlflow.set_tracking_uri(before)


@pytest.mark.slow  # one registration (~10 s)
def test_the_registered_model_has_a_signature_and_an_input_example(registered):
    model = registered["model"]
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["items", "behaviors", "profile"]
    assert sig.inputs.required_input_names() == ["items"]
    assert sig.outputs.input_names() == ["items", "scores", "unknown_items", "all_unknown"]
    assert {p.name: p.default for p in sig.params.params} == {"k": 10, "max_k": MAX_K, "exclude_seen": True}
    example = model.input_example
    assert list(example.columns) == ["items", "behaviors"]
    assert list(example["items"][0]) == ["i1", "i2", "i3"] and list(example["behaviors"][0]) == ["buy"] * 3
    out = model.predict(example, params={"k": 5})
    assert list(out.columns) == ["items", "scores", "unknown_items", "all_unknown"] and len(out["items"][0]) == 5


@pytest.mark.slow
def test_the_pyfunc_refuses_bad_requests_with_one_line(registered):
    model = registered["model"]
    for frame, params, message in [
        (pd.DataFrame({"items": [HISTORY]}), {"k": -1}, "k must be an integer >= 1; got -1"),
        (pd.DataFrame({"items": ["i3i7"]}), {}, "row 0: items must be a list of item ids; got str 'i3i7'"),
        (pd.DataFrame({"items": [HISTORY], "profile": ["F"]}), {}, "row 0: profile must be a dict"),
    ]:
        with pytest.raises(MlflowException) as err:
            model.predict(frame, params=params)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE" and err.value.get_http_status_code() == 400
        assert err.value.message.startswith(message) and "\n" not in err.value.message
        err.value.message = "rewritten"  # what the scoring server does; the message stays
        assert err.value.message.startswith(message)
    out = model.predict(pd.DataFrame({"items": [HISTORY, ["x1"], None]}), params={"k": 1_000_000})
    assert [len(r) for r in out["items"]] == [N_ITEMS - 4, N_ITEMS, N_ITEMS]
    assert out["all_unknown"].tolist() == [False, True, False]
    assert all(np.isfinite(s).all() for s in out["scores"])


# ---- over REST: make serve -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make(target: str, registered: dict, port: int) -> subprocess.CompletedProcess:
    # The venv off PATH: `make serve` must put it there itself (mlflow starts `uvicorn` by name).
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != VENV_BIN.resolve())
    env = {**os.environ, "PATH": path}
    env.pop("MLFLOW_TRACKING_URI", None)
    # -o: never (re)install from a test, even when pyproject.toml is newer than the install stamp
    return subprocess.run(["make", "-s", "-o", ".venv/bin/.installed", target, f"MLFLOW_DIR={registered['dir']}",
                           f"MODEL_NAME={registered['name']}", f"PORT={port}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _post(port: int, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def server(registered):
    port = _free_port()
    log = registered["dir"] / "serve.log"
    pid_file = registered["dir"] / "serve.pid"
    started = _make("serve", registered, port)
    assert started.returncode == 0, started.stderr
    try:
        assert f"models:/{registered['name']}@champion at http://127.0.0.1:{port}/invocations" in started.stdout
        pid = int(pid_file.read_text())
        try:
            wait_until_ok(f"http://127.0.0.1:{port}/ping", lambda: _alive(pid), 120,
                          lambda why: f"mlflow models serve: {why}; log {log}:\n"
                                      f"{log.read_text()[-3000:] if log.exists() else '(none)'}")
        except RuntimeError as e:
            pytest.fail(str(e))
        yield port, pid
    finally:
        pid = int(pid_file.read_text())
        stopped = _make("serve-stop", registered, port)
        deadline = time.monotonic() + 15
        while (_alive(pid) or _answers(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(pid) or _answers(port)
        if left:  # serve-stop failed: stop the group ourselves
            os.killpg(pid, signal.SIGKILL)
        assert stopped.returncode == 0 and not pid_file.exists() and not left, \
            f"make serve-stop left the server (pid {pid}) running: {stopped.stderr}"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie left for init to reap counts as stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone, unless there is no /proc (then kill -0 is all we know)
    return state != "Z"


def _one_line_error(status: int, body: str, message: str) -> None:
    assert status == 400, body
    assert "\n" not in body
    error = json.loads(body)
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert error["message"].startswith(message) and "\n" not in error["message"], error["message"]
    assert "Traceback" not in body and "stack_trace" not in error and ".py" not in body, body


@pytest.mark.slow  # registration + a real server (~30 s)
def test_rest_answers_good_requests_and_refuses_bad_ones_cleanly(server, registered):
    port, pid = server
    status, body = _post(port, {"dataframe_records": [{"items": HISTORY}, {"items": []}],
                                "params": {"k": 5}})
    assert status == 200, body
    good = json.loads(body)["predictions"]
    assert [len(r["items"]) for r in good] == [5, 5] and not set(good[0]["items"]) & set(HISTORY)
    assert good[0]["all_unknown"] is False and good[0]["unknown_items"] == []

    status, body = _post(port, {"dataframe_split": {"columns": ["items"], "data": [[HISTORY]]},
                                "params": {"k": 1_000_000}})
    assert status == 200, body
    row = json.loads(body)["predictions"][0]  # json.loads would take -Infinity: check each score explicitly
    assert len(row["items"]) == N_ITEMS - 4 and "" not in row["items"] and not set(row["items"]) & set(HISTORY)
    assert all(isinstance(s, float) and math.isfinite(s) for s in row["scores"])
    assert "Infinity" not in body and "NaN" not in body

    status, body = _post(port, {"dataframe_records": [{"items": ["x1", "x2"]}], "params": {"k": 3}})
    assert status == 200, body
    cold = json.loads(body)["predictions"][0]
    assert cold["all_unknown"] is True and cold["unknown_items"] == ["x1", "x2"] and len(cold["items"]) == 3

    _one_line_error(*_post(port, {"dataframe_records": [{"items": HISTORY}], "params": {"k": -1}}),
                    "k must be an integer >= 1; got -1")
    _one_line_error(*_post(port, {"dataframe_records": [{"items": HISTORY}, {"items": "i3i7"}]}),
                    "row 1: items must be a list of item ids; got str 'i3i7'")
    _one_line_error(*_post(port, {"dataframe_records": [{"items": ["i3"] * 10_001}]}),
                    "row 0: 10001 items, more than the 10000 a request may send")
    _one_line_error(*_post(port, {"dataframe_records": [{"items": ["i3"], "behaviors": ["fly"]}]}),
                    "row 0: unknown behavior(s) ['fly']")
