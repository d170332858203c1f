"""The ``plait`` command: ``plait <subcommand> ...``, one module per subcommand in ``plait/cli``.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int | None``, and a
module docstring whose first line is the one-line help; :data:`COMMANDS` registers its ``run``.
Errors a user can fix (bad paths, bad config, bad input) are printed as one line and exit with
code 2; set ``PLAIT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys

from plait.registry import Registry

# subcommand -> its run function (modules imported lazily so `plait --help` stays fast)
COMMANDS = Registry("command", {
    "prepare-text": "plait.cli.prepare_text:run",
    "train": "plait.cli.train:run",
    "generate": "plait.cli.generate:run",
    "chat": "plait.cli.chat:run",
    "convert": "plait.cli.convert:run",
    "prune": "plait.cli.prune:run",
    "embed": "plait.cli.embed:run",
    "eval": "plait.cli.eval:run",
    "index": "plait.cli.index:run",
    "search": "plait.cli.search:run",
    "zero-shot": "plait.cli.zero_shot:run",
    "translate": "plait.cli.translate:run",
    "classify": "plait.cli.classify:run",
    "tag": "plait.cli.tag:run",
    "relations": "plait.cli.relations:run",
    "summarise": "plait.cli.summarise:run",
    "recommend": "plait.cli.recommend:run",
    "detect": "plait.cli.detect:run",
    "segment": "plait.cli.segment:run",
    "caption": "plait.cli.caption:run",
    "ask": "plait.cli.ask:run",
    "transcribe": "plait.cli.transcribe:run",
    "speak": "plait.cli.speak:run",
    "imagine": "plait.cli.imagine:run",
    "serve": "plait.cli.serve:run",
})

# exceptions that mean "the user gave us something wrong", not "plait has a bug"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError,
                                                NotADirectoryError, PermissionError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's default prints usage; keep it to one line + hint
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _summary(name: str) -> str:
    """The first docstring line of a command's module, read without importing it."""
    spec = importlib.util.find_spec(COMMANDS.target(name).partition(":")[0])
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"command {name!r}: {COMMANDS.target(name)} is missing")
    with open(spec.origin) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc else ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="plait",
        description="plait: Transformers, GPT, BERT, CLIP and friends, from scratch in PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help=_summary(name))
            continue
        module = COMMANDS.module(name)
        p = sub.add_parser(name, help=_summary(name), description=module.__doc__ or "",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=COMMANDS.get(name))
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the subcommand being run
    only = argv[0] if argv and argv[0] in COMMANDS else None
    if argv and not argv[0].startswith("-") and only is None:
        known = ", ".join(COMMANDS)
        print(f"plait: error: unknown command '{argv[0]}' (commands: {known})", file=sys.stderr)
        return 2
    parser = build_parser(only)
    if only is not None and getattr(COMMANDS.module(only), "INTERMIXED", False):
        # options between positionals (`ask IMAGE --audio W QUESTION`): the subcommand's own
        # parser reads them intermixed (argparse cannot through the subparsers action)
        args, extra = _subparser(parser, only).parse_known_intermixed_args(argv[1:])
        args.command = only
    else:
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
