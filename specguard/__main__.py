"""``python -m specguard COMMAND``: the suite's command line.

    python -m specguard report results/benchmark.json --out results/report
    python -m specguard ab old/benchmark.json new/benchmark.json --tolerance 0.1
    python -m specguard upgrade .venv-old/bin/python .venv-new/bin/python --matrix M.toml --categories coding
    python -m specguard model smollm2-135m-instruct
    python -m specguard model smollm2-135m-as-10b
    python -m specguard merge shard-1 shard-2 shard-3 --out merged
    python -m specguard schema --out docs/matrix.schema.json

A command is a module function ``add_parser(subparsers)`` that sets ``func(args) -> exit code``;
add one to ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from specguard.upgrade import ab
from specguard.report import build as report
from specguard.upgrade import check as upgrade
from specguard.report import merge
from specguard.config.errors import SpecguardError


def _add_model(sub: Any) -> None:
    p = sub.add_parser("model", help="Print the local folder of a builtin model, converting it on first use.")
    p.add_argument("name", metavar="NAME", help="e.g. smollm2-135m-instruct (or builtin:smollm2-135m-instruct); "
                   "smollm2-135m-as-10b is the same function padded to ~22 GB in bf16, built on first use")
    p.set_defaults(func=_run_model)


def _run_model(args: argparse.Namespace) -> int:
    from specguard.serving.model import BUILTIN_PREFIX, resolve_model

    name = args.name if args.name.startswith(BUILTIN_PREFIX) else BUILTIN_PREFIX + args.name
    print(resolve_model(name))
    return 0


def _add_schema(sub: Any) -> None:
    p = sub.add_parser("schema", help="Print the JSON Schema of a matrix file (docs/matrix.schema.json).")
    p.add_argument("--out", metavar="FILE", type=Path, help="write it to FILE instead of printing it")
    p.set_defaults(func=_run_schema)


def _run_schema(args: argparse.Namespace) -> int:
    from specguard.config.matrix import matrix_json_schema
    from specguard.files import write_text_atomic

    text = json.dumps(matrix_json_schema(), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(args.out, text)
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The parser and its subparsers object, so that callers can add commands."""
    parser = argparse.ArgumentParser(prog="python -m specguard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    report.add_parser(sub)
    ab.add_parser(sub)
    upgrade.add_parser(sub)
    merge.add_parser(sub)
    _add_model(sub)
    _add_schema(sub)
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (SpecguardError, OSError) as exc:
        print(f"specguard {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
