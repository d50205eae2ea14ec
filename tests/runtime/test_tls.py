"""Safe defaults: nothing listens beyond loopback in plaintext unless told to,
and TLS settings are all or nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tashi.runtime import server
from tashi.runtime.certs import create_ca, issue
from tashi.runtime.tls import Tls, TlsError, TransportSettings, check_plaintext, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_tls(host: str) -> None:
    assert is_loopback(host)
    check_plaintext(host, insecure=False, service="tashi-cm")


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.7:0", ":0", "cm.example:0"])
def test_plaintext_beyond_loopback_is_refused_before_binding(listen: str) -> None:
    with pytest.raises(TlsError, match="--insecure"):
        server.start(listen, [], name="tashi-cm")


def test_insecure_is_allowed_and_said_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_plaintext("0.0.0.0", insecure=True, service="tashi-nm")
    assert "INSECURE: tashi-nm" in caplog.text


def test_tls_settings_are_all_or_nothing(tmp_path: Path) -> None:
    assert Tls.from_settings(TransportSettings()) is None
    with pytest.raises(TlsError, match="all of"):
        Tls.from_settings(TransportSettings(tls_ca="ca.pem"))
    with pytest.raises(TlsError, match="cannot read"):
        Tls.from_settings(TransportSettings(tls_ca=str(tmp_path / "no.pem"),
                                            tls_cert="x", tls_key="y"))
    create_ca(tmp_path / "ca")
    cert, key = issue(tmp_path / "ca", "service", "tashi-cm")
    tls = Tls.from_settings(TransportSettings(tls_ca=str(tmp_path / "ca" / "ca.pem"),
                                              tls_cert=str(cert), tls_key=str(key)))
    assert tls is not None and tls.cert.startswith(b"-----BEGIN CERTIFICATE")
