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
  cannot touch Secrets; every Secret verb of a Role is limited by resourceNames, except those in
  ``SECRET_VERB_EXCEPTIONS`` (each with its reason; the ValidatingAdmissionPolicy of secret-create-policy.yaml
  covers the one there); every container has a read-only root filesystem (or is in ``RO_ROOT_EXCEPTIONS`` with
  its reason) with writable emptyDirs where it writes (/tmp, HOME).
- NetworkPolicy: a default-deny (ingress and egress) selects every pod; every pod, ours and the ones ZenML, its
  Helm chart and Kaniko create (``OTHER_PODS``, labels as those makers set them), is selected by an allow-list of
  its own; every selector of a policy or peer matches a real pod; every port a rule opens towards pods is a port a
  Service targets on them; and the connections in ``REACHABLE``/``UNREACHABLE`` are evaluated with NetworkPolicy
  semantics (tests/k8s/netpol.py) over all policies together.
- MinIO credentials: the root user (Secret minio-root) reaches MinIO and its setup Job only; MLflow and the steps
  use the user of Secret s3-credentials, whose policy the setup Job limits to the project's buckets.
- Image: the Dockerfile's final stage switches to a USER that is not root, starts from a CUDA/PyTorch base and
  installs the project from pyproject.toml; .dockerignore keeps local state out of the build context.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as kv

from tests.k8s.netpol import Pod, allowed, is_empty_selector, peer_matches, policy_types, selector_matches, selects

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
    for secret in ("mlflow-postgres", "zenml-mysql", "s3-credentials", "minio-root", "mlflow-auth"):
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
    assert ("", "secrets") not in grants, "the orchestrator must not touch Secrets (see zenml-orchestrator-rbac.yaml)"
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


# ---- read-only root filesystems -----------------------------------------------------------------------------------
# (file, container) -> why that container keeps a writable root filesystem. Every entry must still exist.
RO_ROOT_EXCEPTIONS = {
    # The ZenML server chart (0.98) mounts only /zenml/.zenconfig and has no value for extra volumes, while the
    # server spools large request bodies (FastAPI uploads) to /tmp: a read-only root would break them.
    ("zenml-server-values.yaml", "zenml"): "chart offers no writable /tmp",
}


def _writable_paths(pod: dict, container: dict) -> list[str]:
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    paths = []
    for m in container.get("volumeMounts", []):
        vol = volumes.get(m["name"], {})
        if m.get("readOnly") or "configMap" in vol or "secret" in vol:
            continue
        if "emptyDir" in vol or ("persistentVolumeClaim" in vol and not vol["persistentVolumeClaim"].get("readOnly")):
            paths.append(m["mountPath"])
    return paths


@pytest.mark.parametrize("item", WORKLOAD_DOCS, ids=_id)
def test_read_only_root_filesystem_with_writable_scratch(item):
    name, doc = item
    for label, template in _pod_specs(doc):
        pod = template["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name} {label} container {c['name']}"
            ro = (c.get("securityContext") or {}).get("readOnlyRootFilesystem")
            if (name, c["name"]) in RO_ROOT_EXCEPTIONS:
                assert ro is not True, f"{where}: listed in RO_ROOT_EXCEPTIONS but read-only: drop the entry"
                continue
            assert ro is True, f"{where}: readOnlyRootFilesystem is not true (or add it to RO_ROOT_EXCEPTIONS)"
            writable = _writable_paths(pod, c)
            assert "/tmp" in writable, f"{where}: no writable emptyDir at /tmp: {writable}"
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for var in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
                if env.get(var):
                    assert any(env[var] == w or env[var].startswith(w.rstrip("/") + "/") for w in writable), (
                        f"{where}: {var}={env[var]} is not on a writable volume {writable}")
            for arg in c.get("args", []):
                if arg.startswith("--out="):
                    out = arg.split("=", 1)[1]
                    assert any(out.startswith(w.rstrip("/") + "/") for w in writable), f"{where}: {arg} not writable"


def test_read_only_root_exceptions_are_current():
    values = yaml.safe_load((K8S / "zenml-server-values.yaml").read_text())
    assert values["securityContext"].get("readOnlyRootFilesystem") is not True, (
        "the ZenML server runs read-only now: drop its RO_ROOT_EXCEPTIONS entry")
    workload_containers = {(n, c["name"]) for n, d in WORKLOAD_DOCS for _, t in _pod_specs(d)
                           for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]}
    for file, container in RO_ROOT_EXCEPTIONS:
        assert file in {p.name for p in MANIFEST_FILES + VALUES_FILES}, file
        if file != "zenml-server-values.yaml":
            assert (file, container) in workload_containers, (file, container)


# ---- Secret verbs in Roles ----------------------------------------------------------------------------------------
# (role, verb) -> why the verb cannot name its Secrets. Every entry must be used.
SECRET_VERB_EXCEPTIONS = {
    # ZenML creates "zenml-token-<snapshot id>" for every submission (pass_zenml_token_as_secret): a new name each
    # time, and RBAC never applies resourceNames to `create`. secret-create-policy.yaml restricts it instead.
    ("zenml-submitter", "create"): "per-snapshot token Secret; resourceNames cannot apply to create",
}


def test_secret_verbs_name_their_secrets():
    roles = [d for _, d in ALL_DOCS if d["kind"] in {"Role", "ClusterRole"}]
    used = set()
    for role in roles:
        for rule in role["rules"]:
            if not {"secrets", "*"} & set(rule.get("resources", [])):
                continue
            for verb in rule["verbs"]:
                key = (role["metadata"]["name"], verb)
                if rule.get("resourceNames"):
                    continue
                assert key in SECRET_VERB_EXCEPTIONS, (
                    f"{role['kind']} {key[0]}: secrets verb {verb!r} without resourceNames")
                used.add(key)
    assert used == set(SECRET_VERB_EXCEPTIONS), f"stale SECRET_VERB_EXCEPTIONS: {set(SECRET_VERB_EXCEPTIONS) - used}"
    [submitter] = [r for r in roles if r["metadata"]["name"] == "zenml-submitter"]
    secret_verbs = {v for rule in submitter["rules"] if "secrets" in rule["resources"] for v in rule["verbs"]}
    assert secret_verbs == {"create"}, secret_verbs


def test_secret_create_policy_limits_the_token_secrets():
    """The ValidatingAdmissionPolicy that stands in for resourceNames on the submitter's `create`: bound to the
    namespace, denying, and its name prefix is the one ZenML 0.98 gives the token Secret."""
    from uuid import UUID

    from zenml.integrations.kubernetes.orchestrators.kubernetes_orchestrator import KubernetesOrchestrator

    token_name = KubernetesOrchestrator.get_token_secret_name(None, UUID(int=7))
    prefix = token_name.removesuffix(str(UUID(int=7)))
    [vap] = [d for _, d in ALL_DOCS if d["kind"] == "ValidatingAdmissionPolicy"]
    [binding] = [d for _, d in ALL_DOCS if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"] and vap["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "mbprompt"}
    [rule] = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["secrets"] and rule["operations"] == ["CREATE"] and rule["apiGroups"] == [""]
    [validation] = vap["spec"]["validations"]
    expr = validation["expression"]
    assert f"startsWith('{prefix}')" in expr, (prefix, expr)
    assert "check('get').allowed()" in expr and "object.type == 'Opaque'" in expr, expr


# ---- MinIO credentials -------------------------------------------------------------------------------------------
def _secret_refs(doc: dict) -> set[str]:
    return {e["valueFrom"]["secretKeyRef"]["name"] for e in _env_entries(doc)
            if "secretKeyRef" in (e.get("valueFrom") or {})}


def test_minio_root_credentials_are_separate():
    users = {d["metadata"]["name"]: _secret_refs(d) for _, d in WORKLOAD_DOCS}
    assert {n for n, refs in users.items() if "minio-root" in refs} == {"minio", "minio-buckets"}
    assert "s3-credentials" not in users["minio"], "MinIO's root user must not be the S3 key MLflow and steps use"
    assert "s3-credentials" in users["mlflow"] and "minio-root" not in users["mlflow"]
    [minio] = [d for _, d in WORKLOAD_DOCS if d["metadata"]["name"] == "minio"]
    env = {e["name"]: e for e in minio["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {env[k]["valueFrom"]["secretKeyRef"]["name"] for k in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")} == {
        "minio-root"}


def test_minio_setup_job_limits_the_s3_user_to_the_project_buckets(tmp_path):
    [cm] = [d for _, d in ALL_DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "minio-setup"]
    policy = json.loads(cm["data"]["policy.json"])
    resources, actions = set(), set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources |= set(statement["Resource"])
        actions |= set(statement["Action"])
    assert all(a.startswith("s3:") and "*" not in a and "Bucket" not in a.removeprefix("s3:")[:6]
               for a in actions), f"bucket admin or wildcard actions: {actions}"
    assert not {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"} & actions
    buckets = {r.removeprefix("arn:aws:s3:::").split("/")[0] for r in resources}
    assert buckets == {"mlflow", "zenml"}, resources
    [mlflow_cm] = [d for _, d in ALL_DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mlflow"]
    assert mlflow_cm["data"]["ARTIFACTS_DESTINATION"].removeprefix("s3://").split("/")[0] in buckets
    script = cm["data"]["setup.sh"]
    assert re.search(r"mc mb --ignore-existing minio/mlflow minio/zenml", script)
    assert re.search(r'mc admin policy create minio (\S+) /etc/minio-setup/policy\.json', script)
    name = re.search(r'mc admin policy create minio (\S+) ', script)[1]
    assert f'mc admin policy attach minio {name} --user "$S3_ACCESS_KEY_ID"' in script
    assert 'mc admin user add minio "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"' in script
    path = tmp_path / "setup.sh"
    path.write_text(script)
    check = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    [job] = [d for _, d in WORKLOAD_DOCS if d["metadata"]["name"] == "minio-buckets"]
    pod = job["spec"]["template"]["spec"]
    [c] = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/minio-setup"]]["configMap"]["name"] == "minio-setup"
    assert c["command"] == ["/bin/sh", "/etc/minio-setup/setup.sh"]
    env_names = [e["name"] for e in c["env"]]
    assert env_names.index("MC_HOST_minio") > max(env_names.index("MINIO_ROOT_USER"),
                                                  env_names.index("MINIO_ROOT_PASSWORD")), "$(VAR) needs VAR first"


# ---- NetworkPolicies ---------------------------------------------------------------------------------------------
POLICIES = [d for _, d in ALL_DOCS if d["kind"] == "NetworkPolicy"]
ZENML_SERVER_LABELS = {"app.kubernetes.io/name": "zenml", "app.kubernetes.io/instance": "zenml-server"}
# Pods without a manifest here, labelled as their makers label them: the ZenML chart 0.98 (selector labels of its
# release "zenml-server", server container port 8080 named http, the Service's targetPort), ZenML 0.98's Kubernetes
# orchestrator (tests/k8s/test_schedule.py checks these keys on the pods ZenML itself builds) and `kubectl run`
# (Kaniko). name -> (labels, {port: protocol} that a Service targets on the pod)
OTHER_PODS = {
    "zenml-server": ({**ZENML_SERVER_LABELS, "app.kubernetes.io/component": "server"}, {8080: "TCP"}),
    "zenml-db-migration": (dict(ZENML_SERVER_LABELS), {}),
    "zenml-orchestrator": ({"project_id": "p", "pipeline": "training_pipeline"}, {}),
    "zenml-step": ({"project_id": "p", "pipeline": "training_pipeline", "run_id": "r", "run_name": "n",
                    "step_name": "pretrain"}, {}),
    "kaniko-build": ({"run": "kaniko-build-0a1b2c3d"}, {}),
}
# The chart's database-migration pod carries only the release's selector labels, which select the server too (the
# chart 0.98 is not known to add a label of its own to the server's pods), so it gets the server's rules; it listens
# on nothing, so the server's open port 8080 reaches no process there.
SAME_RULES_AS = {"zenml-db-migration": "zenml-server"}
# Peers outside the namespace, by policy: the cluster DNS and the ingress controller in front of the ZenML server.
OTHER_NAMESPACES = {"kube-system", "ingress-nginx"}
# Policies that may use an ipBlock, and why (the destination is outside the cluster or has no pod labels).
IP_BLOCK_POLICIES = {
    "zenml-orchestrator-pods": "the Kubernetes API server",
    "kaniko-builds": "container registries",
    "object-store-mlflow": "an external object store",
    "object-store-zenml-run-pods": "an external object store",
    "object-store-zenml-server": "an external object store",
}


def _container_ports(pod_spec: dict) -> dict:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
            for c in pod_spec["containers"] for p in c.get("ports", []) if "name" in p}


def _known_pods() -> dict[str, tuple[Pod, dict]]:
    """Every pod the namespace will run: name -> (Pod, {port: protocol} targeted by a Service)."""
    services = [d for _, d in ALL_DOCS if d["kind"] == "Service"]
    pods = {}
    for _, doc in WORKLOAD_DOCS:
        for role, template in _pod_specs(doc):
            labels = template["metadata"]["labels"]
            named = _container_ports(template["spec"])
            served = {}
            for svc in services:
                if selector_matches({"matchLabels": svc["spec"]["selector"]}, labels):
                    for sp in svc["spec"]["ports"]:
                        target = sp.get("targetPort", sp["port"])
                        port, proto = named[target] if isinstance(target, str) else (target, sp.get("protocol", "TCP"))
                        served[port] = proto
            name = doc["metadata"]["name"] + ("" if role in {"template", "jobTemplate"} else f"-{role.lower()}")
            pods[name] = (Pod(name, labels), served)
    for name, (labels, served) in OTHER_PODS.items():
        pods[name] = (Pod(name, labels), served)
    return pods


KNOWN_PODS = _known_pods()
INTRUDER = Pod("intruder", {"app": "anything-else"})


def test_network_policies_found():
    names = {p["metadata"]["name"] for p in POLICIES}
    assert {"default-deny", "allow-dns", "postgres", "mysql", "minio", "mlflow", "zenml-server", "zenml-run-pods",
            "mbprompt-pretrain"} <= names
    assert all(p["metadata"]["namespace"] == "mbprompt" for p in POLICIES)


def test_default_deny_ingress_and_egress():
    deny = [p for p in POLICIES if is_empty_selector(p["spec"].get("podSelector"))
            and {"Ingress", "Egress"} <= policy_types(p)
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"
    # Nothing else opens a namespace-wide rule, except DNS egress.
    for p in POLICIES:
        if is_empty_selector(p["spec"].get("podSelector")) and p not in deny:
            for rule in p["spec"].get("egress", []):
                assert {(pt.get("protocol", "TCP"), pt["port"]) for pt in rule["ports"]} <= {("UDP", 53), ("TCP", 53)}
            assert not p["spec"].get("ingress"), p["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(KNOWN_PODS))
def test_every_pod_has_an_allow_list_of_its_own(name):
    pod, _ = KNOWN_PODS[name]
    own = [p["metadata"]["name"] for p in POLICIES
           if not is_empty_selector(p["spec"].get("podSelector")) and selects(p, pod)]
    assert own, f"pod {name} ({pod.labels}) is selected by no NetworkPolicy of its own"
    types = set().union(*(policy_types(p) for p in POLICIES if selects(p, pod)))
    assert {"Ingress", "Egress"} <= types


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p["metadata"]["name"])
def test_policy_selectors_match_real_pods(policy):
    name, spec = policy["metadata"]["name"], policy["spec"]
    pods = [pod for pod, _ in KNOWN_PODS.values()]
    if not is_empty_selector(spec.get("podSelector")):
        assert any(selects(policy, pod) for pod in pods), f"{name}: podSelector matches no pod: {spec['podSelector']}"
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction, []):
            for peer in rule.get(key, []):
                if "ipBlock" in peer:
                    assert name in IP_BLOCK_POLICIES, f"{name}: ipBlock peer not in IP_BLOCK_POLICIES"
                elif "namespaceSelector" in peer:
                    ns = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    assert ns in OTHER_NAMESPACES, f"{name}: peer namespace {peer['namespaceSelector']}"
                else:
                    assert any(peer_matches(peer, pod) for pod in pods), (
                        f"{name}: {direction} peer matches no pod: {peer}")


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p["metadata"]["name"])
def test_policy_ports_are_service_target_ports(policy):
    """An ingress port must be served (a Service's targetPort) by every pod the policy selects; an egress port towards
    pods of the namespace must be served by a pod the peer selects. Rules without ports are allowed only
    between the pods of one policy (the PyTorchJob's ranks, whose NCCL ports are ephemeral)."""
    name, spec = policy["metadata"]["name"], policy["spec"]
    targets = [(pod, served) for pod, served in KNOWN_PODS.values() if selects(policy, pod)]
    for rule in spec.get("ingress", []):
        if not rule.get("ports"):
            assert [peer.get("podSelector") for peer in rule["from"]] == [spec["podSelector"]], (
                f"{name}: an ingress rule without ports from other pods")
            continue
        for pt in rule["ports"]:
            for pod, served in targets:
                if pod.name in SAME_RULES_AS:  # shares the selector labels of a pod that serves the port
                    pod, served = KNOWN_PODS[SAME_RULES_AS[pod.name]]
                assert served.get(pt["port"]) == pt.get("protocol", "TCP"), (
                    f"{name}: ingress port {pt['port']} is no Service targetPort of pod {pod.name} ({served})")
    for rule in spec.get("egress", []):
        peers = [peer for peer in rule.get("to", []) if "ipBlock" not in peer and "namespaceSelector" not in peer]
        if not peers:
            continue
        if not rule.get("ports"):
            assert [peer.get("podSelector") for peer in peers] == [spec["podSelector"]], (
                f"{name}: an egress rule without ports to other pods")
            continue
        for peer in peers:
            # Some pod the peer selects serves the port (the ZenML chart's selector labels also cover its short-lived
            # database-migration pod, which serves nothing).
            served = [(pod.name, s) for pod, s in KNOWN_PODS.values() if peer_matches(peer, pod)]
            for pt in rule["ports"]:
                assert any(s.get(pt["port"]) == pt.get("protocol", "TCP") for _, s in served), (
                    f"{name}: egress port {pt['port']} is no Service targetPort of the pods {served}")


# Who may reach what (source, destination, port), and what stays closed, over all policies together.
REACHABLE = [
    ("mlflow", "postgres", 5432), ("zenml-server", "mysql", 3306), ("zenml-db-migration", "mysql", 3306),
    ("mlflow", "minio", 9000), ("minio-buckets", "minio", 9000), ("zenml-step", "minio", 9000),
    ("zenml-orchestrator", "minio", 9000), ("zenml-server", "minio", 9000), ("zenml-step", "mlflow", 5000),
    ("mbprompt-pretrain-master", "mlflow", 5000), ("mbprompt-pretrain-worker", "mlflow", 5000),
    ("zenml-step", "zenml-server", 8080), ("zenml-orchestrator", "zenml-server", 8080),
    ("mbprompt-pretrain-worker", "mbprompt-pretrain-master", 23456),
    ("mbprompt-pretrain-master", "mbprompt-pretrain-worker", 41234),  # an NCCL port
]
UNREACHABLE = [
    ("zenml-step", "postgres", 5432), ("zenml-step", "mysql", 3306), ("zenml-orchestrator", "postgres", 5432),
    ("zenml-orchestrator", "mysql", 3306), ("mbprompt-pretrain-master", "minio", 9000),
    ("mbprompt-pretrain-master", "postgres", 5432), ("kaniko-build", "minio", 9000),
    ("kaniko-build", "mlflow", 5000), ("kaniko-build", "zenml-server", 8080), ("mlflow", "mysql", 3306),
    ("zenml-server", "postgres", 5432), ("minio-buckets", "mlflow", 5000), ("minio-buckets", "postgres", 5432),
    ("zenml-step", "mbprompt-pretrain-master", 23456), ("zenml-step", "minio", 9001), ("minio", "mlflow", 5000),
    ("postgres", "minio", 9000), ("mysql", "zenml-server", 8080), ("mlflow", "zenml-server", 8080),
    ("intruder", "postgres", 5432), ("intruder", "mysql", 3306), ("intruder", "minio", 9000),
    ("intruder", "mlflow", 5000), ("intruder", "zenml-server", 8080), ("intruder", "mbprompt-pretrain-master", 23456),
]


def _pod(name: str) -> Pod:
    return INTRUDER if name == "intruder" else KNOWN_PODS[name][0]


@pytest.mark.parametrize(("src", "dst", "port"), REACHABLE, ids=lambda x: str(x))
def test_reachable(src, dst, port):
    assert allowed(POLICIES, _pod(src), _pod(dst), port), f"{src} -> {dst}:{port} is blocked"


@pytest.mark.parametrize(("src", "dst", "port"), UNREACHABLE, ids=lambda x: str(x))
def test_unreachable(src, dst, port):
    assert not allowed(POLICIES, _pod(src), _pod(dst), port), f"{src} -> {dst}:{port} is open"


def test_dns_and_the_outside():
    dns = Pod("coredns", {"k8s-app": "kube-dns"}, namespace="kube-system")
    for name in KNOWN_PODS:
        assert allowed(POLICIES, _pod(name), dns, 53, "UDP"), f"{name} cannot resolve names"
    ingress_controller = Pod("ingress-nginx-controller", {"app.kubernetes.io/name": "ingress-nginx"},
                             namespace="ingress-nginx")
    for name in ("zenml-step", "zenml-orchestrator"):
        assert allowed(POLICIES, _pod(name), ingress_controller, 443), name
    # Only the server's own HTTP port is open to the outside (its Ingress or load balancer).
    for name, (pod, _) in KNOWN_PODS.items():
        expected = "zenml-server" in {name, SAME_RULES_AS.get(name)}
        assert allowed(POLICIES, ingress_controller, pod, 8080) is expected, name
