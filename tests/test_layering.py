"""The package reads top-down: each part of tfvae imports only from the parts below it.

The order below is the architecture. A part (a top-level module, or a subpackage taken whole)
may import from itself and from the parts listed before it, never from one listed after it;
and no module takes part in an import cycle, counting imports inside functions (which hide
cycles rather than remove them). Checked on the source with `ast`, without importing it.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tfvae"

ORDER = [
    # foundations: no other part of tfvae
    "version", "config", "registry", "io", "seeds", "inputs", "steps", "replicas", "optimizers", "images",
    "lean_step",
    # what models are made of
    "distributions", "data", "nets", "parts",
    # the models, then what works on any model
    "models", "inference", "metrics", "export", "traversal", "presets",
    # training, measuring, run directories and the shipped zoo
    "training", "bench", "runs", "zoo",
    # the faces: the package's namespace, and the command line on top of it
    "__init__", "cli",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """'tfvae.models.base' -> 'models'; 'tfvae' (the package's __init__) -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The tfvae modules `module` imports anywhere in its source (inside functions too)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "tfvae")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "tfvae":
                continue
            for alias in node.names:            # `from tfvae import steps` imports the module tfvae.steps
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    found.discard(module)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {module: imports_of(module, path, set(found)) for module, path in found.items()}


def test_every_part_of_the_package_has_its_place_in_the_order():
    assert {part_of(module) for module in modules()} == set(ORDER)


def test_no_part_imports_from_a_part_above_it():
    rank = {part: i for i, part in enumerate(ORDER)}
    upward = sorted(f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
                    if rank[part_of(target)] > rank[part_of(module)])
    assert not upward, "imports from a layer above:\n" + "\n".join(upward)


def test_no_module_takes_part_in_an_import_cycle():
    graph = import_graph()
    cycles = set()

    def visit(module, path, on_path):
        for target in graph[module]:
            if target in on_path:
                cycle = path[path.index(target):]
                cycles.add(" -> ".join(cycle + [target]))
            elif target not in done:
                visit(target, path + [target], on_path | {target})
        done.add(module)

    done = set()
    for module in graph:
        if module not in done:
            visit(module, [module], {module})
    # A package's __init__ re-exporting its modules is not a cycle unless a module imports it back.
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_checker_sees_upward_and_cyclic_imports(tmp_path):
    """The checker itself, on a made-up package: an import inside a function and a relative one count."""
    source = tmp_path / "tfvae"
    (source / "data").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "data" / "__init__.py").write_text("")
    (source / "data" / "a.py").write_text("from .b import x\n")
    (source / "data" / "b.py").write_text("def f():\n    from tfvae.data import a\n    from tfvae import models\n")
    (source / "models.py").write_text("")
    known = {"tfvae", "tfvae.data", "tfvae.data.a", "tfvae.data.b", "tfvae.models"}
    assert imports_of("tfvae.data.a", source / "data" / "a.py", known) == {"tfvae.data.b"}
    assert imports_of("tfvae.data.b", source / "data" / "b.py", known) == {"tfvae.data.a", "tfvae.models"}
