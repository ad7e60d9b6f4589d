"""The Kubernetes manifests in infra/k8s/ and the image in infra/docker/, checked offline (no cluster, no Docker).

- Schema: every document of every ``infra/k8s/*.yaml`` (Helm values files excluded: ``helm`` renders them, they are
  no manifest) validates with kubernetes-validate in strict mode (unknown fields rejected) against the bundled
  schemas of two Kubernetes versions: 1.30 and the newest the installed package bundles.
- CRDs: kubernetes-validate bundles core Kubernetes schemas only, so it has none for the Training Operator's
  ``kubeflow.org/v1 PyTorchJob`` (it raises SchemaNotFoundError; its CLI would only print a warning and exit 0).
  Instead of letting that pass silently, each replica's pod template is validated strictly as the core type it is
  (wrapped in a ``v1 PodTemplate``: the ``template`` field is a ``PodTemplateSpec``), and the PyTorchJob's own
  fields are checked here against the v1 API (known top-level, runPolicy and replica-spec fields, a Master, the
  container named "pytorch", nprocPerNode a string). Any other kind without a schema fails the test.
- Policy: every container of every workload (Deployment, StatefulSet, Job, CronJob, PyTorchJob) runs as non-root
  (``runAsNonRoot: true`` on the container or its pod, never overridden to false, no uid 0), meets the rest of
  Pod Security "restricted" (no privilege escalation, all capabilities dropped, a seccomp profile) and declares cpu
  and memory requests and limits; images carry a pinned tag; no manifest holds a Secret object, a literal value in a
  password/secret/token/key variable, or credentials inside a URL; the orchestrator Role grants no wildcard and
  cannot read secrets.
- Image: the Dockerfile's final stage switches to a USER that is not root, starts from a CUDA/PyTorch base and
  installs the project from pyproject.toml; .dockerignore keeps local state out of the build context.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as kv

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
VALUES_FILES = sorted(K8S.glob("*values.yaml"))
MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p not in VALUES_FILES)
K8S_VERSIONS = sorted({"1.30", kv.major_minor(kv.latest_version())}, key=lambda v: tuple(map(int, v.split("."))))
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "PyTorchJob"}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|API_KEY", re.I)
NOT_SECRETS = {"MYSQL_RANDOM_ROOT_PASSWORD"}  # a yes/no switch, not a credential
URL_WITH_CREDENTIALS = re.compile(r"://(?P<user>[^/\s:@]+):(?P<password>[^/\s@]+)@")

# kubeflow.org/v1 PyTorchJob fields (training-operator pkg/apis/kubeflow.org/v1: PyTorchJobSpec, RunPolicy,
# ReplicaSpec, RestartPolicy).
PYTORCHJOB_SPEC = {"runPolicy", "elasticPolicy", "pytorchReplicaSpecs", "nprocPerNode"}
RUN_POLICY = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
              "schedulingPolicy", "suspend", "managedBy"}
REPLICA_SPEC = {"replicas", "template", "restartPolicy"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
CLEAN_POD_POLICIES = {"All", "Running", "None"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


ALL_DOCS = [(p.name, d) for p in MANIFEST_FILES for d in _docs(p)]


def _id(item) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def _pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(label, pod template) of every pod a workload makes."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind == "Pod":
        return [("pod", {"spec": spec})]
    if kind == "CronJob":
        return [("jobTemplate", spec["jobTemplate"]["spec"]["template"])]
    if kind == "PyTorchJob":
        return [(role, rs["template"]) for role, rs in spec["pytorchReplicaSpecs"].items()]
    return [("template", spec["template"])]


def test_manifests_found():
    names = {p.name for p in MANIFEST_FILES}
    assert {"namespace.yaml", "mlflow-deployment.yaml", "postgres-statefulset.yaml", "zenml-orchestrator-rbac.yaml",
            "pytorchjob-pretrain.yaml"} <= names
    assert [p.name for p in VALUES_FILES] == ["zenml-server-values.yaml"]
    kinds = {d["kind"] for _, d in ALL_DOCS}
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding",
            "PyTorchJob", "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("item", ALL_DOCS, ids=_id)
def test_validates_strictly(item, k8s_version):
    name, doc = item
    if doc["apiVersion"].startswith("kubeflow.org/"):
        with pytest.raises(kv.SchemaNotFoundError):  # if a future release bundles CRDs, validate them directly
            kv.validate(doc, k8s_version, strict=True)
        for role, template in _pod_specs(doc):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": f"{doc['metadata']['name']}-{role.lower()}"}, "template": template}
            try:
                kv.validate(wrapped, k8s_version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{name} {role} pod template: {'.'.join(map(str, e.path))}: {e.message}", pytrace=False)
        return
    try:
        validated = kv.validate(doc, k8s_version, strict=True)
    except kv.ValidationError as e:
        pytest.fail(f"{name} {doc['kind']}: {'.'.join(map(str, e.path))}: {e.message}", pytrace=False)
    except kv.SchemaNotFoundError as e:
        pytest.fail(f"{name}: {e.message}: add a check for this kind to the test", pytrace=False)
    assert validated == k8s_version


def test_cli_strict(tmp_path):
    """The command line the issue names, `kubernetes-validate --strict -k <version>`, over every manifest file.
    The CLI only warns (exit 0) for a kind it has no schema for, so the warnings are pinned to the CRD."""
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    for v in K8S_VERSIONS:
        cmd += ["-k", v]
    out = subprocess.run([*cmd, *map(str, MANIFEST_FILES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    warned = [ln for ln in out.stdout.splitlines() if ln.startswith("WARN")]
    assert warned and all("PyTorchJob" in ln for ln in warned), warned


def test_validation_is_strict():
    """Guard against a vacuous pass: the same call rejects an unknown field and a wrong type."""
    doc = _docs(K8S / "mlflow-service.yaml")[0]
    bad = {**doc, "spec": {**doc["spec"], "portz": []}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = {**doc, "spec": {**doc["spec"], "ports": [{"port": "not-a-number"}]}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_pytorchjob_fields():
    [(_, job)] = [(n, d) for n, d in ALL_DOCS if d["kind"] == "PyTorchJob"]
    assert job["apiVersion"] == "kubeflow.org/v1"
    spec = job["spec"]
    assert set(spec) <= PYTORCHJOB_SPEC, set(spec) - PYTORCHJOB_SPEC
    assert isinstance(spec.get("nprocPerNode", "auto"), str)
    run_policy = spec.get("runPolicy") or {}
    assert set(run_policy) <= RUN_POLICY, set(run_policy) - RUN_POLICY
    assert run_policy.get("cleanPodPolicy", "None") in CLEAN_POD_POLICIES
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) <= {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for role, rs in replicas.items():
        assert set(rs) <= REPLICA_SPEC, (role, set(rs) - REPLICA_SPEC)
        assert isinstance(rs["replicas"], int) and rs["replicas"] >= 1
        assert rs.get("restartPolicy", "OnFailure") in RESTART_POLICIES
        [container] = [c for c in rs["template"]["spec"]["containers"] if c["name"] == "pytorch"]
        cmd = container.get("command", []) + container.get("args", [])
        assert cmd[0] == "torchrun" and "components.training.ddp" in cmd, cmd
        assert container["resources"]["limits"].get("nvidia.com/gpu"), role


WORKLOAD_DOCS = [item for item in ALL_DOCS if item[1]["kind"] in WORKLOADS]


def test_workloads_found():
    names = {d["metadata"]["name"] for _, d in WORKLOAD_DOCS}
    assert {"postgres", "mysql", "mlflow", "minio", "minio-buckets", "mbprompt-pretrain"} <= names


@pytest.mark.parametrize("item", WORKLOAD_DOCS, ids=_id)
def test_containers_non_root_with_requests_and_limits(item):
    name, doc = item
    for label, template in _pod_specs(doc):
        pod = template["spec"]
        pod_sc = pod.get("securityContext") or {}
        containers = pod.get("initContainers", []) + pod["containers"]
        assert containers
        for c in containers:
            where = f"{name} {label} container {c['name']}"
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            assert non_root is True, f"{where}: runAsNonRoot is not true"
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) != 0, f"{where}: runs as uid 0"
            # the rest of Pod Security "restricted" (namespace.yaml warns and audits at that level)
            assert sc.get("privileged") is not True and sc.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), f"{where}: capabilities not dropped"
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            assert seccomp in {"RuntimeDefault", "Localhost"}, f"{where}: no seccomp profile"
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                got = res.get(kind) or {}
                assert {"cpu", "memory"} <= set(got), f"{where}: resources.{kind} lacks cpu/memory: {got}"


@pytest.mark.parametrize("item", WORKLOAD_DOCS, ids=_id)
def test_images_pinned(item):
    name, doc = item
    for _, template in _pod_specs(doc):
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{name}: image {image} has no pinned tag"


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, str(i)))
    else:
        yield path, node


@pytest.mark.parametrize("path", MANIFEST_FILES + VALUES_FILES, ids=lambda p: p.name)
def test_no_literal_secrets(path):
    for doc in _docs(path):
        assert doc.get("kind") != "Secret", f"{path.name}: Secrets are created with kubectl, never stored"
        for keys, value in _walk(doc):
            if not isinstance(value, str):
                continue
            where = f"{path.name}: {'.'.join(keys)}"
            m = URL_WITH_CREDENTIALS.search(value)
            assert not m or re.fullmatch(r"\$\(\w+\)", m["password"]), f"{where}: credentials in a URL"
            # a key such as `password: x` or `jwtSecretKey: x` holding a literal value
            leaf = keys[-1]
            if SECRETISH.search(leaf) and leaf not in {"secretName"} and value:
                pytest.fail(f"{where}: literal value under a secret-like key")
        for entry in _env_entries(doc):
            if SECRETISH.search(entry["name"]) and entry["name"] not in NOT_SECRETS:
                assert "value" not in entry, f"{path.name}: env {entry['name']} has a literal value; use valueFrom"


def _env_entries(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "env" and isinstance(v, list):
                yield from (e for e in v if isinstance(e, dict))
            else:
                yield from _env_entries(v)
    elif isinstance(node, list):
        for v in node:
            yield from _env_entries(v)


def test_secret_values_come_from_secret_refs():
    """The credentials the services need are wired from the Secrets the README tells how to create."""
    text = "\n".join(p.read_text() for p in MANIFEST_FILES)
    for secret in ("mlflow-postgres", "zenml-mysql", "s3-credentials"):
        assert f"name: {secret}" in text, secret


def test_mlflow_server():
    [deploy] = [d for _, d in ALL_DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow"]
    [c] = deploy["spec"]["template"]["spec"]["containers"]
    image_version = c["image"].rsplit(":", 1)[1].removeprefix("v").split("-")[0]
    assert image_version.split(".")[:2] == version("mlflow").split(".")[:2], (c["image"], version("mlflow"))
    args = c["command"] + c["args"]
    assert "--serve-artifacts" in args
    assert any(a.startswith("--artifacts-destination=") for a in args)
    assert any(a.startswith("--backend-store-uri=postgresql") for a in args)
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe
    env = {e["name"]: e for e in c["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-postgres"
    [cm] = [d for _, d in ALL_DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mlflow"]
    assert cm["data"]["ARTIFACTS_DESTINATION"].startswith("s3://")


def test_orchestrator_rbac_is_least():
    roles = {d["metadata"]["name"]: d for _, d in ALL_DOCS if d["kind"] == "Role"}
    for role in roles.values():
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    grants = {(g, r): set(rule["verbs"]) for rule in roles["zenml-orchestrator"]["rules"]
              for g in rule["apiGroups"] for r in rule["resources"]}
    assert grants[("batch", "jobs")] >= {"create", "get", "list", "delete"}
    assert grants[("", "pods")] >= {"get", "list"}
    assert not grants.get(("", "secrets"), set()) & {"get", "list", "watch"}, "the orchestrator must not read secrets"
    assert ("", "pods/exec") not in grants
    bindings = [d for _, d in ALL_DOCS if d["kind"] == "RoleBinding"]
    assert {(b["roleRef"]["name"], s["name"]) for b in bindings for s in b["subjects"]} == {
        ("zenml-orchestrator", "zenml-orchestrator")}
    [step_sa] = [d for _, d in ALL_DOCS if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "mbprompt-step"]
    assert step_sa["automountServiceAccountToken"] is False


def test_zenml_server_values():
    [path] = VALUES_FILES
    values = yaml.safe_load(path.read_text())
    assert values["zenml"]["image"]["tag"].split(".")[:2] == version("zenml").split(".")[:2]
    assert values["securityContext"]["runAsNonRoot"] is True
    assert values["podSecurityContext"]["runAsNonRoot"] is True
    assert {"cpu", "memory"} <= set(values["resources"]["requests"]) & set(values["resources"]["limits"])
    db = values["zenml"]["database"]
    assert "@" in db["url"] and ":" not in db["url"].split("://", 1)[1].split("@", 1)[0], "password in the URL"
    assert db["passwordSecretRef"] == {"name": "zenml-mysql", "key": "password"}


def _stages(dockerfile: str) -> list[list[str]]:
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    instructions = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    stages: list[list[str]] = [[]]
    for ins in instructions:
        if ins.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(ins)
    return stages


def test_dockerfile_runs_as_non_root():
    stages = _stages(DOCKERFILE.read_text())
    final = stages[-1]
    users = [ins.split(None, 1)[1].strip() for ins in final if ins.upper().startswith("USER ")]
    assert users, "the final stage has no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]


def test_dockerfile_base_and_install():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base and re.match(r"(nvidia/cuda:\S+runtime|pytorch/pytorch:\S+runtime)", base[1]), base
    assert re.search(r"^WORKDIR /app", text, re.M)
    assert re.search(r'pip install "torch==2\.\d+\.\*" --index-url', text)
    assert re.search(r'^COPY pyproject\.toml ', text, re.M) and 'pip install ".[' in text
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", "data", ".mlflow", ".zen", "mlruns", ".git"} <= ignored
