"""The ``jaxrnn`` command: ``jaxrnn tour`` and one subcommand per capability.

Each capability lives in a module of this package (discovered automatically) that defines

    TITLE: str                       one line, shown in the tour
    ORDER: int                       its place in the tour
    add_commands(subparsers) -> None registers its subcommands (optional)
    tour() -> Iterator[str]          yields one line per demonstration, with numbers (optional)

A subcommand is made with :func:`jaxrnn.cli._options.command`, which sets
``func=callable(args) -> int`` and shows every option's default in its help. Option values
are checked by the command line (``_options.integer``, ``_options.number``,
``_options.OptionError``); a ``ValueError`` a command raises ends it as argparse ends a bad
option: the usage line and ``jaxrnn COMMAND: error: MESSAGE`` on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

from jaxrnn.cli._options import HelpFormatter, command


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
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [m.__name__.rsplit(".", 1)[-1] for m in capabilities() if hasattr(m, "tour")]
    tour = command(
        sub, "tour", run_tour, help="a guided run of every capability, one line per step"
    )
    tour.add_argument(
        "--only",
        nargs="+",
        choices=names,
        metavar="SECTION",
        help=f"run only these sections, of {', '.join(names)} (default: all)",
    )
    for module in capabilities():
        if hasattr(module, "add_commands"):
            module.add_commands(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line on ``argv``; returns the exit status.

    0 on success, 1 when a check the command makes fails, 2 for bad input: a bad option
    (argparse's own report) or a ``ValueError`` from the command, both as the usage line and
    ``jaxrnn COMMAND: error: MESSAGE`` on stderr.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 0
        try:
            return args.func(args)
        except ValueError as error:
            args.command_parser.error(str(error))
    except SystemExit as stop:  # from argparse: --help, or a reported error
        return 0 if stop.code is None else stop.code


if __name__ == "__main__":
    sys.exit(main())
