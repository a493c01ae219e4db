"""The package layout: the library knows nothing of the experiments, neither package has an import
cycle, files stay short, the judge lives with the experiments, "seed" means a PRNG seed and draws come
from named keys.

Read from the source with ast (imports inside functions included), so nothing is imported to check it.
"""

import ast
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _imports(package: str) -> dict[str, set[str]]:
    """module -> the top-level modules of vaejax or vaejax_experiments it imports ("package.name")."""
    graph = {}
    folder = os.path.join(ROOT, package)
    for filename in sorted(os.listdir(folder)):
        if not filename.endswith(".py"):
            continue
        module = f"{package}.{filename[:-3]}"
        with open(os.path.join(folder, filename)) as f:
            tree = ast.parse(f.read(), filename)
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[module] = {name for name in found if name.count(".") == 1
                         and name.split(".")[0] in ("vaejax", "vaejax_experiments")} - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (restricted to its own modules), or None."""
    state = {}  # module -> "open" while on the path, "done" after

    def visit(module, path):
        state[module] = "open"
        for other in sorted(graph[module] & graph.keys()):
            if state.get(other) == "open":
                return path[path.index(other):] + [other]
            if other not in state:
                found = visit(other, path + [other])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_the_library_imports_nothing_of_the_experiments():
    for module, imported in _imports("vaejax").items():
        assert not {m for m in imported if m.startswith("vaejax_experiments")}, module


def test_the_library_imports_without_cycles():
    graph = _imports("vaejax")
    assert "vaejax.fit" in graph and "vaejax.workdir" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_experiments_import_without_cycles():
    graph = _imports("vaejax_experiments")
    assert "vaejax_experiments.harness" in graph and "vaejax_experiments.sweep" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


MAX_LINES = 450


def _sources(package: str) -> dict[str, str]:
    folder = os.path.join(ROOT, package)
    return {name: open(os.path.join(folder, name)).read() for name in sorted(os.listdir(folder)) if name.endswith(".py")}


@pytest.mark.parametrize("package", ["vaejax", "vaejax_experiments"])
def test_no_file_over_the_limit(package):
    long = {name: n for name, text in _sources(package).items() if (n := text.count("\n")) > MAX_LINES}
    assert not long, f"split by idea: files over {MAX_LINES} lines: {long}"


def test_the_judge_is_not_in_the_library():
    for name, text in _sources("vaejax").items():
        assert not re.search(r"ReferenceClassifier|fit_reference|class Classifier", text), name


def test_seed_means_a_prng_seed():
    pattern = re.compile(r"SEED_AE|SEED_VAE|seed_pair|seed_conv_stack")
    for package in ("vaejax", "vaejax_experiments", "tests"):
        for name, text in _sources(package).items():
            if name != "test_structure.py":
                assert not pattern.search(text), f"{package}/{name}"


LOOP_PIECES = re.compile(r"\bmake_(step|steps|epoch|update)\(")


def test_the_experiments_train_through_fit_alone():
    """One loop: no experiment builds its own from the engine's pieces (the benchmark and the conv profile
    measure them, and the PyTorch peer is PyTorch's)."""
    own = {name for name, text in _sources("vaejax_experiments").items() if LOOP_PIECES.search(text)}
    assert own <= {"benchmark.py", "conv_profile.py", "torch_peer.py"}, f"train through vaejax.fit instead: {sorted(own)}"
    assert LOOP_PIECES.search("update = engine.make_update(objective, optimizer)")  # what it looks for


LITERAL_KEY = re.compile(r"random\.(key|PRNGKey)\(\d+\)")
# where a fixed key is the point: the root of every run's streams (harness), a loss
# that draws nothing, and the benchmark and the profile, which time arrays whose values do not matter
FIXED_KEYS = {"harness.py", "overfit_ood.py", "benchmark.py", "conv_profile.py"}


def test_the_experiments_draw_from_named_keys():
    """Every draw of an experiment comes from its run's key through a named stream, or from one of the
    shared draws settings.SHARED_SEEDS names: no literal key(11) deciding a verdict unseen."""
    literal = {name for name, text in _sources("vaejax_experiments").items() if LITERAL_KEY.search(text)}
    assert literal <= FIXED_KEYS, f"draw from harness.stream(run.key, name) instead: {sorted(literal - FIXED_KEYS)}"
    assert LITERAL_KEY.search("draw(jax.random.fold_in(jax.random.key(11), s))")  # what it looks for
