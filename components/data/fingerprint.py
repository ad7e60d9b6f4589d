"""A cheap fingerprint of raw input files, so a cached ingest is re-run when the data changes.

ZenML's cache key sees the ``raw_path`` string, not the bytes behind it.  Hashing 100 GB on every run is too
slow, so this hashes each file's relative name, size, modification time and its first and last MiB.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_EDGE = 1 << 20


def fingerprint(raw_path: str | Path) -> str:
    root = Path(raw_path)
    if not root.exists():
        raise FileNotFoundError(f"raw_path {str(raw_path)!r} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if p != root else p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        with open(p, "rb") as f:
            h.update(f.read(_EDGE))
            if st.st_size > 2 * _EDGE:
                f.seek(-_EDGE, 2)
                h.update(f.read(_EDGE))
    return h.hexdigest()
