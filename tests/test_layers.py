"""The import structure the design card promises, read from the source (nothing is imported):

- no import cycle among the project's modules, imports inside functions included;
- ``components/`` imports no ZenML, at any depth of any file;
- ``components/`` packages import only downwards: settings and tracking (no project imports) < data < metrics <
  models < training < tuning < serving and registry.  A model imports nothing of training, a trainer nothing of
  tuning;
- only the registry gateway (``components.registry``) talks to MLflow's model registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "steps", "pipelines", "materializers", "infra", "bench")
#: components' packages from the bottom up; a package may import its own and lower layers only.
#: The registry gateway sits beside serving, on top: it registers serving bundles (serving.recommender) and builds
#: the versions training and tuning start from, and the served pyfunc fetches a frozen base through it.
LAYERS = (("settings", "tracking"), ("data",), ("metrics",), ("models",), ("training",), ("tuning",),
          ("serving", "registry"))
#: Upward imports still to remove, each with the reason.  The test fails when one disappears without leaving this
#: list, or when a new one appears.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}
#: MLflow model-registry calls (client methods, ``log_model``'s registering argument) and registry URIs.
REGISTRY_CALLS = frozenset({
    "get_model_version", "get_model_version_by_alias", "get_model_version_download_uri", "search_model_versions",
    "search_registered_models", "get_registered_model", "create_registered_model", "create_model_version",
    "set_model_version_tag", "set_registered_model_alias", "delete_registered_model_alias", "register_model",
    "transition_model_version_stage", "registered_model_name"})


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules (and external top-level packages) that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            parts = target.split(".")
            # the deepest project module the dotted name names (a.b.c, else a.b, ...), else the top package
            for i in range(len(parts), 0, -1):
                candidate = ".".join(parts[:i])
                if candidate in modules:
                    found.add(candidate)
                    break
            else:
                found.add(parts[0])
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "components" or len(parts) < 2:
        return None
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module}: package components.{parts[1]} has no layer in LAYERS")


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    modules = {"components.a": tmp_path / "a.py", "components.b": tmp_path / "b.py", "components": tmp_path / "x.py"}
    src = tmp_path / "a.py"
    src.write_text("def f():\n    from components.b import thing\n    import zenml.client\nfrom . import b\n")
    assert _imports("components.a", src, modules) == {"components", "components.b", "zenml"}


def test_no_import_cycle_among_the_projects_modules():
    graph = _graph()
    assert len(graph) > 50
    assert _cycles(graph) == []
    # the cycle check itself finds one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]


def test_components_import_no_zenml():
    offenders = sorted(m for m, deps in _graph().items() if m.startswith("components") and "zenml" in deps)
    assert offenders == []


def test_components_import_only_downwards():
    upward = {}
    for module, deps in _graph().items():
        mine = _layer(module)
        if mine is None:
            continue
        for dep in deps:
            theirs = _layer(dep)
            if theirs is not None and theirs > mine:
                upward[(module, dep)] = f"{LAYERS[mine]} imports {LAYERS[theirs]}"
    assert set(upward) == set(KNOWN_UPWARD), {k: v for k, v in upward.items() if k not in KNOWN_UPWARD}
    models = {m: d for m, d in _graph().items() if m.startswith("components.models")}
    assert not any(dep.startswith(("components.training", "components.tuning")) for d in models.values() for dep in d)


def _registry_uses(path: Path) -> list[str]:
    """Registry calls in a file: attributes and keyword arguments named in REGISTRY_CALLS, ``models:/`` URIs in
    code (docstrings and comments aside)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in REGISTRY_CALLS:
            found.append(node.attr)
        elif isinstance(node, ast.keyword) and node.arg in REGISTRY_CALLS:
            found.append(f"{node.arg}=")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "models:/" in node.value \
                and id(node) not in docstrings:
            found.append("models:/")
    return sorted(set(found))


def test_only_the_registry_gateway_talks_to_the_model_registry(tmp_path):
    offenders = {name: uses for name, path in _modules().items()
                 if name.startswith("components.") and not name.startswith("components.registry")
                 and (uses := _registry_uses(path))}
    assert offenders == {}
    gateway = {name for name, path in _modules().items() if name.startswith("components.registry.")
               and _registry_uses(path)}
    assert {"components.registry.store", "components.registry.register"} <= gateway
    # the check itself finds a call, a keyword and a URI, and skips a docstring
    src = tmp_path / "m.py"
    src.write_text('"""see models:/x/1"""\nc.get_model_version("m", "1")\nlog(registered_model_name="m")\n'
                   'u = f"models:/{n}/1"\n')
    assert _registry_uses(src) == ["get_model_version", "models:/", "registered_model_name="]
