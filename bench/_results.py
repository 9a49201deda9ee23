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


def separate_runs(script: str, runs: int, extra_args: tuple = (), env: dict | None = None) -> list:
    """Run ``python script --child *extra_args`` ``runs`` times, each in a fresh process.

    The child prints one JSON document on its last line of stdout; the list of them is
    returned. Separate processes are separate runs: what a rerun on the same machine would
    give, so that a figure quoted as a range over them survives a rerun.
    """
    import json
    import subprocess
    import sys

    results = []
    for run in range(runs):
        done = subprocess.run(
            [sys.executable, script, "--child", *extra_args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"run {run + 1} of {runs} done", file=sys.stderr, flush=True)
    return results


def median_and_range(values, fmt: str = "{:.2f}") -> str:
    """'median (min-max)' of a list of numbers, each formatted with ``fmt``."""
    values = sorted(values)
    middle = statistics.median(values)
    if len(values) == 1:
        return fmt.format(middle)
    return f"{fmt.format(middle)} ({fmt.format(values[0])}-{fmt.format(values[-1])})"


def adaptive_medians(fns: dict, *, rounds: int = 9, budget: float = 0.5) -> dict:
    """Median seconds per blocking call of each ``fn()``, interleaved after a warm-up.

    Fast calls get more rounds (up to ``budget`` seconds per contender, at most 101), so
    that the medians of sub-millisecond calls are not at the mercy of one busy moment.
    """
    first = []
    for fn in fns.values():
        fn()
        start = time.perf_counter()
        fn()
        first.append(time.perf_counter() - start)
    rounds = max(rounds, min(101, int(budget / max(max(first), 1e-6))))
    times = interleaved_times(fns, rounds=rounds, warmup=0)
    return {name: statistics.median(t) for name, t in times.items()}
