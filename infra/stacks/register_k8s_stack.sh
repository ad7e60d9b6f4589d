#!/usr/bin/env bash
# Register (or update) and activate the remote ZenML stack that runs mbprompt's pipelines on Kubernetes:
#   orchestrator        kubernetes  (ZenML's own; one Job per step, CronJobs for schedules)
#   artifact store      s3          (AWS S3 or any S3-compatible store such as the MinIO of infra/k8s/)
#   container registry  default     (any OCI registry)
#   image builder       kaniko      (builds in the cluster; no local Docker)
#   experiment tracker  mlflow      and model registry mlflow, on the shared MLflow server
# Run it with the ZenML client logged in to the deployed ZenML server (`zenml login <url>`); remote orchestrators
# refuse a local store. Apply infra/k8s/ first: the orchestrator uses its service accounts.
#
# Required environment:
#   KUBE_CONTEXT            kubectl context of the cluster (also where Kaniko builds)
#   K8S_NAMESPACE           namespace of the pipeline pods, e.g. mbprompt
#   ARTIFACT_STORE_URI      s3://bucket/prefix for ZenML artifacts, e.g. s3://zenml/artifacts
#   CONTAINER_REGISTRY_URI  registry the images are pushed to, e.g. ghcr.io/acme
#   MLFLOW_TRACKING_URI     MLflow server as the pods see it, e.g. http://mlflow.mbprompt.svc.cluster.local:5000
#   MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN: the MLflow credentials
#                           (ZenML 0.98 requires one method for a remote MLflow), stored as the ZenML secret
#                           $MLFLOW_SECRET_NAME (default mbprompt_mlflow) and referenced from the tracker
# Optional:
#   S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY  stored as the ZenML secret $S3_SECRET_NAME and referenced as
#                           {{mbprompt_s3.aws_access_key_id}}; leave both unset to use the pods' own credentials
#   S3_ENDPOINT_URL         S3-compatible endpoint, e.g. http://minio.mbprompt.svc.cluster.local:9000 (the pods
#                           use it; a workstation that loads artifacts locally must reach it too)
#   KANIKO_NAMESPACE (default $K8S_NAMESPACE), REGISTRY_SECRET (default registry-credentials),
#   KANIKO_EXECUTOR_IMAGE, STACK_NAME (default mbprompt-k8s), ORCHESTRATOR_NAME and the other *_NAME variables
#   of _common.sh, ZENML (the zenml CLI), PYTHON (default python3).
set -euo pipefail

# shellcheck source=_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

STACK_NAME=${STACK_NAME:-mbprompt-k8s}
ORCHESTRATOR_NAME=${ORCHESTRATOR_NAME:-mbprompt-k8s-orchestrator}

require_env KUBE_CONTEXT K8S_NAMESPACE ARTIFACT_STORE_URI CONTAINER_REGISTRY_URI MLFLOW_TRACKING_URI
check_common_values

register_shared_components

# Service accounts from infra/k8s/: the orchestrator pod gets the least Role it needs, the step pods none. The
# per-run API token reaches the pods through a Kubernetes Secret instead of a plain environment value.
upsert orchestrator "$ORCHESTRATOR_NAME" kubernetes \
  --kubernetes_context="$KUBE_CONTEXT" \
  --kubernetes_namespace="$K8S_NAMESPACE" \
  --service_account_name=zenml-orchestrator \
  --step_pod_service_account_name=mbprompt-step \
  --pass_zenml_token_as_secret=true

register_stack "$ORCHESTRATOR_NAME"
echo "stack '$STACK_NAME' registered and active (orchestrator: kubernetes, namespace $K8S_NAMESPACE)"
