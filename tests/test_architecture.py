"""The package's shape: no import cycles, and layers that only import downwards.

Imports are read from the source (module level and inside functions alike: a lazy import is still an
arrow), so the checks need no import side effects and see every edge.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_dpo"
LIGHTNING = ("pytorch_lightning", "lightning")

LAYERS = [
    {"settings", "storage", "errors", "embedded", "namespace"},  # foundations: no maths, no models
    {"ops"},  # fast paths: fused head, packing, attention spans
    {"logps", "losses", "optim", "plan"},  # the maths, as pure functions; the cost model
    {"models", "sharding", "metrics", "nonfinite"},  # loading models, strategies' helpers, metrics, NaN guard
    {"data"},  # the data pipeline and its LightningDataModule
    {"evaluation"},  # the evaluation library: sampling, KL, rewards, judges
    {"reference"},  # reference strategies
    {"module"},  # DPOModule
    {"callbacks"},  # callbacks built on the module's interface and the evaluation library
    {"onpolicy"},  # on-policy pairs, online DPO: sampling and scoring inside training and generation jobs
    {"tools"},  # applications: the frontier, plots
    {"tasks"},  # bundled tasks: their data, rewards and judges
    {"commands"},  # one module per lightning-dpo subcommand
    {"cli", "__init__"},  # the dispatcher; the package's public names
]
"""Bottom to top: a component imports only components of lower layers (and itself)."""

NO_LIGHTNING = ("ops", "logps", "losses", "settings", "plan")
"""Components that must not import Lightning, directly or through anything they import."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """(lightning_dpo modules, other top-level packages) that module ``name`` imports anywhere in its source."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    ours, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for target, attribute in targets:
            if not target.startswith("lightning_dpo"):
                others.add(target.split(".")[0])
            elif attribute is not None and f"{target}.{attribute}" in MODULES:  # from pkg import submodule
                ours.add(f"{target}.{attribute}")
            else:
                ours.add(target)
    return ours, others


GRAPH = {name: imports_of(name)[0] - {name} for name in MODULES}


def component(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(name: str) -> int:
    found = [i for i, members in enumerate(LAYERS) if component(name) in members]
    assert found, f"{name}: component {component(name)!r} is in no layer of LAYERS; add it where it belongs"
    return found[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name):
    upward = sorted(
        f"{target} (layer {layer(target)})"
        for target in GRAPH[name]
        if component(target) != component(name) and layer(target) >= layer(name)
    )
    assert not upward, f"{name} (layer {layer(name)}) imports {upward}"


def test_the_maths_and_the_fast_paths_import_no_lightning():
    reached = defaultdict(set)  # module -> every lightning_dpo module it reaches
    for start in MODULES:
        todo = [start]
        while todo:
            for target in GRAPH[todo.pop()]:
                if target in MODULES and target not in reached[start]:
                    reached[start].add(target)
                    todo.append(target)
    for name in MODULES:
        if component(name) in NO_LIGHTNING:
            for reached_name in {name} | reached[name]:
                lightning = imports_of(reached_name)[1] & set(LIGHTNING)
                assert not lightning, f"{name} reaches {reached_name}, which imports {sorted(lightning)}"


def test_data_imports_nothing_of_the_module_or_its_strategies():
    for name in MODULES:
        if component(name) == "data":
            assert not {component(t) for t in GRAPH[name]} & {"module", "reference", "callbacks", "commands"}, name
