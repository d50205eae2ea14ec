"""Which libvirt URIs a host may name for live migration: another host's QEMU over
libvirt's TCP or TLS transport, nothing else.  Never a local file (test:///etc/shadow
once answered with the file's first line), a command (qemu+ssh's ?command=), nor
options of libvirt's client in a query.  The CM checks what a node manager
advertises; the sending node manager checks again."""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = frozenset({"qemu+tcp", "qemu+tls"})
MAX_LENGTH = 256


def uri_problem(uri: str) -> str:
    """Why `uri` is not a migration URI, or '' when it is one."""
    if len(uri) > MAX_LENGTH:
        return f"a migration URI is at most {MAX_LENGTH} characters"
    try:
        parts = urlsplit(uri)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (not port_ok or parts.scheme not in SCHEMES or not parts.hostname or parts.query
            or parts.fragment or parts.path not in ("/system", "/session") or parts.username
            or parts.password):
        return "a migration URI is qemu+tcp://HOST[:PORT]/system or qemu+tls://HOST[:PORT]/system"
    return ""
