#!/usr/bin/env bash
# Register (or update) and activate a ZenML stack that runs mbprompt's pipelines on Kubeflow Pipelines (KFP 2.x):
# the same artifact store, registry, Kaniko builder and MLflow components as register_k8s_stack.sh, with ZenML's
# kubeflow orchestrator (ZenML compiles a KFP v2 pipeline and uploads it; schedules become recurring runs).
# Needs the `kubeflow` extra on the client: pip install -e ".[kubeflow]".
#
# Required environment:
#   KFP_HOST                Kubeflow Pipelines API endpoint, e.g. https://kubeflow.example.com/pipeline
#   KUBE_CONTEXT            kubectl context of the cluster where Kaniko builds
#   K8S_NAMESPACE           namespace of the Kaniko build pods, e.g. mbprompt
#   ARTIFACT_STORE_URI      s3://bucket/prefix for ZenML artifacts
#   CONTAINER_REGISTRY_URI  registry the images are pushed to
#   MLFLOW_TRACKING_URI     MLflow server as the pipeline pods see it
#   MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN (as in register_k8s_stack.sh)
# Optional:
#   KFP_USER_NAMESPACE      Kubeflow profile namespace for experiments and runs (multi-user Kubeflow)
#   KFP_USERNAME, KFP_PASSWORD  Dex login of a multi-user Kubeflow (stored as the ZenML secret $KFP_SECRET_NAME)
#   and every optional variable of register_k8s_stack.sh (S3_*, KANIKO_*, *_NAME).
set -euo pipefail

# shellcheck source=_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

STACK_NAME=${STACK_NAME:-mbprompt-kubeflow}
ORCHESTRATOR_NAME=${ORCHESTRATOR_NAME:-mbprompt-kubeflow-orchestrator}
KFP_SECRET_NAME=${KFP_SECRET_NAME:-mbprompt_kfp}

require_env KFP_HOST KUBE_CONTEXT K8S_NAMESPACE ARTIFACT_STORE_URI CONTAINER_REGISTRY_URI MLFLOW_TRACKING_URI
check_common_values
[[ $KFP_HOST == http://* || $KFP_HOST == https://* ]] || die "KFP_HOST must be an http(s):// URL, got '$KFP_HOST'"
require_pair KFP_USERNAME KFP_PASSWORD

register_shared_components

# kubeflow_hostname, not kubernetes_context: ZenML prefers a context when both are set, and the hostname is what
# a multi-user Kubeflow needs.
kfp_args=(--kubeflow_hostname="$KFP_HOST")
if [[ -n "${KFP_USER_NAMESPACE:-}" ]]; then
  kfp_args+=(--user_namespace="$KFP_USER_NAMESPACE")
fi
if [[ -n "${KFP_USERNAME:-}" ]]; then
  upsert_secret "$KFP_SECRET_NAME" username=KFP_USERNAME password=KFP_PASSWORD
  kfp_args+=(--client_username="{{$KFP_SECRET_NAME.username}}" --client_password="{{$KFP_SECRET_NAME.password}}")
fi
upsert orchestrator "$ORCHESTRATOR_NAME" kubeflow "${kfp_args[@]}"

register_stack "$ORCHESTRATOR_NAME"
echo "stack '$STACK_NAME' registered and active (orchestrator: kubeflow at $KFP_HOST)"
