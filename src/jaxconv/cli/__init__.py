"""The `jaxconv` command. Thin: it parses arguments and calls the library; one module per command.

User mistakes (an unknown model, an image size the network cannot take, a bad flag, a package
missing from the environment) end with one line on stderr and exit status 2, never a traceback:
every jaxconv error derives from jaxconv.errors.UserError (exit 2) or RunFailure (exit 1), and
``main`` catches the two once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jaxconv.cli import bench, compare, evaluate, export, listing, predict, report, summary, train
from jaxconv.cli.common import EXIT_FAILURE, EXIT_USAGE, Parser, UsageError, missing_dependency, out_of_memory
from jaxconv.cli.startup import Terminated, apply_default_xla_flags, apply_malloc_tuning
from jaxconv.errors import RunFailure, UserError
from jaxconv.user_modules import ENV_VAR, env_specs, import_modules, merge

COMMANDS = (summary, train, evaluate, listing, export, predict, compare, report, bench)  # in `jaxconv --help` order


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="jaxconv", description="Convolutional networks in JAX/Flax.",
                    epilog=f"Every command takes --import MODULE_OR_FILE (repeatable; also ${ENV_VAR}, "
                           f"separated by '{os.pathsep}' or ','): your own models and blocks, registered with "
                           "jaxconv.register when imported. See docs/extending.md.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help=f"import your module or .py file first (its models become known); repeatable; "
                             f"also ${ENV_VAR}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the program: a SIGTERM from here on is one line; a reader that goes away ends no run
        import signal

        from jaxconv.cli.startup import stop_on_sigterm, survive_closed_pipes, terminated

        survive_closed_pipes()

        if sys.argv[1:2] == ["train"]:  # exit 0: it saves and stops at its own pace
            signal.signal(signal.SIGTERM, terminated)
        else:  # as Ctrl-C, exit 143
            stop_on_sigterm()
        global _PROGRAM
        _PROGRAM = True
        try:
            return _main(sys.argv[1:])
        finally:  # done: a late SIGTERM would only turn the outcome into a traceback
            if sys.argv[1:2] != ["train"]:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _main(list(argv))


def _leave_at_once(code: int) -> None:
    """Ends the program now, after an out-of-memory line: tearing down what failed (a tf.data iterator whose
    workers ran out of memory) could hang the interpreter's exit for good, deaf to SIGTERM."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


_PROGRAM = False  # main() runs as the program (not called from Python): it may end the process


def _main(argv: list[str]) -> int:
    apply_default_xla_flags()
    apply_malloc_tuning()
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        args.imports = merge(env_specs(), args.imports)
        if args.command != "train":  # train imports them once the processes of a multi-process run have met
            args.imports = import_modules(args.imports)
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        if extra:
            raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
        return args.func(args)
    except (UsageError, UserError) as e:  # every module's user-mistake errors derive from UserError
        print(f"jaxconv: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailure as e:
        print(f"jaxconv: stopped: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except ModuleNotFoundError as e:
        message = missing_dependency(e, argv)
        if message is None:
            raise
        print(f"jaxconv: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # out of memory (MemoryError, JAX's and TensorFlow's): one line; anything else as before
        message = out_of_memory(e, argv)
        if message is None:
            raise
        print(f"jaxconv: error: {message}", file=sys.stderr)
        if _PROGRAM:
            _leave_at_once(EXIT_USAGE)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # with a message when jaxconv raised it (stopping a dataset's preparation)
        print(f"jaxconv: {str(e) or 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130  # 128 + SIGTERM or SIGINT, as a shell reports them


__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "UsageError", "build_parser", "main"]
