"""`tashi certs`: the site CA and its certificates, made locally (no cluster manager needed).

Run it on the machine that should hold the CA key; copy each issued key
only to the host, service or user it names.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tashi.cli.context import Context, UsageError
from tashi.runtime import certs

CERTS_DIR_ENV = "TASHI_CERTS_DIR"
DEFAULT_CERTS_DIR = "~/.config/tashi/ca"
USER_CONFIG_DIR = "~/.config/tashi"
FILE_COLUMNS = ["file", "path"]


def certs_dir(value: str | None) -> Path:
    """--dir, else $TASHI_CERTS_DIR, else ~/.config/tashi/ca."""
    return Path(value or os.environ.get(CERTS_DIR_ENV) or DEFAULT_CERTS_DIR).expanduser()


def _rows(**paths: Path) -> list[dict[str, str]]:
    return [{"file": what, "path": str(path)} for what, path in paths.items()]


def certs_init(ctx: Context) -> int:
    directory = certs_dir(ctx.args.dir)
    try:
        ca = certs.create_ca(directory, site=ctx.args.site, days=ctx.args.days)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    ctx.output(_rows(ca_cert=ca, ca_key=directory / certs.CA_KEY), FILE_COLUMNS)
    return 0


def certs_issue(ctx: Context) -> int:
    a = ctx.args
    directory = certs_dir(a.dir)
    out = Path(a.out) if a.out else None
    try:
        cert, key = certs.issue(directory, a.kind, a.name, hosts=a.host or (), days=a.days,
                                out=out)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    ca = directory / certs.CA_CERT
    ctx.output(_rows(cert=cert, key=key, ca_cert=ca), FILE_COLUMNS)
    if a.kind == "user":
        # Stderr, so that -o json stays parseable.
        ctx.err(f"on {a.name}'s machine: copy {cert} to {USER_CONFIG_DIR}/cert.pem, "
                f"{key} to {USER_CONFIG_DIR}/key.pem (keep it mode 0600) and "
                f"{ca} to {USER_CONFIG_DIR}/ca.pem")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dir_help = (f"the CA's directory (default ${CERTS_DIR_ENV}, else {DEFAULT_CERTS_DIR}); "
                "it holds ca.pem and ca.key")
    p = sub.add_parser("certs", help="create the site CA and issue certificates (local)",
                       description=__doc__)
    certs_sub = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    init = certs_sub.add_parser(
        "init", help="create the site CA (never overwrites one)",
        description="Create the site CA: DIR/ca.pem and DIR/ca.key (0600, in a 0700 directory).")
    init.add_argument("--dir", metavar="DIR", help=dir_help)
    init.add_argument("--site", default="tashi", help="site name, in the CA's subject")
    init.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    init.set_defaults(func=certs_init)

    iss = certs_sub.add_parser(
        "issue", help="issue a certificate for a user, a node (host) or a service",
        description="Issue a certificate (CN=NAME, OU=KIND) signed by the site CA; writes "
                    "NAME.pem and NAME.key (0600) to --out, default DIR/KINDs/.  Issuing "
                    "again for the same name replaces the pair.")
    iss.add_argument("--dir", metavar="DIR", help=dir_help)
    iss.add_argument("--kind", required=True, choices=certs.KINDS)
    iss.add_argument("--name", required=True,
                     help="user, host or service name (1-63 of A-Z a-z 0-9 . _ -)")
    iss.add_argument("--host", action="append", metavar="H",
                     help="DNS name or IP address the node or service answers on (repeat); "
                          "default localhost, 127.0.0.1 and, for a node, NAME")
    iss.add_argument("--out", metavar="DIR", help="write the pair here instead (made 0700)")
    iss.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    iss.set_defaults(func=certs_issue)
