"""Imports run one way: base utilities (errors, atomic writes, config, audio) -> nn -> vqvae/prior -> data ->
checkpoint -> sampling -> eval -> train -> runs -> api -> ui -> cli -> the package root -> the original Jukebox's
API names (DESIGN's layout). Every ``import`` in src/jukebox (function-level ones too) is read with ``ast``; an
import of a higher layer, or of a sibling package of the same layer, is a backward edge."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "jukebox"

#: The layers, lowest first. A module may import its own package and anything in a lower layer.
LAYERS: list[tuple[str, ...]] = [
    ("jukebox._version", "jukebox.errors"),
    ("jukebox.atomic", "jukebox.fileio", "jukebox.distributed"),
    ("jukebox.config", "jukebox.audio", "jukebox.loudness"),
    ("jukebox.nn",),
    ("jukebox.vqvae", "jukebox.prior", "jukebox.codec"),
    ("jukebox.data",),
    ("jukebox.checkpoint",),
    ("jukebox.sampling",),
    ("jukebox.eval",),
    ("jukebox.train",),
    ("jukebox.runs",),
    ("jukebox.api",),
    ("jukebox.ui",),
    ("jukebox.cli",),
    ("jukebox",),  # the package root: the public API
    # on top: the original Jukebox's API names, the demo, test helpers, ``python -m jukebox``
    ("jukebox.__main__", "jukebox.demo", "jukebox.hparams", "jukebox.make_models", "jukebox.sample",
     "jukebox.testing", "jukebox.utils"),
]

#: Backward edges that are known and allowed, each with its reason.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The jukebox modules ``path`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    name = module_name(path)
    return imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", modules)


def imports_in(source: str, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The jukebox modules that ``source``, the text of module ``name``, imports."""
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "jukebox")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "jukebox":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return out


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the layer entry that holds ``module``): the longest matching prefix."""
    best: tuple[int, str] | None = None
    for i, entries in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    if best is None:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS in {Path(__file__).name}")
    return best


def backward_edges() -> list[str]:
    modules = all_modules()
    edges = []
    for name, path in modules.items():
        rank, unit = layer_of(name)
        for target in sorted(imports_of(path, modules)):
            t_rank, t_unit = layer_of(target)
            if t_unit == unit or t_rank < rank or (name, target) in ALLOWED:
                continue
            why = "a higher layer" if t_rank > rank else "a sibling of the same layer"
            edges.append(f"{name} imports {target} ({why}: {t_unit})")
    return edges


def test_every_module_has_a_layer():
    for name in all_modules():
        layer_of(name)


def test_no_backward_imports():
    edges = backward_edges()
    assert not edges, "backward imports:\n" + "\n".join(edges)


def test_allowed_exceptions_are_still_needed():
    modules = all_modules()
    for (source, target), why in ALLOWED.items():
        assert target in imports_of(modules[source], modules), f"{source} no longer imports {target}; drop it ({why})"


def test_the_check_sees_backward_imports():
    """Relative, absolute and function-level imports are all resolved: a model file importing the CLI or the API
    is caught, its own package is not."""
    modules = all_modules()
    source = "from ..cli.sample import MODES\nfrom . import config\n\ndef f():\n    import jukebox.api\n"
    got = imports_in(source, "jukebox.prior.model", False, modules)
    assert got == {"jukebox.cli.sample", "jukebox.prior.config", "jukebox.api"}
    rank = layer_of("jukebox.prior.model")[0]
    assert layer_of("jukebox.cli.sample")[0] > rank and layer_of("jukebox.api")[0] > rank
    assert layer_of("jukebox.prior.config") == layer_of("jukebox.prior.model")
    assert layer_of("jukebox.vqvae.model")[0] == rank  # a sibling of the same layer: refused too
