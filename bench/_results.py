"""Shared pieces of the benchmarks: timing medians and writing a section of RESULTS.md.

Each benchmark owns one section of ``bench/RESULTS.md`` between the markers
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and rewrites only that section.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def median_time(fn, *, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls; ``fn`` must block."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(fns: dict, *, rounds: int = 9, warmup: int = 2) -> dict:
    """Seconds of each blocking ``fn()`` per round, the contenders run in turn each round.

    Returns ``{name: [seconds per round]}``: a busy moment on a shared machine hits all
    contenders of a round alike, so ratios within a round are steadier than ratios of
    separately taken medians.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def machine_line() -> str:
    """Machine, versions and date, for the head of a results section."""
    import jax

    versions = [f"python {platform.python_version()}", f"jax {jax.__version__}"]
    for name in ("jaxlib", "optax", "flax", "equinox", "torch", "numpy"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    cpu = platform.processor() or platform.machine()
    return (
        f"{datetime.date.today().isoformat()} · {cpu}, {os.cpu_count()} cores, "
        f"{platform.system()} · " + ", ".join(versions)
    )


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
