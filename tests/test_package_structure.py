"""The package's shape: no import cycles, each module importable alone, the HTTP client
apart from the ASGI layer, one home for the token format, a curated public API with
``__version__``, and ``py.typed`` in the wheel. No database needed."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pyvault_tokens

PACKAGE = Path(pyvault_tokens.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
# The ASGI layer: what a client of an API must not need.
ASGI_LAYER = {"asgi", "middleware", "responses", "routes", "identity", "fastapi"}


def _imports(module: str) -> set[str]:
    """The package modules that ``module`` imports anywhere: at the top, inside functions
    (a lazy import still closes a cycle), or under TYPE_CHECKING."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pyvault_tokens import api` names the module api.
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pyvault_tokens" and len(parts) == 2 and parts[1] in MODULES:
                found.add(parts[1])
    found.discard(module)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it began), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_cycle_finder_finds_a_cycle() -> None:
    """Not vacuous: cli and demo importing each other, as they once did, is caught."""
    assert _cycle({"cli": {"demo", "api"}, "demo": {"cli"}, "api": set()}) in (
        ["cli", "demo", "cli"], ["demo", "cli", "demo"])
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert "cli" in _imports("__main__")  # lazy and top-level imports alike are seen


def test_the_package_has_no_import_cycle() -> None:
    assert _cycle(GRAPH) is None, f"import cycle: {' -> '.join(_cycle(GRAPH) or [])}"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    name = "pyvault_tokens" if module == "__init__" else f"pyvault_tokens.{module}"
    result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_http_client_does_not_import_the_asgi_layer() -> None:
    assert not _reachable(GRAPH, "client") & ASGI_LAYER, GRAPH["client"]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pyvault_tokens.client;"
         " print(' '.join(m for m in sys.modules if m.startswith(('pyvault_tokens', "
         "'starlette'))))"], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    names = set(loaded.stdout.split())
    assert not {f"pyvault_tokens.{m}" for m in ASGI_LAYER} & names, names
    assert "starlette" not in names, "the client needs no Starlette"


def _defined(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_the_token_format_and_display_helpers_live_in_display_only() -> None:
    helpers = {"TOKEN_PREFIX", "TOKEN_LENGTH", "token_prefix", "looks_like_token",
               "is_well_formed_token", "rfc3339", "_rfc3339", "redact_tokens", "_redact",
               "print_diagnosis", "ttl_to_interval", "_TOKEN_ANYWHERE", "_HEX"}
    assert helpers - {"_rfc3339", "_redact"} <= _defined("display")
    for module in MODULES:
        if module != "display":
            assert not helpers & _defined(module), f"{module} defines a display helper"
        source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
        if module != "display":
            assert 're.compile(r"ovt_prod_' not in source, f"{module} writes the format again"


def test_the_refresher_carries_no_test_fault_hook() -> None:
    source = (PACKAGE / "refresher.py").read_text(encoding="utf-8")
    assert "FAULT" not in source and "SIGKILL" not in source


def test_the_asgi_module_still_offers_every_name_it_documents() -> None:
    from pyvault_tokens import asgi

    for name in asgi.__all__:
        assert getattr(asgi, name) is not None, name
    for name in ("TokenRefreshMiddleware", "PyvaultAuth", "PyvaultUser", "EXPOSE_HEADERS",
                 "VALIDATE_SQL", "require_scope", "requires_scope", "pyvault_auth",
                 "is_well_formed_token"):
        assert name in asgi.__all__, name


def test_the_public_api_is_curated_and_lazy() -> None:
    exported = set(pyvault_tokens.__all__) - {"__version__"}
    assert exported == set(pyvault_tokens._EXPORTS)
    assert len(pyvault_tokens.__all__) == len(set(pyvault_tokens.__all__))
    # A name that is also a submodule would be replaced by the module once it is imported.
    assert not exported & set(MODULES), exported & set(MODULES)
    for name in exported:
        value = getattr(pyvault_tokens, name)
        home = importlib.import_module(pyvault_tokens._EXPORTS[name])
        assert value is getattr(home, name), name
    assert set(dir(pyvault_tokens)) >= exported
    with pytest.raises(AttributeError):
        _ = pyvault_tokens.not_a_name
    namespace: dict[str, object] = {}
    exec("from pyvault_tokens import *", namespace)  # noqa: S102 - a fixed statement
    assert exported <= set(namespace)
    # `import pyvault_tokens` loads none of the submodules (nor their dependencies).
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pyvault_tokens;"
         " print(' '.join(m for m in sys.modules if m.startswith(('pyvault_tokens', "
         "'psycopg', 'starlette', 'httpx'))))"], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.split() == ["pyvault_tokens"], loaded.stdout + loaded.stderr


def test_version_comes_from_the_installed_metadata_and_falls_back() -> None:
    from importlib.metadata import version

    assert pyvault_tokens.__version__ == version("pyvault-tokens")
    fallback = subprocess.run(
        [sys.executable, "-c",
         "import importlib.metadata as m\n"
         "def missing(name):\n"
         "    raise m.PackageNotFoundError(name)\n"
         "m.version = missing\n"
         "import pyvault_tokens\n"
         "print(pyvault_tokens.__version__)\n"], capture_output=True, text=True, timeout=60)
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.strip() == "0+unknown"


def test_the_wheel_ships_py_typed_and_every_module(tmp_path: Path) -> None:
    assert (PACKAGE / "py.typed").is_file()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(PACKAGE.parent)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("pyvault_tokens-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert "pyvault_tokens/py.typed" in names
    assert {f"pyvault_tokens/{m}.py" for m in MODULES} <= names
