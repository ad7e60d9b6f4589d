"""Copy whole folders in and out of the artifact store, so a materializer can use plain local files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from zenml.artifact_stores import BaseArtifactStore


def upload_dir(store: BaseArtifactStore, local: Path, uri: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            dest = os.path.join(uri, str(path.relative_to(local)))
            store.makedirs(os.path.dirname(dest))
            with open(path, "rb") as src, store.open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)


def download_dir(store: BaseArtifactStore, uri: str, local: Path) -> None:
    for root, _dirs, files in store.walk(uri):
        root = str(root)
        for name in files:
            name = name.decode() if isinstance(name, bytes) else name
            rel = os.path.relpath(os.path.join(root, name), uri)
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with store.open(os.path.join(root, name), "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
