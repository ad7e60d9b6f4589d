"""Issue 14, item 7: the local ZenML dashboard opens (``zenml[server]`` is installed; ``make zenml-ui`` runs
``zenml login --local --port ...`` and ``make zenml-ui-stop`` runs ``zenml logout --local``).  Run here on a
ZenML config of its own in a temp dir, so the session's store is not switched to the server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts and stops a local ZenML server (~40 s on 2 cores)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zenml(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("zenml")), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_make_targets_start_and_stop_the_local_dashboard(tmp_path):
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^zenml-ui:.*\n\t\$\(BIN\)/zenml login --local --port \$\(ZENML_UI_PORT\)", makefile, re.M)
    assert re.search(r"^zenml-ui-stop:\n\t\$\(BIN\)/zenml logout --local", makefile, re.M)
    port = free_port()
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml-config"), "ZENML_AUTO_OPEN_DASHBOARD": "false",
           "ZENML_ANALYTICS_OPT_IN": "false"}
    env.pop("ZENML_REPOSITORY_PATH", None)
    started = zenml("login", "--local", "--port", str(port), env=env, cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        url = f"http://127.0.0.1:{port}"
        assert url in started.stdout + started.stderr
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(url, timeout=10) as r:  # the dashboard's page
            assert r.status == 200 and "<html" in r.read(4096).decode(errors="replace").lower()
    finally:
        stopped = zenml("logout", "--local", env=env, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the dashboard still answers after zenml logout --local"
