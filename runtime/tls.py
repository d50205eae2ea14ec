"""Transport security shared by every service and client: mutual TLS with the
site CA (`tashi certs`), and the rule that nothing listens beyond loopback
without it unless the operator says `--insecure`.

A server built with `Tls` requires a client certificate signed by the site
CA; the caller's identity is then read from that certificate
(`tashi.runtime.auth`), never from what the caller says about itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TlsError(Exception):
    """TLS settings that cannot be used; the message says which and why."""


@dataclass
class TransportSettings:
    """The transport fields every service's config has (flags `--tls-ca` ...)."""

    tls_ca: str = dataclasses.field(default="", metadata={
        "help": "site CA certificate (PEM); with --tls-cert and --tls-key turns on mutual TLS"})
    tls_cert: str = dataclasses.field(default="", metadata={
        "help": "this service's certificate (PEM), issued by `tashi certs issue`"})
    tls_key: str = dataclasses.field(default="", metadata={"help": "its private key (PEM)"})
    insecure: bool = dataclasses.field(default=False, metadata={
        "help": "allow plaintext on a non-loopback address (identities are then unverified)"})


@dataclass(frozen=True)
class Tls:
    """The three PEM blobs of one party: the site CA, its certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, ca: str | Path, cert: str | Path, key: str | Path) -> Tls:
        blobs = []
        for what, path in (("CA certificate", ca), ("certificate", cert), ("key", key)):
            try:
                blobs.append(Path(path).read_bytes())
            except OSError as exc:
                raise TlsError(f"cannot read the {what} {path}: {exc.strerror}") from None
        if os.stat(key).st_mode & 0o077:
            log.warning("the TLS key %s can be read by other users; chmod 600 it", key)
        return cls(*blobs)

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Tls | None:
        """None when no TLS file is named; all three or an error otherwise."""
        given = [settings.tls_ca, settings.tls_cert, settings.tls_key]
        if not any(given):
            return None
        if not all(given):
            raise TlsError("mutual TLS needs all of --tls-ca, --tls-cert and --tls-key")
        return cls.load(*given)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def server_only_credentials(self) -> grpc.ServerCredentials:
        """TLS that asks callers for no certificate (they bring a bearer token)."""
        return grpc.ssl_server_credentials([(self.key, self.cert)])

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """With a certificate and key: mutual TLS; with the CA alone: the server is
        checked, the caller shows a bearer token instead."""
        if not self.cert:
            return grpc.ssl_channel_credentials(self.ca)
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)

    @classmethod
    def ca_only(cls, ca: str | Path) -> Tls:
        try:
            return cls(Path(ca).read_bytes(), b"", b"")
        except OSError as exc:
            raise TlsError(f"cannot read the CA certificate {ca}: {exc.strerror}") from None


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plaintext(listen_host: str, insecure: bool, service: str) -> None:
    """Refuse plaintext beyond loopback unless the operator insists (then say so loudly)."""
    if is_loopback(listen_host):
        return
    if not insecure:
        raise TlsError(
            f"{service} will not listen on {listen_host or 'every address'} without TLS: "
            "give --tls-ca, --tls-cert and --tls-key (see `tashi certs`), or --insecure "
            "to accept unauthenticated callers from the network")
    log.warning("INSECURE: %s listens on %s in plaintext; any caller can claim any identity",
                service, listen_host or "every address")
