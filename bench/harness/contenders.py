"""The contenders: how to run each, and how many records it must write."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
PIPELINE = REPO / "examples" / "shopify-to-salesforce.yml"


@dataclass(frozen=True)
class Contender:
    name: str
    label: str

    def command(self) -> list[str]:
        if self.name == "ferry":
            return [sys.executable, "-m", "ferry", "run", str(PIPELINE), "--json"]
        return [sys.executable, str(BENCH / "contenders" / f"{self.name}.py")]


CONTENDERS = {
    "ferry": Contender("ferry", "(a) ferry run"),
    "script_per_record": Contender("script_per_record", "(b) script, per record"),
    "script_bulk2": Contender("script_bulk2", "(c) script, bulk2"),
}
