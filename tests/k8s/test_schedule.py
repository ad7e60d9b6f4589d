"""The weekly CronJob of configs/training.k8s.yaml, produced offline by ZenML 0.98's own Kubernetes orchestrator.

What is ZenML's own code path here, unchanged:

- ``training_pipeline.with_options(config_path="configs/training.k8s.yaml")``, ``prepare()`` and
  ``Pipeline._create_snapshot`` (what ``zenml pipeline run ... -c`` runs before submitting): parsing the YAML into a
  ``PipelineRunConfiguration``, compiling our real pipeline against a registered stack (the settings are validated
  into ``KubernetesOrchestratorSettings``/``KubernetesPodSettings``/``DockerSettings``), ``stack.validate()``,
  registering the schedule (``ScheduleRequest``), the image build through ``build_utils`` and
  ``PipelineDockerImageBuilder`` (the step image's name and its Dockerfile on top of our parent image), and storing
  the snapshot in a real ZenML store (SQLite in the test's temp dir, the ``zenml_env`` fixture).
- ``KubernetesOrchestrator.submit_pipeline`` -> ``_submit_orchestrator_job`` -> ``_prepare_job_manifest`` ->
  ``manifest_utils.build_pod_manifest`` / ``build_job_manifest`` / ``job_template_manifest_from_job`` /
  ``build_cron_job_manifest``; the test captures the ``V1CronJob`` passed to ``create_namespaced_cron_job``.

What is NOT (no cluster, no Docker engine, no ZenML server here):

- The Kubernetes API is a mock (``_k8s_batch_api``/``_k8s_core_api``): nothing checks that the cluster accepts the
  CronJob beyond kubernetes-validate's strict schema check.  The kube context check of ``stack.validate()`` is
  answered by a stub (``get_kubernetes_contexts``), and the orchestrator has ``skip_local_validations`` so a stack
  with the local artifact store and MLflow of the test store passes (the real stack uses S3 and a remote MLflow).
- The image is not built: ``KanikoImageBuilder.build`` is a stub that records the image name and the Dockerfile
  ZenML generated and returns the name.  (The real Kaniko builder returns ``name@sha256:<digest>``, so on a cluster
  the CronJob's image is the same name pinned by digest.)
- The step pods are not produced by ZenML in this process: in a real run the CronJob starts the orchestrator pod,
  whose ``kubernetes_orchestrator_entrypoint.main`` builds one Job per step at every tick, and it needs a server.
  ``_step_job`` below repeats the manifest part of that function's ``start_step_job`` (ZenML 0.98: the step's
  ``orchestrator.get_settings(step_configuration)``, ``kube_utils.apply_default_resource_requests``, the token
  Secret env, the pod labels (``base_labels`` of ``main`` plus ``step_name``; the run's id and name are stand-ins,
  there is no run), ``build_pod_manifest``, ``build_job_manifest``) on the stored snapshot's step configurations;
  only that wiring is copied, every function it calls is ZenML's.  If a ZenML upgrade changes ``start_step_job``,
  this copy must follow.  The NetworkPolicies of infra/k8s select ZenML's pods by those label keys; the last test
  here checks that they pick the orchestrator pod of the CronJob and the step pods as intended.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
import yaml
from kubernetes_validate import utils as kv

pytestmark = pytest.mark.slow  # ZenML schedules a run on a real store

REPO = Path(__file__).resolve().parents[2]

CONFIG = REPO / "configs" / "training.k8s.yaml"
DAILY_CONFIG = REPO / "configs" / "prompt_refresh.k8s.yaml"
K8S_VERSIONS = sorted({"1.30", kv.major_minor(kv.latest_version())}, key=lambda v: tuple(map(int, v.split("."))))
NAMESPACE = "mbprompt"
REGISTRY = "registry.example.com/mbprompt"
STACK = "mbprompt-k8s-offline"
GPU = "nvidia.com/gpu"
# The orchestrator and image builder exactly as infra/stacks/register_k8s_stack.sh registers them (plus
# skip_local_validations, see the docstring).
ORCHESTRATOR_CONFIG = {"kubernetes_context": "prod-cluster", "kubernetes_namespace": NAMESPACE,
                       "service_account_name": "zenml-orchestrator", "step_pod_service_account_name": "mbprompt-step",
                       "pass_zenml_token_as_secret": True, "skip_local_validations": True}
KANIKO_CONFIG = {"kubernetes_context": "prod-cluster", "kubernetes_namespace": NAMESPACE,
                 "executor_image": "gcr.io/kaniko-project/executor:v1.23.2", "service_account_name": "mbprompt-step"}


OFFLINE_RUN_ID = "00000000-0000-4000-8000-000000000001"  # stands in for the pipeline run's id in step pod labels


def _to_dict(obj) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


@pytest.fixture(scope="module")
def submitted(zenml_env):
    """Runs ZenML's snapshot creation and submission for configs/training.k8s.yaml on a Kubernetes stack in the
    test store; returns what reached the (mocked) Kubernetes API."""
    from pipelines.training import training_pipeline

    return _submit(training_pipeline, CONFIG)


@pytest.fixture(scope="module")
def submitted_daily(zenml_env):
    """The same for the daily refresh, configs/prompt_refresh.k8s.yaml."""
    from pipelines.prompt_refresh import prompt_refresh_pipeline

    return _submit(prompt_refresh_pipeline, DAILY_CONFIG)


def _submit(pipeline_obj, config_file: Path) -> dict:
    from zenml.client import Client
    from zenml.enums import StackComponentType as T
    from zenml.integrations.kaniko.image_builders.kaniko_image_builder import KanikoImageBuilder
    from zenml.integrations.kubernetes.orchestrators.kubernetes_orchestrator import KubernetesOrchestrator

    client = Client()
    previous_stack = client.active_stack_model.id
    for name, flavor, kind, config in [
            ("mbprompt-k8s-orchestrator", "kubernetes", T.ORCHESTRATOR, ORCHESTRATOR_CONFIG),
            ("mbprompt-registry", "default", T.CONTAINER_REGISTRY, {"uri": REGISTRY}),
            ("mbprompt-kaniko", "kaniko", T.IMAGE_BUILDER, KANIKO_CONFIG)]:
        try:
            client.get_stack_component(kind, name, allow_name_prefix_match=False)
        except KeyError:
            client.create_stack_component(name, flavor, kind, config)
    try:
        client.get_stack(STACK, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack(STACK, components={
            T.ORCHESTRATOR: "mbprompt-k8s-orchestrator", T.ARTIFACT_STORE: "default",
            T.CONTAINER_REGISTRY: "mbprompt-registry", T.IMAGE_BUILDER: "mbprompt-kaniko",
            T.EXPERIMENT_TRACKER: "mlflow_tracker", T.MODEL_REGISTRY: "mlflow_registry"})

    builds: list[tuple[str, str]] = []

    def kaniko_build(self, image_name, build_context, docker_build_options=None, container_registry=None):
        builds.append((image_name, build_context.get_extra_files()["Dockerfile"]))
        return image_name

    batch, core = mock.MagicMock(), mock.MagicMock()
    batch.create_namespaced_cron_job.side_effect = lambda body, namespace: body
    environment = {"ZENML_STORE_URL": "https://zenml.example.com", "ZENML_STORE_API_TOKEN": "offline-test-token"}
    client.activate_stack(STACK)
    try:
        with mock.patch.object(KubernetesOrchestrator, "get_kubernetes_contexts",
                               return_value=(["prod-cluster"], "prod-cluster")), \
             mock.patch.object(KanikoImageBuilder, "build", kaniko_build), \
             mock.patch.object(KubernetesOrchestrator, "_k8s_batch_api", new_callable=mock.PropertyMock,
                               return_value=batch), \
             mock.patch.object(KubernetesOrchestrator, "_k8s_core_api", new_callable=mock.PropertyMock,
                               return_value=core):
            pipeline = pipeline_obj.with_options(config_path=str(config_file))
            pipeline.prepare()
            snapshot = pipeline._create_snapshot(**pipeline._run_args)
            stack = client.active_stack
            result = stack.orchestrator.submit_pipeline(snapshot=snapshot, stack=stack,
                                                        base_environment=dict(environment), step_environments={},
                                                        placeholder_run=None)
    finally:
        client.activate_stack(previous_stack)
    assert batch.create_namespaced_cron_job.call_count == 1, "a schedule must become a CronJob, not a Job"
    assert not batch.create_namespaced_job.called
    call = batch.create_namespaced_cron_job.call_args
    return {"cron_job": _to_dict(call.kwargs["body"]), "namespace": call.kwargs["namespace"], "result": result,
            "snapshot": snapshot, "orchestrator": stack.orchestrator, "builds": builds, "core": core}


def _step_job(submitted, step_name: str) -> dict:
    """The Job the orchestrator pod would create for one step (see the docstring: the wiring of ZenML 0.98's
    kubernetes_orchestrator_entrypoint.start_step_job, ZenML's functions)."""
    from zenml.entrypoints.step_entrypoint_configuration import StepEntrypointConfiguration
    from zenml.integrations.kubernetes import kube_utils
    from zenml.integrations.kubernetes.manifest_utils import (
        build_job_manifest,
        build_pod_manifest,
        pod_template_manifest_from_pod,
    )
    from zenml.integrations.kubernetes.orchestrators.kubernetes_orchestrator import KubernetesOrchestrator

    snapshot, orchestrator = submitted["snapshot"], submitted["orchestrator"]
    settings = orchestrator.get_settings(snapshot.step_configurations[step_name])
    pod_settings = kube_utils.apply_default_resource_requests(memory="400Mi", pod_settings=settings.pod_settings)
    pod_settings.env.append({"name": "ZENML_STORE_API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": orchestrator.get_token_secret_name(snapshot.id), "key": "zenml_api_token"}}})
    pod = build_pod_manifest(
        pod_name=None, image_name=KubernetesOrchestrator.get_image(snapshot=snapshot, step_name=step_name),
        command=StepEntrypointConfiguration.get_entrypoint_command(),
        args=StepEntrypointConfiguration.get_entrypoint_arguments(step_name=step_name, snapshot_id=snapshot.id),
        env={"ZENML_STORE_URL": "https://zenml.example.com"}, privileged=settings.privileged,
        pod_settings=pod_settings,
        service_account_name=settings.step_pod_service_account_name or settings.service_account_name,
        mount_local_stores=False, termination_grace_period_seconds=settings.pod_stop_grace_period,
        labels={"project_id": kube_utils.sanitize_label_value(str(snapshot.project_id)),
                "run_id": kube_utils.sanitize_label_value(str(OFFLINE_RUN_ID)),
                "run_name": kube_utils.sanitize_label_value("offline-run"),
                "pipeline": kube_utils.sanitize_label_value(snapshot.pipeline_configuration.name),
                "step_name": kube_utils.sanitize_label_value(step_name)}, annotations={})
    job = build_job_manifest(job_name=kube_utils.sanitize_label(f"-offline-{step_name}-training_pipeline"),
                             pod_template=pod_template_manifest_from_pod(pod), backoff_limit=settings.backoff_limit_margin,
                             ttl_seconds_after_finished=settings.ttl_seconds_after_finished,
                             active_deadline_seconds=settings.active_deadline_seconds,
                             pod_failure_policy=settings.pod_failure_policy)
    # ZenML's V1Job carries no apiVersion/kind (the API server takes them from the batch/v1 jobs endpoint that
    # kube_utils.create_job posts to); they are added here for the schema check.
    return {"apiVersion": "batch/v1", "kind": "Job", **_to_dict(job)}


def _validate(doc: dict, version: str) -> None:
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        pytest.fail(f"{doc['kind']} {doc['metadata'].get('name')}: {'.'.join(map(str, e.path))}: {e.message}",
                    pytrace=False)


def test_config_declares_a_weekly_cron_schedule():
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    run_config = PipelineRunConfiguration.model_validate(yaml.safe_load(CONFIG.read_text()))
    assert run_config.schedule and run_config.schedule.cron_expression == "0 3 * * 1"
    assert run_config.schedule.interval_second is None  # ZenML's Kubernetes orchestrator rejects interval schedules


def test_zenml_submits_a_cron_job_with_the_weekly_schedule(submitted):
    cron = submitted["cron_job"]
    assert submitted["namespace"] == NAMESPACE
    assert cron["apiVersion"] == "batch/v1" and cron["kind"] == "CronJob"
    assert cron["spec"]["schedule"] == "0 3 * * 1"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] == 3600
    # ZenML registered the schedule in its store; `zenml pipeline schedule ...` finds the CronJob through this.
    schedule = submitted["snapshot"].schedule
    assert schedule.name == "mbprompt-training-weekly" and schedule.cron_expression == "0 3 * * 1"
    assert submitted["result"].metadata == {"cron_job_name": cron["metadata"]["name"]}


def test_cron_job_runs_the_orchestrator_pod_from_our_image(submitted):
    pod = submitted["cron_job"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = f"{REGISTRY}/zenml:training_pipeline-orchestrator"
    assert container["image"] == image
    assert container["command"][-1] == "zenml.integrations.kubernetes.orchestrators.kubernetes_orchestrator_entrypoint"
    assert pod["serviceAccountName"] == "zenml-orchestrator"
    assert GPU not in container["resources"].get("limits", {})
    # The token reaches the pod through a Secret, never as a literal value in the CronJob.
    env = {e["name"]: e for e in container["env"]}
    assert "value" not in env["ZENML_STORE_API_TOKEN"] and "secretKeyRef" in env["ZENML_STORE_API_TOKEN"]["valueFrom"]
    assert "offline-test-token" not in yaml.safe_dump(submitted["cron_job"])
    # That image is ZenML's build on top of our parent image, code baked in, running as uid 10001.
    ((name, dockerfile),) = submitted["builds"]
    assert name == image
    lines = dockerfile.splitlines()
    assert lines[0] == "FROM registry.example.com/mbprompt/mbprompt:0.1.0-base"
    assert "COPY . ." in lines and lines[-1] == "USER 10001"


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_cron_job_validates_strictly(submitted, k8s_version):
    _validate(submitted["cron_job"], k8s_version)


def test_pretrain_step_pod_gets_the_gpu_node(submitted):
    job = _step_job(submitted, "pretrain")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"][GPU] == "1"
    assert container["resources"]["requests"][GPU] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["image"] == f"{REGISTRY}/zenml:training_pipeline-orchestrator"
    assert pod["serviceAccountName"] == "mbprompt-step"


@pytest.mark.parametrize("step", ["fingerprint_input", "ingest", "validate", "clean", "split", "evaluate", "register"])
def test_other_step_pods_stay_on_cpu(submitted, step):
    pod = _step_job(submitted, step)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for kind in ("limits", "requests"):
        assert GPU not in container["resources"].get(kind, {}), f"{step} asks for a GPU"
    assert not pod.get("nodeSelector") and not pod.get("tolerations")


def test_every_step_pod_mounts_the_data_volume(submitted):
    raw_path = yaml.safe_load(CONFIG.read_text())["parameters"]["raw_path"]
    assert set(submitted["snapshot"].step_configurations) == {
        "fingerprint_input", "ingest", "validate", "clean", "split", "pretrain", "evaluate", "register"}
    for step in submitted["snapshot"].step_configurations:
        pod = _step_job(submitted, step)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        assert "/mnt/data" in mounts and raw_path.startswith("/mnt/data/"), step
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert volumes[mounts["/mnt/data"]["name"]]["persistentVolumeClaim"]["claimName"] == "mbprompt-data", step


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("step", ["pretrain", "split"])
def test_step_jobs_validate_strictly(submitted, step, k8s_version):
    _validate(_step_job(submitted, step), k8s_version)


# ---- the daily refresh: configs/prompt_refresh.k8s.yaml ----------------------------------------------------------
DAILY_STEPS = {"fingerprint_input", "ingest", "validate", "clean", "align_vocab", "split", "retune_head", "evaluate",
               "register"}


def test_zenml_submits_a_daily_cron_job_with_the_gpu_on_retune_head_only(submitted_daily):
    cron = submitted_daily["cron_job"]
    assert cron["kind"] == "CronJob" and cron["spec"]["schedule"] == "0 4 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert submitted_daily["snapshot"].schedule.name == "mbprompt-prompt-refresh-daily"
    assert set(submitted_daily["snapshot"].step_configurations) == DAILY_STEPS
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{REGISTRY}/zenml:prompt_refresh_pipeline-orchestrator"
    for step in DAILY_STEPS:
        pod = _step_job(submitted_daily, step)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        gpu = container["resources"].get("limits", {}).get(GPU)
        if step == "retune_head":
            assert gpu == "1" and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        else:
            assert gpu is None and not pod.get("nodeSelector"), f"{step} asks for a GPU"
        assert "/mnt/data" in {m["mountPath"] for m in container.get("volumeMounts", [])}, step


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_daily_cron_job_and_gpu_step_job_validate_strictly(submitted_daily, k8s_version):
    _validate(submitted_daily["cron_job"], k8s_version)
    _validate(_step_job(submitted_daily, "retune_head"), k8s_version)


# ---- the NetworkPolicies of infra/k8s on the pods ZenML builds ---------------------------------------------------
def test_network_policies_select_zenmls_pods(submitted):
    """The orchestrator pod (the CronJob's template, ZenML's manifest) and a step pod get their allow-lists, and the
    connections they need pass while the databases stay closed to them."""
    from tests.k8s.netpol import Pod, allowed, selects

    policies = [d for path in sorted((REPO / "infra" / "k8s").glob("*networkpolicy*.yaml"))
                for d in yaml.safe_load_all(path.read_text()) if d]
    template = submitted["cron_job"]["spec"]["jobTemplate"]["spec"]["template"]
    orchestrator = Pod("orchestrator", template["metadata"]["labels"])
    step = Pod("step", _step_job(submitted, "pretrain")["spec"]["template"]["metadata"]["labels"])
    names = lambda pod: {p["metadata"]["name"] for p in policies if selects(p, pod)}  # noqa: E731
    assert names(orchestrator) >= {"zenml-run-pods", "zenml-orchestrator-pods"}, orchestrator.labels
    assert "zenml-step-pods" not in names(orchestrator)
    assert names(step) >= {"zenml-run-pods", "zenml-step-pods"} and "zenml-orchestrator-pods" not in names(step)
    server = Pod("zenml-server", {"app.kubernetes.io/name": "zenml", "app.kubernetes.io/instance": "zenml-server"})
    pods = {d["metadata"]["name"]: Pod(d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"])
            for path in (REPO / "infra" / "k8s").glob("*.yaml") if not path.name.endswith("values.yaml")
            for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") in {"Deployment", "StatefulSet"}}
    for pod in (orchestrator, step):
        assert allowed(policies, pod, server, 8080) and allowed(policies, pod, pods["minio"], 9000), pod.name
        assert not allowed(policies, pod, pods["postgres"], 5432) and not allowed(policies, pod, pods["mysql"], 3306)
    assert allowed(policies, step, pods["mlflow"], 5000)
