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
    "model": 1,  # the canonical records and value helpers: every source's normalizer builds them
    "core": 2,  # the shared vocabulary and the Source/Sink/store contracts
    "observe": 2,  # metrics, traces: every layer above reports through it; it imports only the foundation
    "store": 3,
    "bus": 3,
    "connectors": 4,
    "mapping": 5,
    "engine": 6,
    "cli": 7,
    "server": 7,
    "web": 7,  # the dashboard app, beside the CLI that starts it
    "serve": 7,  # `ferry serve`: an application over the engine, like the CLI that starts it
}
# Product code never depends on the emulators; only the CLI (demo, `sandbox serve`) starts them.
FORBIDDEN = {
    ("connectors", "sandbox"),
    ("store", "sandbox"),
    ("model", "sandbox"),
    ("mapping", "sandbox"),
    ("engine", "sandbox"),
    ("core", "sandbox"),
    ("web", "sandbox"),
    ("serve", "sandbox"),
    ("observe", "sandbox"),
    ("bus", "sandbox"),
}
# Below the connectors nothing names a system: these layers reach a connector only through the registry.
SYSTEM_FREE = ("engine", "mapping", "model", "store", "bus", "core", "observe")
CONNECTOR_SHARED = {"ferry.connectors", "ferry.connectors.registry"}


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


def test_nothing_below_the_connectors_names_a_system() -> None:
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py") if rel.parts else ""
        if own not in SYSTEM_FREE:
            continue
        for module in _imports(path):
            if module.startswith("ferry.connectors") and module not in CONNECTOR_SHARED:
                violations.append(f"{rel}: imports {module}")
    assert not violations, "a layer below the connectors names a system:\n" + "\n".join(violations)
