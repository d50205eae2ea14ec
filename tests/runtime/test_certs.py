"""The site CA and its certificates: real files, real signatures, a real mutual-TLS handshake."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tashi.runtime import certs


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    d = tmp_path / "site" / "ca"
    certs.create_ca(d, site="lab")
    return d


# --- the CA -----------------------------------------------------------------------------------

def test_ca_is_a_self_signed_ca_and_its_key_is_private(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    old = os.umask(0)  # the modes must come from the code, not from a kind umask
    try:
        path = certs.create_ca(d, site="lab", days=100)
    finally:
        os.umask(old)
    assert path == d / "ca.pem"
    assert mode(d) == 0o700 and mode(d / "ca.key") == 0o600
    ca = load(path)
    ca.verify_directly_issued_by(ca)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "lab"
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    now = datetime.now(UTC)
    assert abs(ca.not_valid_after_utc - (now + timedelta(days=100))) < timedelta(minutes=1)
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    assert spki(key.public_key()) == spki(ca.public_key())


def spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))


def test_ca_is_never_overwritten(ca_dir: Path) -> None:
    before = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca.key").read_bytes()
    with pytest.raises(FileExistsError):
        certs.create_ca(ca_dir)
    (ca_dir / "ca.pem").unlink()  # even half a CA (a key alone) is kept
    with pytest.raises(FileExistsError):
        certs.create_ca(ca_dir)
    assert (ca_dir / "ca.key").read_bytes() == before[1]
    assert not (ca_dir / "ca.pem").exists()


# --- leaf certificates ------------------------------------------------------------------------

def dns_and_ips(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (san.get_values_for_type(x509.DNSName),
            [str(ip) for ip in san.get_values_for_type(x509.IPAddress)])


@pytest.mark.parametrize("kind,name,eku,dns,ips", [
    ("user", "alice", [ExtendedKeyUsageOID.CLIENT_AUTH], [], []),
    ("node", "node1", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
     ["localhost", "node1"], ["127.0.0.1"]),
    ("service", "scheduler", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
     ["localhost"], ["127.0.0.1"]),
])
def test_leaf_per_kind(ca_dir: Path, kind: str, name: str, eku: list[x509.ObjectIdentifier],
                       dns: list[str], ips: list[str]) -> None:
    cert_path, key_path = certs.issue(ca_dir, kind, name, days=30)
    assert cert_path == ca_dir / f"{kind}s" / f"{name}.pem"
    assert key_path == ca_dir / f"{kind}s" / f"{name}.key"
    ca, cert = load(ca_dir / "ca.pem"), load(cert_path)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == kind
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == eku
    assert sorted(dns_and_ips(cert)[0]) == dns and dns_and_ips(cert)[1] == ips
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    now = datetime.now(UTC)
    skew = now - cert.not_valid_before_utc
    assert timedelta(minutes=4) < skew < timedelta(minutes=6)
    assert abs(cert.not_valid_after_utc - (now + timedelta(days=30))) < timedelta(minutes=1)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert spki(key.public_key()) == spki(cert.public_key())
    assert certs.identity_of(cert_path.read_bytes()) == (kind, name)


def test_key_encipherment_for_nodes_or_when_asked(ca_dir: Path) -> None:
    """libvirt and QEMU refuse a TLS certificate whose critical keyUsage lacks it;
    a node's certificate is also its hypervisor's, so nodes get it by default."""
    plain = load(certs.issue(ca_dir, "user", "u1")[0])
    assert not plain.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert not load(certs.issue(ca_dir, "node", "n0", key_encipherment=False)[0]) \
        .extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    for cert in (certs.issue(ca_dir, "node", "n1")[0],
                 certs.issue(ca_dir, "service", "s1", key_encipherment=True)[0]):
        ext = load(cert).extensions.get_extension_for_class(x509.KeyUsage)
        assert ext.critical and ext.value.key_encipherment and ext.value.digital_signature


def test_hosts_become_sans(ca_dir: Path) -> None:
    cert, _ = certs.issue(ca_dir, "node", "node1",
                          hosts=["node1.lab.example", "10.0.0.5", "fd00::5", "*.vm.lab.example"])
    san = load(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1.lab.example", "*.vm.lab.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"),
                                                        ipaddress.ip_address("fd00::5")]
    # A node named by its address gets it as an IP SAN, which is what a client checks.
    cert, _ = certs.issue(ca_dir, "node", "10.0.0.6")
    assert dns_and_ips(load(cert)) == (["localhost"], ["127.0.0.1", "10.0.0.6"])


def test_modes_and_out_directory(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "deliver" / "node1"
    old = os.umask(0)
    try:
        cert, key = certs.issue(ca_dir, "node", "node1", out=out)
        certs.issue(ca_dir, "user", "alice")
    finally:
        os.umask(old)
    assert (cert, key) == (out / "node1.pem", out / "node1.key")
    assert mode(out) == 0o700 and mode(key) == 0o600
    assert mode(ca_dir / "users") == 0o700 and mode(ca_dir / "users" / "alice.key") == 0o600
    assert not (ca_dir / "nodes").exists()
    assert sorted(p.name for p in out.iterdir()) == ["node1.key", "node1.pem"]  # no temp left


def test_reissue_replaces_the_pair_and_tightens_the_mode(ca_dir: Path) -> None:
    cert, key = certs.issue(ca_dir, "service", "cm")
    first = load(cert).serial_number, key.read_bytes()
    key.chmod(0o644)
    cert, key = certs.issue(ca_dir, "service", "cm")
    assert mode(key) == 0o600
    assert load(cert).serial_number != first[0] and key.read_bytes() != first[1]


@pytest.mark.parametrize("kind,name", [
    ("admin", "alice"), ("users", "alice"), ("", "alice"),
    ("user", ""), ("user", "../x"), ("user", "a/b"), ("user", ".."), ("user", "a..b"),
    ("user", "x" * 64), ("user", "al ice"), ("user", "alice\n"), ("user", "ålice"),
])
def test_bad_kind_or_name_is_refused_and_writes_nothing(ca_dir: Path, kind: str,
                                                        name: str) -> None:
    before = sorted(ca_dir.rglob("*"))
    with pytest.raises(ValueError):
        certs.issue(ca_dir, kind, name)
    assert sorted(ca_dir.rglob("*")) == before
    assert not list(ca_dir.parent.glob("x*"))


def test_longest_name_and_odd_characters_are_accepted(ca_dir: Path) -> None:
    cert, _ = certs.issue(ca_dir, "user", "x" * 63)
    assert certs.identity_of(cert.read_bytes()) == ("user", "x" * 63)
    cert, _ = certs.issue(ca_dir, "service", "a.b_c-d")
    assert cert.name == "a.b_c-d.pem"


def test_bad_hosts_are_refused(ca_dir: Path) -> None:
    for hosts in (["bad host"], [""], ["a/b"], ["node1\n"]):
        with pytest.raises(ValueError):
            certs.issue(ca_dir, "node", "node1", hosts=hosts)
    with pytest.raises(ValueError, match="no hosts"):
        certs.issue(ca_dir, "user", "alice", hosts=["localhost"])
    assert not (ca_dir / "nodes").exists() and not (ca_dir / "users").exists()


def test_issue_without_a_ca_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="certs init"):
        certs.issue(tmp_path / "nowhere", "user", "alice")
    assert not (tmp_path / "nowhere").exists()


def test_serials_are_random(ca_dir: Path) -> None:
    serials = {load(certs.issue(ca_dir, "user", f"u{i}")[0]).serial_number for i in range(5)}
    assert len(serials) == 5 and all(s > 2**64 for s in serials)


# --- identity_of -------------------------------------------------------------------------------

def self_signed(attrs: list[x509.NameAttribute]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attrs)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_identity_of_refuses_certs_that_name_no_principal(ca_dir: Path) -> None:
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "alice")
    for pem in (self_signed([cn]),
                self_signed([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "user")]),
                self_signed([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"), cn]),
                self_signed([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "user"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "service"),
                             cn]),
                (ca_dir / "ca.pem").read_bytes(),
                b"not a certificate"):
        with pytest.raises(ValueError):
            certs.identity_of(pem)
    ok = self_signed([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "service"), cn])
    assert certs.identity_of(ok) == ("service", "alice")


def test_identity_of_is_cached(ca_dir: Path) -> None:
    pem = certs.issue(ca_dir, "node", "node2")[0].read_bytes()
    certs.identity_of(pem)
    hits = certs.identity_of.cache_info().hits
    assert certs.identity_of(pem) == ("node", "node2")
    assert certs.identity_of.cache_info().hits == hits + 1


# --- a real mutual-TLS handshake ---------------------------------------------------------------

class RecordingHealth(health.HealthServicer):
    """grpc.health.v1 that remembers each caller's auth context."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, list[bytes]]] = []

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        self.seen.append(context.auth_context())
        return super().Check(request, context)


class TLSServer:
    def __init__(self, ca_dir: Path, kind: str, name: str, hosts: tuple[str, ...] = ()) -> None:
        cert, key = certs.issue(ca_dir, kind, name, hosts=hosts)
        creds = grpc.ssl_server_credentials(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=(ca_dir / "ca.pem").read_bytes(), require_client_auth=True)
        from concurrent.futures import ThreadPoolExecutor

        self.health = RecordingHealth()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        assert self.port
        self.server.start()

    def check(self, ca: Path, cert: Path | None = None, key: Path | None = None,
              target: str = "127.0.0.1", server_name: str | None = None) -> Any:
        creds = grpc.ssl_channel_credentials(
            ca.read_bytes(), key.read_bytes() if key else None,
            cert.read_bytes() if cert else None)
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        with grpc.secure_channel(f"{target}:{self.port}", creds, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

    def stop(self) -> None:
        self.server.stop(None).wait()


@pytest.fixture
def cm_server(ca_dir: Path) -> Iterator[TLSServer]:
    server = TLSServer(ca_dir, "service", "cm")
    try:
        yield server
    finally:
        server.stop()


def test_user_cert_from_the_site_ca_gets_in_with_its_name(ca_dir: Path,
                                                          cm_server: TLSServer) -> None:
    cert, key = certs.issue(ca_dir, "user", "alice")
    resp = cm_server.check(ca_dir / "ca.pem", cert, key)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    ctx = cm_server.health.seen[-1]
    assert ctx["x509_common_name"] == [b"alice"]
    assert certs.identity_of(ctx["x509_pem_cert"][0]) == ("user", "alice")
    # The default SANs let a client reach a local service by name as well as by address.
    cm_server.check(ca_dir / "ca.pem", cert, key, target="localhost")


def test_node_and_service_certs_are_also_client_certs(ca_dir: Path,
                                                      cm_server: TLSServer) -> None:
    for kind, name in (("node", "node1"), ("service", "scheduler")):
        cert, key = certs.issue(ca_dir, kind, name)
        cm_server.check(ca_dir / "ca.pem", cert, key)
        assert certs.identity_of(cm_server.health.seen[-1]["x509_pem_cert"][0]) == (kind, name)


def test_cert_from_another_ca_is_refused(ca_dir: Path, cm_server: TLSServer,
                                         tmp_path: Path) -> None:
    other = tmp_path / "other"
    certs.create_ca(other)
    cert, key = certs.issue(other, "user", "alice")
    with pytest.raises(grpc.RpcError) as err:
        cm_server.check(ca_dir / "ca.pem", cert, key)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert cm_server.health.seen == []


def test_no_client_cert_is_refused(ca_dir: Path, cm_server: TLSServer) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cm_server.check(ca_dir / "ca.pem")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert cm_server.health.seen == []


def test_client_checks_the_servers_host_names(ca_dir: Path) -> None:
    """A node certificate names its host; a client dialling another name refuses it."""
    server = TLSServer(ca_dir, "node", "node1", hosts=("node1.lab.example",))
    try:
        cert, key = certs.issue(ca_dir, "service", "cm")
        server.check(ca_dir / "ca.pem", cert, key, server_name="node1.lab.example")
        for name in ("node2.lab.example", None):  # None: 127.0.0.1, not in this cert
            with pytest.raises(grpc.RpcError) as err:
                server.check(ca_dir / "ca.pem", cert, key, server_name=name)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
