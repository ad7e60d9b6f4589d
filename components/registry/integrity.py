"""Integrity of registered versions: a manifest of every stored file's sha256, checked before a version is used.

When ``register_recommender`` has logged a version, :func:`record_manifest` downloads the version's files as
stored (weights, ``model.json``, ``items.json``, the model code under ``code/``, ``pyfunc_model.py``, ``MLmodel``
and the environment files), takes the sha256 of each file's bytes and logs them as a JSON manifest in the
version's run (``integrity/<name>-v<version>.json``).  The manifest's own sha256 is a version tag
(``manifest_sha256``): the tag lives in the registry's database, not in the artifact store, so editing files in the
artifact store, the manifest included, cannot make a tampered version pass.

Checks (:func:`verify_version`, :func:`verify_model_dir`) recompute the digests of a downloaded copy and refuse,
with :class:`IntegrityError` naming the model, the version, the file and the check, when a file differs, is missing
or was added, or when the manifest no longer matches its tag.  Python's bytecode caches (``__pycache__``) are not
covered: Python writes them itself when the model code is imported; nor is ``registered_model_meta``, which MLflow
writes when it downloads a ``models:/`` URI.

Where the checks run, and their limit:

- ``components.registry.versions.load_version`` / ``load_served`` and ``components.registry.store.
  fetch_base_weights`` check the downloaded copy before reading anything from it.  These loaders never import the
  stored code (they use the installed ``components`` package), so a tampered version is refused before any of its
  bytes are used.
- ``mlflow.pyfunc.load_model`` imports the stored ``pyfunc_model.py`` (and, through it, the stored ``code/``
  package) before our code gets control; the served model's ``load_context`` then checks every file of the model
  folder and refuses to serve on a mismatch.  Code that was edited runs once before that check: an edited
  ``pyfunc_model.py`` could skip the check altogether.  To serve untrusted stores safely, load through
  ``load_served`` (which verifies first) or verify with :func:`verify_version` before calling
  ``mlflow.pyfunc.load_model``.  A logged model that no registered version holds has no manifest: it loads with
  a warning (MLflow itself loads a model while logging it, to validate its input example).

Versions registered before manifests existed carry no ``manifest_sha256`` tag: the loaders log a warning and, where
the bundle is self-contained, compare the weights with the ``weights_sha256`` tag instead
(``components.registry.versions``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from components.registry.names import MANIFEST_PATH_TAG, MANIFEST_TAG

logger = logging.getLogger(__name__)

#: What every failure message names as the check.
CHECK = "integrity check (sha256 of each stored file's bytes against the manifest registered with the version)"
MANIFEST_FORMAT = 1


class IntegrityError(RuntimeError):
    """A registered version's stored files do not match what was registered: it is refused."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: Files MLflow itself writes into a model folder when it downloads a registered version (name and version of a
#: ``models:/`` URI): not part of what was registered.
DOWNLOAD_FILES = frozenset({"registered_model_meta"})


def _ignored(relative: Path) -> bool:
    return "__pycache__" in relative.parts or relative.suffix == ".pyc" or relative.as_posix() in DOWNLOAD_FILES


def tree_digests(root: str | Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by its path relative to ``root`` (POSIX), bytecode caches left out."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not _ignored(relative):
            out[relative.as_posix()] = file_sha256(path)
    return out


def manifest_bytes(files: dict[str, str]) -> bytes:
    """The manifest as stored: canonical JSON, so that its sha256 is well defined."""
    return json.dumps({"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": dict(sorted(files.items()))},
                      indent=1, sort_keys=True).encode()


def manifest_path(name: str, version: str | int) -> str:
    return f"integrity/{name}-v{version}.json"


def record_manifest(name: str, version: str | int, model_dir: str | Path, tracking_uri: str | None = None) -> dict:
    """Digest the files of ``name`` v``version`` as downloaded into ``model_dir`` (the version's stored files),
    log the manifest in the version's run and tag the version with the manifest's path and sha256.  Returns
    ``{"files": n, "sha256": digest}``."""
    client = MlflowClient(tracking_uri)
    mv = client.get_model_version(name, str(version))
    files = tree_digests(model_dir)
    if not files:
        raise FileNotFoundError(f"{name} v{version}: no stored files under {model_dir} to record in a manifest")
    blob = manifest_bytes(files)
    path = manifest_path(name, version)
    client.log_text(mv.run_id, blob.decode(), path)
    digest = hashlib.sha256(blob).hexdigest()
    client.set_model_version_tag(name, str(version), MANIFEST_PATH_TAG, path)
    client.set_model_version_tag(name, str(version), MANIFEST_TAG, digest)
    logger.info("%s v%s: integrity manifest of %d files (sha256 %s)", name, version, len(files), digest[:12])
    return {"files": len(files), "sha256": digest}


def registered_manifest(name: str, mv: ModelVersion, tracking_uri: str | None = None) -> dict[str, str] | None:
    """The file digests registered with ``mv`` (None: registered before manifests).  Raises IntegrityError when
    the stored manifest no longer matches the version's ``manifest_sha256`` tag, or is gone."""
    expected = mv.tags.get(MANIFEST_TAG)
    if not expected:
        return None
    version = mv.version
    path = mv.tags.get(MANIFEST_PATH_TAG) or manifest_path(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = MlflowClient(tracking_uri).download_artifacts(mv.run_id, path, tmp)
        except Exception as e:  # noqa: BLE001 - any failure to fetch it is a failed check
            raise IntegrityError(f"{name} v{version} refused: {CHECK} failed: its manifest {path} (run {mv.run_id}) "
                                 f"cannot be read: {e}") from e
        blob = Path(local).read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise IntegrityError(f"{name} v{version} refused: {CHECK} failed: the manifest {path} has sha256 "
                             f"{actual[:16]}… but the version's tag {MANIFEST_TAG} records {expected[:16]}…: the "
                             "manifest was edited")
    return dict(json.loads(blob)["files"])


def compare(name: str, version: str | int, root: str | Path, expected: dict[str, str]) -> None:
    """Raise IntegrityError unless the files under ``root`` are exactly ``expected`` (path -> sha256)."""
    actual = tree_digests(root)
    changed = sorted(p for p in set(actual) & set(expected) if actual[p] != expected[p])
    missing = sorted(set(expected) - set(actual))
    added = sorted(set(actual) - set(expected))
    problems = [f"{p} has sha256 {actual[p][:16]}… but the manifest records {expected[p][:16]}…" for p in changed]
    problems += [f"{p} is missing" for p in missing] + [f"{p} was added (not in the manifest)" for p in added]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise IntegrityError(f"{name} v{version} refused: {CHECK} failed: " + "; ".join(problems[:3]) + more)


def verify_version(name: str, mv: ModelVersion, root: str | Path, tracking_uri: str | None = None) -> bool:
    """Check a downloaded copy (``root``) of ``mv``'s files against its registered manifest.  True when checked;
    False for a version registered before manifests (a warning is logged; the caller checks what it can)."""
    expected = registered_manifest(name, mv, tracking_uri)
    if expected is None:
        logger.warning("%s v%s was registered without an integrity manifest (tag %s): its stored files cannot be "
                       "checked", name, mv.version, MANIFEST_TAG)
        return False
    compare(name, mv.version, root, expected)
    return True


def _logged_model_ids(model_dir: Path) -> tuple[str | None, str | None]:
    """(run_id, model_id) from the MLmodel file of a pyfunc model folder."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None, None
    meta = yaml.safe_load(mlmodel.read_text()) or {}
    return meta.get("run_id"), meta.get("model_id")


def _being_logged(client: MlflowClient, model_id: str) -> bool:
    from mlflow.entities import LoggedModelStatus

    try:
        return client.get_logged_model(model_id).status == LoggedModelStatus.PENDING
    except Exception:  # noqa: BLE001 - unknown to this store: not being logged here
        return False


def verify_model_dir(model_dir: str | Path, tracking_uri: str | None = None) -> tuple[str, str] | None:
    """Check a pyfunc model folder that ``mlflow.pyfunc.load_model`` downloaded (the served model's
    ``load_context``) against the manifest of the registered version it belongs to, found through the registry
    by the folder's MLmodel (run id and logged model id).  Returns (name, version); raises IntegrityError when the
    files differ or the registry cannot be read.  None, unchecked: a model being logged right now (MLflow loads
    it to validate its input example before it is registered; the logged model is still PENDING) or a logged
    model no registered version holds (a warning: there is no manifest to check it against)."""
    model_dir = Path(model_dir)
    run_id, model_id = _logged_model_ids(model_dir)
    if not run_id:
        raise IntegrityError(f"{model_dir}: {CHECK} impossible: no MLmodel with a run_id in the model folder")
    client = MlflowClient(tracking_uri)
    try:
        candidates = client.search_model_versions(f"run_id = '{run_id}'")
    except Exception as e:  # noqa: BLE001 - a registry that cannot be asked cannot vouch for the files
        raise IntegrityError(f"model of run {run_id}: {CHECK} impossible: the model registry cannot be read "
                             f"({e}); set MLFLOW_TRACKING_URI to the registry the model was registered in") from e
    ours = [mv for mv in candidates if not model_id or model_id in str(mv.source)]
    if not ours:
        if model_id and _being_logged(client, model_id):
            logger.debug("model %s is being logged: nothing registered to check against yet", model_id)
            return None
        logger.warning("model %s of run %s is no registered version: its files are not checked (serve registered "
                       "versions, models:/<name>/<version>, to have them checked)", model_id or "", run_id)
        return None
    mv = max(ours, key=lambda v: int(v.version))
    verify_version(mv.name, mv, model_dir, tracking_uri)
    return mv.name, str(mv.version)
