"""DESIGN.md's layer rule, checked on the source: a layer imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ferry"

# Lower number = lower layer. Foundation modules (errors, paths) sit below everything.
RANKS = {
    "errors": 0,
    "paths": 0,
    "sandbox": 1,
    "store": 2,
    "bus": 2,
    "connectors": 3,
    "model": 4,
    "mapping": 4,
    "engine": 5,
    "cli": 6,
    "server": 6,
}
# Product code never depends on the emulators; only the CLI (demo, `sandbox serve`) starts them.
FORBIDDEN = {
    ("connectors", "sandbox"),
    ("store", "sandbox"),
    ("model", "sandbox"),
    ("mapping", "sandbox"),
    ("engine", "sandbox"),
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ferry" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_every_import_goes_down_or_sideways() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py") if rel.parts else ""
        if own not in RANKS:
            continue
        for module in _imports(path):
            target = _layer(module)
            if target is None or target not in RANKS:
                continue
            if RANKS[target] > RANKS[own] or (own, target) in FORBIDDEN:
                violations.append(f"{rel}: {own} imports {module}")
    assert not violations, "layer rule broken:\n" + "\n".join(violations)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert packages - {"examples"} <= set(RANKS), f"give these packages a layer: {packages - set(RANKS)}"
