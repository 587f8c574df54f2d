"""Rewrite this issue's section of bench/RESULTS.md, leaving every other section as it is."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import psutil

START, END = "<!-- issue-5:start -->", "<!-- issue-5:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{psutil.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
            f"load average {load} when this section was written (the machine is shared with other developers)")


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{START}\n{body.rstrip()}\n{END}"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
