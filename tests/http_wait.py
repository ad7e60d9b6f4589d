"""Waiting for a server a test started: poll one URL until it answers 200, failing early if the process died."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable


def wait_until_ok(url: str, alive: Callable[[], bool], timeout: float, describe: Callable[[str], str]) -> None:
    """Return once GET ``url`` answers 200; ``RuntimeError(describe(why))`` when ``alive()`` turns false or
    ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if not alive():
            raise RuntimeError(describe("the process exited"))
        if time.monotonic() > deadline:
            raise RuntimeError(describe(f"no 200 from {url} in {timeout:.0f} s"))
        time.sleep(0.5)
