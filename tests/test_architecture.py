"""The package's import graph, read with `ast` (module-level and function-level imports alike): no import cycle
between modules, parts import only their own layer or layers below (the order jaxfin/__init__.py argues for),
and no module imports another module's `_private` name."""

from __future__ import annotations

import ast
from pathlib import Path

import jaxfin

ROOT = Path(jaxfin.__file__).parent
# The layers of jaxfin/__init__.py's docstring, bottom first; a part is a top-level module or package of jaxfin.
# The package root re-exports the store's load_model / save_model, so it sits with store.
LAYERS = [
    {"config"},
    {"kernels", "parallel"},
    {"model"},
    {"data"},
    {"hf"},
    {"store", "jaxfin"},
    {"eval", "retrieval"},
    {"rl"},
    {"train"},
    {"merge", "scaling", "vocab", "bench", "compile"},
    {"recipe", "demo", "cli", "launch", "__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _owner(name: str, mods: dict) -> str:
    while name not in mods:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(mods: dict) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """module -> modules it imports; (importer, module, name) for every `_private` name imported across modules."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges[m] |= {_owner(a.name, mods) for a in node.names if a.name.startswith("jaxfin")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                if not src.startswith("jaxfin"):
                    continue
                for a in node.names:
                    if f"{src}.{a.name}" in mods:  # a submodule
                        edges[m].add(f"{src}.{a.name}")
                        continue
                    target = _owner(src, mods)
                    edges[m].add(target)
                    if a.name.startswith("_") and not a.name.startswith("__") and target != m:
                        private.append((m, target, a.name))
    for m in edges:
        edges[m].discard(m)
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_cycles_and_function_level_imports():
    """The reader itself: a two-module loop is a cycle; module-level and function-level imports are both edges."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(edges) == [{"a", "b"}]
    mods = _modules()
    edges, _ = _imports(mods)
    assert "jaxfin.config.errors" in edges["jaxfin.config.load"]  # a module-level import is an edge
    assert "jaxfin.model.lora" in edges["jaxfin.hf.convert"]  # so is a function-level one


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "jaxfin"


def test_no_import_cycles():
    edges, _ = _imports(_modules())
    assert not _cycles(edges), f"import cycles: {[sorted(c) for c in _cycles(edges)]}"


def test_parts_import_only_their_layer_or_below():
    mods = _modules()
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    assert set(map(_part, mods)) == set(layer), "every part has a layer in LAYERS (and jaxfin/__init__.py)"
    edges, _ = _imports(mods)
    upward = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts if layer[_part(t)] > layer[_part(m)])
    assert not upward, "imports from a higher layer: " + ", ".join(upward)
    parts = {p: set() for p in layer}
    for m, ts in edges.items():
        parts[_part(m)] |= {_part(t) for t in ts} - {_part(m)}
    assert not _cycles(parts), f"parts import each other: {_cycles(parts)}"


def test_the_layer_check_sees_an_upward_import():
    """The layer rule itself: model importing train (the old model/store -> train/checkpoint) is upward."""
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    assert layer[_part("jaxfin.train.checkpoint")] > layer[_part("jaxfin.model.store")]
    assert layer[_part("jaxfin.store")] > layer[_part("jaxfin.hf.convert")] > layer[_part("jaxfin.model")]


def test_no_private_names_imported_from_another_module():
    _, private = _imports(_modules())
    assert not private, "private names imported across modules: " + ", ".join(f"{m} <- {t}.{n}" for m, t, n in private)


def test_config_lora_targets_are_the_tables_lora_targetable_projections():
    """config/choices.py validates `model.lora.targets` against LORA_TARGETS; the tables decide what LoRA can adapt."""
    from jaxfin.config.choices import FAMILIES, LORA_TARGETS
    from jaxfin.model.params import TABLES

    assert set(TABLES) == set(FAMILIES)
    targetable = {p.path.split("/")[-2] for t in TABLES.values() for p in t if p.lora}
    assert targetable == set(LORA_TARGETS)
