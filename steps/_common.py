"""What every step shares: the experiment tracker's name and the cache policy that makes a step's cache key follow
the project code its run can reach (``cache_on_code``; the rules are in ``key_modules``)."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import re
from functools import lru_cache
from pathlib import Path

from zenml.config.cache_policy import CachePolicy

#: Name of the MLflow experiment tracker in the active stack (infra/stacks registers it under this name).
TRACKER = os.environ.get("MBPROMPT_EXPERIMENT_TRACKER", "mlflow_tracker")


class _AbsentAutologFilter(logging.Filter):
    """Drops ZenML's "Failed to disable MLflow autologging for the following frameworks: [...]" warning when every
    framework it lists has no ``mlflow.<framework>`` module in the installed MLflow (MLflow 3 dropped
    ``mlflow.fastai``): ZenML's MLflow tracker tries to switch off autologging for a fixed list of frameworks after
    every tracked step, and there is nothing to switch off for one MLflow no longer ships.  Any other failure
    (a framework MLflow has, whose ``autolog(disable=True)`` raised) is still shown."""

    PREFIX = "Failed to disable MLflow autologging for the following frameworks:"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.PREFIX):
            return True
        listed = re.findall(r"'([A-Za-z0-9_]+)'", message[len(self.PREFIX):])
        return not listed or any(_mlflow_has(name) for name in listed)


def _mlflow_has(framework: str) -> bool:
    try:
        return importlib.util.find_spec(f"mlflow.{framework}") is not None
    except (ImportError, ValueError):
        return False


#: The logger of ZenML's MLflow experiment tracker (``disable_autologging`` warns through it).
MLFLOW_TRACKER_LOGGER = "zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker"
if not any(isinstance(f, _AbsentAutologFilter) for f in logging.getLogger(MLFLOW_TRACKER_LOGGER).filters):
    logging.getLogger(MLFLOW_TRACKER_LOGGER).addFilter(_AbsentAutologFilter())

#: The checkout this module was loaded from (a copy of the repository hashes its own files).
ROOT = Path(__file__).resolve().parents[1]

#: The project's top-level packages: imports of these are followed and their files hashed.  Everything else
#: (torch, zenml, pyarrow, the standard library) is pinned by the install and stays out of the key.
PROJECT_PACKAGES = ("components", "materializers", "steps", "pipelines", "infra")

#: Package whose ``__init__`` is not followed: ``steps/__init__.py`` imports every step (and the materializers), so
#: following it would make every step's key cover every other step's code.
NOT_FOLLOWED_INITS = frozenset({"steps"})


def cache_on_code(step_module: str) -> CachePolicy:
    """The cache policy of every cached step: ``@step(cache_policy=cache_on_code(__name__))``.

    This is the one place that defines what a step's cache key covers.  On top of what ZenML itself hashes (the
    step function's source, its parameters, its input artifacts, its output materializer classes' source), the key
    covers the *content* of every project file that ``key_modules(step_module)`` lists: the step's own module and
    every project module it can reach through imports, transitively (see ``key_modules`` for the exact rules).  Any
    edit to one of those files, a comment included, re-runs the step; no other file does (tests, docs, other steps'
    files; a config's values reach the key as parameters, not as a file), nor does the checkout's location (paths
    enter the key relative to it).

    ZenML calls a cache function without arguments, by its import path, when it computes the key (on the client,
    or wherever the step is launched); so each step gets its own module-level function here, named after the step
    module (``steps._common.code_key__steps__pretrain``), which importing that step module defines.  Not
    ``CachePolicy(source_dependencies=...)``: ZenML 0.98 loads those as ``getattr(package, name)``, which fails for
    a submodule nobody imported yet and, for a step module, returns the step object that ``steps/__init__.py``
    binds to that name (its source cannot be read).
    """
    name = "code_key__" + step_module.replace(".", "__")
    func = globals().get(name)
    if func is None:
        def func() -> str:
            return code_digest(step_module)

        func.__name__ = func.__qualname__ = name
        func.__doc__ = f"Digest of the project code {step_module} can reach (``code_digest``)."
        globals()[name] = func
    return CachePolicy(cache_func=func)


def code_digest(step_module: str, root: Path | None = None) -> str:
    """SHA-256 over (path relative to the checkout, content) of every file in ``key_files(step_module, root)``."""
    root = Path(root or ROOT)
    digest = hashlib.sha256()
    for path in key_files(step_module, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def key_files(step_module: str, root: Path | None = None) -> list[Path]:
    """The files whose content enters ``step_module``'s cache key, sorted."""
    root = Path(root or ROOT)
    return sorted(_module_file(root, m) for m in key_modules(step_module, root))


def key_modules(step_module: str, root: Path | None = None) -> set[str]:
    """Every project module (dotted name) whose code a run of the step in ``step_module`` can reach, found from the
    files under ``root`` by a static import graph (nothing is imported):

    - the step's own module;
    - every module a reached module imports, at any depth of the file (imports inside functions count, so do
      ``if TYPE_CHECKING:`` ones): ``import a.b.c`` and ``from a.b.c import name`` reach ``a.b.c``; ``from a.b
      import c`` reaches the submodule ``a.b.c`` when there is one, else the package ``a.b`` (its ``__init__``);
      relative imports likewise;
    - the packages above a reached module (Python runs their ``__init__`` first, and their re-exports with it),
      except ``steps/__init__.py`` (``NOT_FOLLOWED_INITS``);
    - every module named by a string literal that is exactly a project module's dotted name: imports by name
      (``importlib``; the project itself has none since the model registry imports its modules); a module loaded
      from a name that is not spelled out whole in some reached file is not covered.

    Only modules of ``PROJECT_PACKAGES`` that exist as files under ``root`` count.  Materializers are not reached by
    imports (ZenML picks them by output type); ZenML hashes each output's materializer class itself.
    """
    root = Path(root or ROOT)
    if _module_file(root, step_module) is None:
        raise ValueError(f"{step_module!r} is not a module under {root}")
    seen: set[str] = set()
    todo = [step_module]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(root, module)
        todo.extend(_reached_from(root, module, path.name == "__init__.py", path.read_bytes()))
        parts = module.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in NOT_FOLLOWED_INITS and _module_file(root, parent) is not None:
                todo.append(parent)
    return seen


def _module_file(root: Path, module: str) -> Path | None:
    parts = module.split(".")
    if not parts or parts[0] not in PROJECT_PACKAGES or not all(p.isidentifier() for p in parts):
        return None
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _reached_from(root: Path, module: str, is_package: bool, source: bytes) -> list[str]:
    reached = []
    for kind, name, names in _references(source):
        if kind == "from":
            level, base = name
            if level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (level - 1)] if level > 1 else package
                base = ".".join(package + ([base] if base else []))
            subs = [f"{base}.{n}" for n in names if n != "*" and _module_file(root, f"{base}.{n}") is not None]
            reached.extend(subs)
            if len(subs) < len(names):  # some names are not submodules: they come from the module itself
                reached.append(base)
        else:  # "import" or "string"
            reached.append(name)
    return [m for m in reached if _module_file(root, m) is not None]


@lru_cache(maxsize=512)
def _references(source: bytes) -> tuple:
    """(kind, name, names) for every import statement and every string literal of one file (cached by content)."""
    refs = []
    try:
        tree = ast.parse(source)
    except SyntaxError:  # the file is still hashed; Python cannot import it either, so nothing it imports runs
        return ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            refs.extend(("import", alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            refs.append(("from", (node.level, node.module or ""), tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.count(".") \
                and node.value.split(".", 1)[0] in PROJECT_PACKAGES:
            refs.append(("string", node.value, ()))
    return tuple(refs)
