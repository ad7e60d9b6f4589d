"""Issue 14, item 6: the training pipeline against a real MLflow tracking server, as infra/k8s deploys it.

``mlflow server`` on 127.0.0.1 with the basic-auth app (``--app-name basic-auth``, the admin account bootstrapped
from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD, users in their own database), proxied artifacts (``--serve-artifacts``)
and a PostgreSQL backend store: a fresh database (and one for the auth app) on 127.0.0.1:5432 (user postgres, trust
authentication), created for the session and dropped after.  The stack's MLflow tracker points at the server with
the credentials; the pipeline trains on the Taobao head, registers over HTTP, and the champion is loaded back over
HTTP (client credentials: MLFLOW_TRACKING_USERNAME/PASSWORD) and recommends.

Where PostgreSQL is not reachable the same server runs on SQLite: the run says so in a warning, in the test
property ``tracking_backend`` and in the skip reason of ``test_backend_is_postgresql``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from zenml.client import Client
from zenml.enums import ExecutionStatus
from zenml.enums import StackComponentType as T
from zenml.models import ModelVersionPipelineRunFilter

from components.tracking import mlflow_log
from steps._common import TRACKER
from steps._runs import model_version_name
from tests.http_wait import wait_until_ok

pytestmark = pytest.mark.slow  # a tracking server and one pipeline run (~1-2 min on 2 cores)

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
MODEL = "mbprompt-taobao"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
USER = "admin"


def postgres_or_reason():
    """A connection to the maintenance database ``test`` (autocommit), or the reason there is none."""
    try:
        import psycopg2
    except ImportError as e:
        return None, f"psycopg2 is not installed ({e}; pip install -e '.[dev]')"
    try:
        conn = psycopg2.connect(connect_timeout=3, **PG)
    except Exception as e:
        return None, f"PostgreSQL not reachable at {PG['host']}:{PG['port']} as {PG['user']}: {e}".strip()
    conn.autocommit = True
    return conn, None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    wait_until_ok(f"{url}/health", lambda: proc.poll() is None, timeout,
                  lambda why: f"mlflow server at {url}: {why} (exit code {proc.poll()}):\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """The server (yields url, password, backend, stores); stopped, and its databases dropped, after the module."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    conn, reason = postgres_or_reason()
    databases = []
    if conn is not None:
        name = f"mbprompt_test_{uuid.uuid4().hex[:10]}"
        databases = [name, f"{name}_auth"]
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        base = f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}"
        backend, store, auth_store = "postgresql", f"{base}/{databases[0]}", f"{base}/{databases[1]}"
    else:
        logger.warning("%s: the tracking server runs on SQLite instead", reason)
        backend, store, auth_store = "sqlite", f"sqlite:///{tmp / 'mlflow.db'}", f"sqlite:///{tmp / 'auth.db'}"
    # The same options as infra/k8s/mlflow-deployment.yaml (one worker, proxied artifacts, basic auth).
    (tmp / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {auth_store}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Checks each request's password (PBKDF2) at most once a minute: without it, hashing on every request
        # (a run logs hundreds) keeps a core busy and the pipeline takes minutes longer on 2 cores.
        "auth_cache_ttl_seconds = 60\n")
    password = secrets.token_urlsafe(16)
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "basic_auth.ini"),
           "MLFLOW_AUTH_ADMIN_USERNAME": USER, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp / "server.log"
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1", "--backend-store-uri", store, "--serve-artifacts",
                 "--artifacts-destination", (tmp / "artifacts").as_uri(), "--app-name", "basic-auth"],
                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, log)
            yield {"url": url, "password": password, "backend": backend, "reason": reason, "store": store}
        finally:
            stop_group(proc)
    finally:
        if conn is not None:
            with conn.cursor() as cur:
                for db in databases:
                    cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.close()


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop the server and every process it started (its workers and job consumers share its process group):
    SIGTERM, then SIGKILL for whatever is left after ``timeout`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the server itself, so that only live processes keep the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _forget_built_stacks() -> None:
    """ZenML 0.98 keeps each stack it built in this process, keyed by the stack's id and update time
    (``zenml.stack.stack._STACK_CACHE``); updating one of its components leaves that key unchanged, so a pipeline
    run later in the same process would get the tracker as it was configured before (seen in the full suite, where
    earlier tests had run pipelines on this stack).  Drop the built stacks so the next run builds it anew."""
    from zenml.stack import stack as zenml_stack

    zenml_stack._STACK_CACHE.clear()


@pytest.fixture(scope="module")
def run_on_server(tracking_server, zenml_env, taobao_head, tmp_path_factory):
    """The training pipeline on the Taobao head at a tiny budget, its tracker pointing at the server; the
    tracker and the MLflow environment are restored afterwards."""
    client = Client()
    tracker = client.get_stack_component(T.EXPERIMENT_TRACKER, TRACKER, allow_name_prefix_match=False)
    saved = {k: tracker.configuration.get(k) for k in ("tracking_uri", "tracking_username", "tracking_password")}
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                                 "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_INSECURE_TLS")}
    cfg = yaml.safe_load((REPO / "configs" / "taobao.yaml").read_text())
    cfg["run_name"] = "tracking-server-{date}-{time}"
    cfg["parameters"]["raw_path"] = str(taobao_head)
    cfg["steps"]["pretrain"]["parameters"]["model"].update(hidden=16, max_len=20, n_layers=1)
    cfg["steps"]["pretrain"]["parameters"]["training"].update(epochs=1, batch_size=128, valid_protocols=["full"])
    cfg["steps"]["evaluate"] = {"parameters": {"ks": [10]}}
    path = tmp_path_factory.mktemp("cfg") / "server.yaml"
    path.write_text(yaml.safe_dump(cfg))
    client.update_stack_component(TRACKER, T.EXPERIMENT_TRACKER, configuration={
        "tracking_uri": tracking_server["url"], "tracking_username": USER,
        "tracking_password": tracking_server["password"]})
    _forget_built_stacks()
    try:
        from pipelines.training import training_pipeline

        run = Client().get_pipeline_run(training_pipeline.with_options(config_path=str(path))().id)
        logger.info("pipeline on the tracking server: %s", {
            name: round((s.end_time - s.start_time).total_seconds(), 1) for name, s in run.steps.items()
            if s.start_time and s.end_time})
        yield run
    finally:
        client.update_stack_component(TRACKER, T.EXPERIMENT_TRACKER, configuration=saved)
        _forget_built_stacks()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri("")


@pytest.fixture
def http_client(tracking_server, monkeypatch):
    """An MLflow client of the server authenticating as the admin through the standard environment variables."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", tracking_server["password"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server["url"])
    mlflow.set_tracking_uri(tracking_server["url"])
    yield MlflowClient(tracking_server["url"])
    mlflow.set_tracking_uri("")


def test_backend_is_postgresql(tracking_server, record_property):
    record_property("tracking_backend", tracking_server["backend"])
    if tracking_server["backend"] != "postgresql":
        pytest.skip(f"{tracking_server['reason']}: the tracking-server tests ran on SQLite instead")
    assert tracking_server["store"].startswith("postgresql://")


def test_the_server_refuses_requests_without_credentials(tracking_server):
    req = urllib.request.Request(f"{tracking_server['url']}/api/2.0/mlflow/experiments/search?max_results=1")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


def test_pipeline_registers_over_http_and_the_champion_loads_and_recommends(run_on_server, http_client,
                                                                          tracking_server, taobao_head,
                                                                          record_property):
    record_property("tracking_backend", tracking_server["backend"])
    assert run_on_server.status == ExecutionStatus.COMPLETED
    champion = http_client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1"  # a fresh server: the first version is the champion
    mlrun = http_client.get_run(champion.run_id)
    assert mlrun.info.status == "FINISHED" and "test_full_ndcg_at_10" in mlrun.data.metrics
    # issue 14 item 7 on the server: the data linked, the experiment opening on its runs
    inputs = mlrun.inputs.dataset_inputs
    assert [i.dataset.source_type for i in inputs] == ["local"], inputs
    assert str(taobao_head) in inputs[0].dataset.source
    experiment = http_client.get_experiment(mlrun.info.experiment_id)
    assert experiment.tags.get(mlflow_log.EXPERIMENT_KIND_TAG) == mlflow_log.EXPERIMENT_KIND

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    lines = [line.split(",") for line in taobao_head.read_text().splitlines()[:2000]]
    history = [r[1] for r in lines if len(r) == 5 and r[0] == lines[0][0]][:20]
    out = model.predict(pd.DataFrame({"items": [history, []]}), params={"k": 5})
    catalogue = {r[1] for r in (line.split(",") for line in taobao_head.read_text().splitlines()) if len(r) == 5}
    for recs in out["items"]:
        assert len(recs) == 5 and len(set(recs)) == 5 and set(recs) <= catalogue


def test_a_zenml_model_version_links_the_run_to_the_mlflow_version(run_on_server, tracking_server):
    mv = Client().get_model_version(MODEL, model_version_name(1))
    meta = mv.run_metadata
    assert meta["mlflow_model_uri"] == f"models:/{MODEL}/1" and str(meta["mlflow_model_version"]) == "1"
    assert meta["mlflow_tracking_uri"] == tracking_server["url"]
    links = Client().zen_store.list_model_version_pipeline_run_links(
        ModelVersionPipelineRunFilter(model_version_id=mv.id))
    assert run_on_server.id in {link.pipeline_run.id for link in links.items}
