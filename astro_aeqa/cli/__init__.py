# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The ``aeqa`` command: a thin layer over the public API.

Each subcommand lives in its own module ``astro_aeqa.cli._<name>`` that
defines ``register(subparsers)``; the module is listed in ``_SUBCOMMANDS``.
Errors a user can fix print one line on stderr and exit with status 2;
``--traceback`` shows the full traceback instead.
"""

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..exceptions import AEQAError

__all__ = ["main", "build_parser"]

_SUBCOMMANDS = ["simulate", "train", "score", "mask", "info", "validate", "skymap", "demo"]

log = logging.getLogger("astro_aeqa")

# Errors a user causes and can fix: one line, exit status 2. TypeError and
# KeyError are not among them: from our code they are bugs, and show a traceback.
_USER_ERRORS = (AEQAError, OSError, ValueError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse already exits with status 2; keep its one-line message.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    """Return the `argparse.ArgumentParser` of the ``aeqa`` command."""
    parser = _Parser(
        prog="aeqa",
        description="Autoencoder image quality evaluation and masking for astronomical frames.",
    )
    parser.add_argument("--version", action="version", version=f"aeqa {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback on errors"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="more log messages")
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="only errors; no progress bar"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}._{name}")
        sub = module.register(subparsers)
        if sub is None:
            sub = subparsers.choices[name]
        _add_verbosity(sub)
    return parser


def _add_verbosity(parser):
    """``-v``/``-q`` also after the subcommand (``aeqa mask ... -q``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log messages"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="only errors; no progress bar",
    )


def _setup_logging(args):
    """Send the package's log to stderr; return what to restore when main() returns."""
    level = logging.ERROR if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    # captured warnings go to the py.warnings logger, which Python would
    # otherwise give a NullHandler: they print through the same handler
    warnings_log = logging.getLogger("py.warnings")
    saved = [
        (logger, list(logger.handlers), logger.level, logger.propagate)
        for logger in (log, warnings_log)
    ]
    for logger in (log, warnings_log):
        logger.handlers[:] = [handler]
        logger.propagate = False
    log.setLevel(level)
    return saved


def _restore_logging(saved):
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _quiet_broken_pipe():
    """stdout was closed by the reader (``aeqa info | head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured): nothing to do
        pass


def main(argv=None):
    """
    Run the ``aeqa`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 when some files failed, 2 on a usage or input error.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.quiet and args.verbose:
        parser.error("-q/--quiet and -v/--verbose cannot be used together")
    saved = _setup_logging(args)
    args.progress_bar = not args.quiet
    logging.captureWarnings(True)  # warnings print as one log line, not Python's raw format
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 0
    except _USER_ERRORS as exc:
        if args.traceback:
            raise
        message = " ".join(str(exc).split())  # one line, even for multi-line messages
        # the library names its keyword, the command its option
        message = message.replace("pass overwrite=True", "pass --overwrite")
        print(f"aeqa {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aeqa: interrupted", file=sys.stderr)
        return 130
    finally:
        logging.captureWarnings(False)
        _restore_logging(saved)
