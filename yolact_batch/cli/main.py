"""``yolact-batch`` command line: the only place that parses argv. Each command group lives in
its own module, which registers its subcommands with ``add_command``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from yolact_batch.cli import export, predict, reports, segment
from yolact_batch.core.allocator import retain_freed_memory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolact-batch", description="Batch YOLACT instance segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (predict, export, segment, reports):
        group.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # this process owns its allocator: reuse freed arrays (core.allocator)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
