"""The ``plait`` command: ``plait <subcommand> ...``, one module per subcommand in ``plait/cli``.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int | None``, and a
module docstring whose first line is the one-line help. Errors a user can fix (bad paths, bad
config, bad input) are printed as one line and exit with code 2; set ``PLAIT_DEBUG=1`` to see
the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

# subcommand name -> module in plait.cli (imported lazily so `plait --help` stays fast)
COMMANDS: dict[str, str] = {
    "prepare-text": "prepare_text",
    "train": "train",
    "generate": "generate",
    "convert": "convert",
    "embed": "embed",
    "eval": "eval",
    "index": "index",
    "search": "search",
    "zero-shot": "zero_shot",
}

# exceptions that mean "the user gave us something wrong", not "plait has a bug"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError,
                                                NotADirectoryError, PermissionError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's default prints usage; keep it to one line + hint
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _summary(module_name: str) -> str:
    spec = importlib.util.find_spec(f"plait.cli.{module_name}")
    if spec is None or spec.origin is None:
        return ""
    import ast

    with open(spec.origin) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc else ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="plait",
        description="plait: Transformers, GPT, BERT, CLIP and friends, from scratch in PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        if importlib.util.find_spec(f"plait.cli.{module_name}") is None:
            continue  # not built yet
        if only is not None and name != only:
            sub.add_parser(name, help=_summary(module_name))
            continue
        module = importlib.import_module(f"plait.cli.{module_name}")
        doc = module.__doc__ or ""
        p = sub.add_parser(name, help=_summary(module_name), description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the subcommand being run
    only = argv[0] if argv and argv[0] in COMMANDS else None
    if argv and not argv[0].startswith("-") and only is None:
        known = ", ".join(COMMANDS)
        print(f"plait: error: unknown command '{argv[0]}' (commands: {known})", file=sys.stderr)
        return 2
    parser = build_parser(only)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.extra = extra
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("PLAIT_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError):
            msg = f"missing key {msg}"
        print(f"plait {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
