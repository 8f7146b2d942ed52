"""The three layers and their boundaries: what each layer may import, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ncap

PACKAGE = Path(ncap.__file__).resolve().parent
LAYERS = {"arrays": 1, "tf": 2, "selection": 3}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """Absolute names a ``from X import Y`` refers to (Y may be a submodule)."""
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """ncap modules imported by a file (module level only, or anywhere)."""
    module = _module_name(path)
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if (
            top_level_only
            and isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, node, path.name == "__init__.py"))
    return {name for name in found if name == "ncap" or name.startswith("ncap.")}


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_each_layer_imports_only_itself_and_the_layers_below():
    """Anywhere in a file (lazy imports included), arrays never reaches tf/selection, tf never
    reaches selection."""
    problems = []
    for module, path in _sources().items():
        own = _layer(module)
        if own == 0:
            continue  # the package root and the alias module know every layer
        for target in _imports(path, top_level_only=False):
            if _layer(target) > own:
                problems.append(f"{module} imports {target}")
    assert not problems, problems


def test_no_import_cycles_between_modules():
    """The module-level import graph of the package is acyclic."""
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        targets = {t for t in _imports(path, top_level_only=True) if t in sources}
        # Importing a submodule imports its parent packages first; that is not an edge back.
        graph[module] = {t for t in targets if not module.startswith(t + ".") and t != module}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, stack + [nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


def _run(code: str) -> str:
    env_path = [p for p in sys.path if p]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": ":".join(env_path), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_arrays_layer_imports_neither_tensorflow_nor_selection():
    """``import ncap`` and ``ncap.beff`` on arrays load NumPy only, not TF or the selection app."""
    got = _run(
        "import sys, numpy as np, ncap, ncap.arrays\n"
        "rng = np.random.default_rng(0)\n"
        "w = [8, 6, 5, 4, 3]\n"
        "acts = [rng.normal(size=(4, n)) for n in w[:-1]]\n"
        "derivs = [rng.normal(size=(4, n)) for n in w[1:-1]]\n"
        "grads = [rng.normal(size=(4, n)) for n in w[1:]]\n"
        "ncap.beff(acts, derivs, grads)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'sklearn',"
        " 'dask', 'distributed', 'matplotlib') or m.startswith(('ncap.tf', 'ncap.selection'))]\n"
        "print(sorted(bad))"
    )
    assert got == "[]"


@pytest.mark.parametrize("stmt", ["from ncap import *", "import ncap; dir(ncap)"])
def test_star_import_loads_no_layer_and_shadows_nothing(stmt):
    """``from ncap import *`` brings names, not modules, and does not import TF."""
    got = _run(
        "import sys\ntf = 'mine'; keras = 'mine'\n"
        f"{stmt}\n"
        "print(tf, keras, 'tensorflow' in sys.modules, 'ncap.selection' in sys.modules)"
    )
    assert got == "mine mine False False"


def test_all_lists_names_not_modules():
    for name in ncap.__all__:
        assert name not in ("tf", "keras", "arrays", "selection"), name


def test_tf_layer_does_not_import_selection():
    """Using the TF layer (probe, beff on a model) never loads ncap.selection."""
    got = _run(
        "import sys, numpy as np, ncap, ncap.tf, keras\n"
        "inp = keras.Input((6,))\n"
        "m = ncap.attach_probe(keras.Model(inp, keras.layers.Dense(5)(inp)), 3, hidden=(4, 4, 4))\n"
        "x = np.random.default_rng(0).normal(size=(4, 6)).astype('float32')\n"
        "ncap.beff(m, x, np.array([0, 1, 2, 0]))\n"
        "print([m for m in sys.modules if m.startswith('ncap.selection')])"
    )
    assert got == "[]"


def test_public_names_resolve():
    """The public names of every layer are reachable from the package root."""
    for name in ("beff", "degrees", "BetaResult", "LayerTerms", "cuda_available"):
        assert callable(getattr(ncap, name)) or isinstance(getattr(ncap, name), type)
    for name in (
        "attach_probe",
        "capture",
        "Capture",
        "BetaEff",
        "predict_final",
        "select",
        "SelectionReport",
        "Prediction",
    ):
        assert getattr(ncap, name) is not None, name
    assert ncap.keras.BetaEff is ncap.tf.BetaEff is ncap.BetaEff
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ncap.nope
