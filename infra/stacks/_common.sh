# shellcheck shell=bash
# Shared by register_k8s_stack.sh and register_kubeflow_stack.sh (sourced, not run). Everything comes from the
# environment; secret values only ever reach ZenML through a mode-0600 temporary file, never the command line.

ZENML=${ZENML:-zenml}
PYTHON=${PYTHON:-python3}

ARTIFACT_STORE_NAME=${ARTIFACT_STORE_NAME:-mbprompt-s3}
S3_SECRET_NAME=${S3_SECRET_NAME:-mbprompt_s3}
CONTAINER_REGISTRY_NAME=${CONTAINER_REGISTRY_NAME:-mbprompt-registry}
CONTAINER_REGISTRY_FLAVOR=${CONTAINER_REGISTRY_FLAVOR:-default}
IMAGE_BUILDER_NAME=${IMAGE_BUILDER_NAME:-mbprompt-kaniko}
KANIKO_EXECUTOR_IMAGE=${KANIKO_EXECUTOR_IMAGE:-gcr.io/kaniko-project/executor:v1.23.2}
REGISTRY_SECRET=${REGISTRY_SECRET:-registry-credentials}
# The steps name their tracker MBPROMPT_EXPERIMENT_TRACKER (default "mlflow_tracker", as the local stack does).
TRACKER_NAME=${TRACKER_NAME:-${MBPROMPT_EXPERIMENT_TRACKER:-mlflow_tracker}}
MODEL_REGISTRY_NAME=${MODEL_REGISTRY_NAME:-mlflow_registry}
MLFLOW_SECRET_NAME=${MLFLOW_SECRET_NAME:-mbprompt_mlflow}

die() {
  echo "error: $*" >&2
  exit 2
}

# require_env VAR...: fail naming every variable that is unset or empty.
require_env() {
  local missing=() var
  for var in "$@"; do
    [[ -n "${!var:-}" ]] || missing+=("$var")
  done
  if ((${#missing[@]})); then
    die "missing environment variable(s): ${missing[*]} (see the header of $(basename "$0"))"
  fi
}

# require_pair A B: both set or both unset.
require_pair() {
  if { [[ -n "${!1:-}" ]] && [[ -z "${!2:-}" ]]; } || { [[ -z "${!1:-}" ]] && [[ -n "${!2:-}" ]]; }; then
    die "set both $1 and $2, or neither"
  fi
}

check_common_values() {
  [[ $ARTIFACT_STORE_URI == s3://* ]] || die "ARTIFACT_STORE_URI must be an s3:// URI, got '$ARTIFACT_STORE_URI'"
  [[ $MLFLOW_TRACKING_URI == http://* || $MLFLOW_TRACKING_URI == https://* ]] ||
    die "MLFLOW_TRACKING_URI must be an http(s):// URL of the MLflow server, got '$MLFLOW_TRACKING_URI'"
  require_pair S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY
  require_pair MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
  # ZenML's MLflow tracker refuses a remote server without exactly one authentication method.
  local has_user=0 has_token=0
  [[ -z "${MLFLOW_TRACKING_USERNAME:-}" ]] || has_user=1
  [[ -z "${MLFLOW_TRACKING_TOKEN:-}" ]] || has_token=1
  ((has_user + has_token == 1)) ||
    die "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN (exactly one of the two)"
}

# upsert KIND NAME FLAVOR [--key=value...]: register the stack component, or update it when it exists.
upsert() {
  local kind=$1 name=$2 flavor=$3
  shift 3
  if "$ZENML" "$kind" describe "$name" >/dev/null 2>&1; then
    "$ZENML" "$kind" update "$name" "$@"
  else
    "$ZENML" "$kind" register "$name" --flavor="$flavor" "$@"
  fi
}

# upsert_secret NAME KEY=ENV_VAR...: a ZenML secret whose KEY holds the value of ENV_VAR. The values go through a
# mode-0600 temporary file (`--values=@file`), removed afterwards and on any exit.
_secret_file=""
trap 'rm -f "$_secret_file"' EXIT
upsert_secret() {
  local name=$1
  shift
  _secret_file=$(mktemp)
  chmod 600 "$_secret_file"
  "$PYTHON" - "$_secret_file" "$@" <<'PY'
import json, os, sys
path, pairs = sys.argv[1], sys.argv[2:]
with open(path, "w") as f:
    json.dump({key: os.environ[var] for key, var in (p.split("=", 1) for p in pairs)}, f)
PY
  if "$ZENML" secret get "$name" >/dev/null 2>&1; then
    "$ZENML" secret update "$name" --values="@$_secret_file"
  else
    "$ZENML" secret create "$name" --values="@$_secret_file"
  fi
  rm -f "$_secret_file"
  _secret_file=""
}

# The components both stacks share: S3 artifact store, container registry, Kaniko image builder, MLflow
# experiment tracker and model registry.
register_shared_components() {
  local s3_args=(--path="$ARTIFACT_STORE_URI")
  if [[ -n "${S3_ACCESS_KEY_ID:-}" ]]; then
    upsert_secret "$S3_SECRET_NAME" aws_access_key_id=S3_ACCESS_KEY_ID aws_secret_access_key=S3_SECRET_ACCESS_KEY
    s3_args+=(--key="{{$S3_SECRET_NAME.aws_access_key_id}}" --secret="{{$S3_SECRET_NAME.aws_secret_access_key}}")
  fi
  if [[ -n "${S3_ENDPOINT_URL:-}" ]]; then
    s3_args+=(--client_kwargs="{\"endpoint_url\": \"$S3_ENDPOINT_URL\"}")
  fi
  upsert artifact-store "$ARTIFACT_STORE_NAME" s3 "${s3_args[@]}"

  upsert container-registry "$CONTAINER_REGISTRY_NAME" "$CONTAINER_REGISTRY_FLAVOR" --uri="$CONTAINER_REGISTRY_URI"

  # Kaniko pushes with the registry's docker config, mounted from a Kubernetes Secret of type
  # kubernetes.io/dockerconfigjson (infra/k8s/README.md shows how to create it).
  upsert image-builder "$IMAGE_BUILDER_NAME" kaniko \
    --kubernetes_context="$KUBE_CONTEXT" \
    --kubernetes_namespace="${KANIKO_NAMESPACE:-$K8S_NAMESPACE}" \
    --executor_image="$KANIKO_EXECUTOR_IMAGE" \
    --service_account_name=mbprompt-step \
    --volume_mounts='[{"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": true}]' \
    --volumes="[{\"name\": \"docker-config\", \"secret\": {\"secretName\": \"$REGISTRY_SECRET\", \"items\": [{\"key\": \".dockerconfigjson\", \"path\": \"config.json\"}]}}]"

  local tracker_args=(--tracking_uri="$MLFLOW_TRACKING_URI")
  if [[ -n "${MLFLOW_TRACKING_USERNAME:-}" ]]; then
    upsert_secret "$MLFLOW_SECRET_NAME" username=MLFLOW_TRACKING_USERNAME password=MLFLOW_TRACKING_PASSWORD
    tracker_args+=(--tracking_username="{{$MLFLOW_SECRET_NAME.username}}"
      --tracking_password="{{$MLFLOW_SECRET_NAME.password}}")
  else
    upsert_secret "$MLFLOW_SECRET_NAME" token=MLFLOW_TRACKING_TOKEN
    tracker_args+=(--tracking_token="{{$MLFLOW_SECRET_NAME.token}}")
  fi
  upsert experiment-tracker "$TRACKER_NAME" mlflow "${tracker_args[@]}"
  upsert model-registry "$MODEL_REGISTRY_NAME" mlflow
}

# register_stack ORCHESTRATOR_NAME: the stack from the orchestrator and the shared components, then activate it.
register_stack() {
  local args=(-o "$1" -a "$ARTIFACT_STORE_NAME" -c "$CONTAINER_REGISTRY_NAME" -i "$IMAGE_BUILDER_NAME"
    -e "$TRACKER_NAME" -r "$MODEL_REGISTRY_NAME")
  if "$ZENML" stack describe "$STACK_NAME" >/dev/null 2>&1; then
    "$ZENML" stack update "$STACK_NAME" "${args[@]}"
  else
    "$ZENML" stack register "$STACK_NAME" "${args[@]}"
  fi
  "$ZENML" stack set "$STACK_NAME"
}
