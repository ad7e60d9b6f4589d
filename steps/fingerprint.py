import uuid
from typing import Annotated

from zenml import step
from zenml.config.cache_policy import CachePolicy

from components.data.fingerprint import fingerprint


def _fresh_every_run() -> str:
    """A cache key part that never repeats: a YAML `enable_cache: true` overrides every step's own
    `enable_cache`, and this step must run every time for ingest's cache to notice changed files."""
    return uuid.uuid4().hex


@step(enable_cache=False, cache_policy=CachePolicy(cache_func=_fresh_every_run))
def fingerprint_input(raw_path: str) -> Annotated[str, "input_fingerprint"]:
    """Fingerprint the raw files (never cached), so ingest's cache key changes when the data does."""
    return fingerprint(raw_path)
