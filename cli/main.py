"""`tashi`: drive a Tashi cluster.  Tashi's command names, one command for users and admins."""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import re
import sys

from tashi.cli.context import Context, UsageError
from tashi.cli.render import FORMATS
from tashi.runtime.client import DEFAULT_CM, TashiError

# Each module exposes register(subparsers).
COMMAND_MODULES = [
    "tashi.cli.instances_cmds",
    "tashi.cli.admin_cmds",
    "tashi.cli.image_cmds",
    "tashi.cli.scheduling_cmds",
    "tashi.cli.accounting_cmds",
    "tashi.cli.console_cmds",
    "tashi.cli.watch_cmds",
    "tashi.cli.certs_cmds",  # local: the site CA, needs no cluster manager
]

COLUMN_FLAG = re.compile(r"^--(show|hide)-([A-Za-z0-9_]+)$")


def _default_user() -> str:
    try:
        return os.environ.get("TASHI_USER") or getpass.getuser()
    except (KeyError, OSError):
        return ""


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options every command takes, before or after the command name."""

    def d(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--cm", default=d(os.environ.get("TASHI_CM", DEFAULT_CM)),
                        help="cluster manager HOST:PORT (env TASHI_CM)")
    if "--user" not in parser._option_string_actions:  # reservations use --user for the target
        parser.add_argument("--user", default=d(_default_user()),
                            help="act as this user (env TASHI_USER; default your login name)")
    for flag, env, what in (("--tls-ca", "TASHI_CA", "the site CA certificate"),
                            ("--tls-cert", "TASHI_CERT", "your certificate"),
                            ("--tls-key", "TASHI_KEY", "your key")):
        parser.add_argument(flag, default=d(os.environ.get(env, "")), metavar="PEM",
                            help=f"{what} for mutual TLS (env {env}; default "
                                 f"~/.config/tashi/{flag[6:]}.pem when all three exist)")
    parser.add_argument("--token", default=d(os.environ.get("TASHI_TOKEN", "")), metavar="TOKEN",
                        help="bearer token instead of a certificate (env TASHI_TOKEN; default "
                             "~/.config/tashi/token)")
    parser.add_argument("-o", "--output", choices=FORMATS, default=d("table"))
    parser.add_argument("--timeout", type=float, default=d(30.0), help="seconds per call")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tashi", description=__doc__,
        epilog="--show-COLUMN / --hide-COLUMN choose table columns (e.g. --show-vm_id).")
    _common(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command_parser in sub.choices.values():
        _common(command_parser, defaults=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    show: list[str] = []
    hide: list[str] = []
    rest: list[str] = []
    for arg in argv:
        m = COLUMN_FLAG.match(arg)
        if m:
            (show if m.group(1) == "show" else hide).append(m.group(2))
        else:
            rest.append(arg)
    parser = build_parser()
    args = parser.parse_args(rest)
    ctx = Context(args, show=show, hide=hide)
    try:
        code = args.func(ctx)
    except TashiError as exc:
        ctx.err(f"{args.command}: {exc.code.name}: {exc.message}")
        code = 1
    except UsageError as exc:
        ctx.err(f"{args.command}: {exc}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug: still one line, never a traceback
        ctx.err(f"{args.command}: internal error: {type(exc).__name__}: {exc}")
        code = 3
    finally:
        ctx.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
