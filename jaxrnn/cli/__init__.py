"""The ``jaxrnn`` command: ``jaxrnn tour`` and one subcommand per capability.

Each capability lives in a module of this package (discovered automatically) that defines

    TITLE: str                       one line, shown in the tour
    ORDER: int                       its place in the tour
    add_commands(subparsers) -> None registers its subcommands (optional)
    tour() -> Iterator[str]          yields one line per demonstration, with numbers (optional)

A subcommand sets ``func=callable(args) -> int`` on its parser with ``set_defaults``. A
``ValueError`` it raises (the library's answer to bad input) ends the command with its
message and exit status 1, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time


def capabilities():
    """The capability modules of this package, in tour order."""
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 1000), m.__name__))


def run_tour(args) -> int:
    """Run every capability's tour steps, printing one line each with its timing."""
    start = time.perf_counter()
    sections = [m for m in capabilities() if hasattr(m, "tour")]
    if args.only:
        wanted = set(args.only)
        sections = [m for m in sections if m.__name__.rsplit(".", 1)[-1] in wanted]
    print(f"jaxrnn tour: {len(sections)} sections")
    for number, module in enumerate(sections, 1):
        print(f"\n[{number}] {module.TITLE}")
        section_start = time.perf_counter()
        for line in module.tour():
            print(f"  - {line}", flush=True)
        print(f"  ({time.perf_counter() - section_start:.1f} s)")
    print(f"\ntour finished in {time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrnn",
        description="jaxrnn: recurrent computation in JAX. Start with `jaxrnn tour`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [m.__name__.rsplit(".", 1)[-1] for m in capabilities() if hasattr(m, "tour")]
    tour = sub.add_parser("tour", help="a guided run of every capability, one line per step")
    tour.add_argument(
        "--only", nargs="+", choices=names, metavar="SECTION", help=f"run only {names}"
    )
    tour.set_defaults(func=run_tour)
    for module in capabilities():
        if hasattr(module, "add_commands"):
            module.add_commands(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except ValueError as error:
        raise SystemExit(f"jaxrnn {args.command}: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
