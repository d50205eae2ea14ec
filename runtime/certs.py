"""The site CA and the certificates it issues: one per service, per node (host), per user.

A certificate's subject names its principal: CN is the name, OU the kind
(user, node or service).  The TLS handshake proves the peer holds the key;
`identity_of` then reads who it is, so the shared interceptor needs no token.

Keys are made on the machine that runs this and are written 0600 from the
first byte (never world-readable, even briefly); directories we create are
0700.  They leave the machine only if the admin copies them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KINDS = ("user", "node", "service")

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
# Hosts a node or service certificate names when none are given: loopback,
# where every service listens by default.
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
# Tolerates clocks a little behind the issuer's.
CLOCK_SKEW = timedelta(minutes=5)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")
_HOST = re.compile(r"[A-Za-z0-9*._-]{1,253}")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def check_name(name: str) -> str:
    """The name becomes a file name and a CN: no path tricks, nothing a shell would mangle."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
                         "and not contain '..'")
    return name


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST.fullmatch(host) or ".." in host:
        raise ValueError(f"host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host)


def _mkdir(directory: Path) -> None:
    """Create `directory` (and parents) if missing; the leaf we create is 0700."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # in case the umask took owner bits away


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically, the file being `mode` from its creation.

    mkstemp opens with O_EXCL and mode 0600, so a key is never readable by
    others, not even between open and chmod; os.replace then swaps it in,
    so a reader never sees half a file and an older file's looser mode is
    not inherited.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode`; FileExistsError if it is there (O_EXCL: no race)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def create_ca(directory: Path, site: str = "tashi", days: int = 3650) -> Path:
    """Create the site CA in `directory` (ca.pem, ca.key 0600); returns the ca.pem path.

    Never overwrites a CA: every certificate it signed would stop verifying.
    """
    directory = Path(directory).expanduser()
    site = site.strip()
    if not site or len(site) > 64:
        raise ValueError("site must be 1-64 characters")
    if days < 1:
        raise ValueError("days must be at least 1")
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for p in (cert_path, key_path):
        if p.exists():
            raise FileExistsError(f"a CA already exists at {p}; it is never overwritten")
    _mkdir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, site),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{site} CA")])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a ca.pem without its key would look like a CA that cannot sign.
    _write_new(key_path, _key_pem(key), 0o600)
    try:
        _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except BaseException:
        key_path.unlink()
        raise
    return cert_path


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise FileNotFoundError(f"no site CA in {directory} (needs {CA_CERT} and {CA_KEY}); "
                                "create one with `tashi certs init`")
    ca = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an ECDSA key")
    if _spki(key.public_key()) != _spki(ca.public_key()):
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return ca, key


def issue(directory: Path, kind: str, name: str, hosts: Sequence[str] = (), days: int = 825,
          out: Path | None = None, key_encipherment: bool | None = None) -> tuple[Path, Path]:
    """Issue a certificate for principal `name` of `kind`, signed by the CA in `directory`.

    Writes (out or directory/<kind>s)/<name>.pem and <name>.key (0600),
    replacing an earlier pair for the same name (renewal); returns their paths.

    `key_encipherment` sets that keyUsage bit too, meaningless for an EC key but
    demanded by libvirt (9.0 here) and QEMU (before 10.0.7) of every certificate
    whose keyUsage is critical: libvirtd's and QEMU's TLS certificates need it.
    By default node certificates have it (a host's certificate is also its
    libvirtd's and QEMU's for migration), others not.
    """
    if key_encipherment is None:
        key_encipherment = kind == "node"
    check_kind(kind)
    check_name(name)
    if days < 1:
        raise ValueError("days must be at least 1")
    if isinstance(hosts, str):
        hosts = [hosts]
    if kind == "user" and hosts:
        raise ValueError("a user certificate names no hosts")
    directory = Path(directory).expanduser()
    ca, ca_key = _load_ca(directory)

    if kind == "user":
        sans: list[x509.GeneralName] = []
    elif hosts:
        sans = [_general_name(h) for h in hosts]
    else:
        defaults = list(DEFAULT_HOSTS) + ([name] if kind == "node" else [])
        sans = [_general_name(h) for h in defaults]
    sans = list(dict.fromkeys(sans))  # keep order, drop repeats

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    # A leaf outliving its CA would fail verification anyway; say so in the cert.
    not_after = min(now + timedelta(days=days), ca.not_valid_after_utc)
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind != "user":
        eku.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    subject = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
               x509.NameAttribute(NameOID.COMMON_NAME, name)]
    site = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if site:
        subject.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(site[0].value)))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # No keyEncipherment: an EC key signs (ECDHE), it never decrypts (RFC 5480);
        # unless asked, for libvirt and QEMU, which refuse a certificate without it.
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=key_encipherment,
                                     data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())

    folder = Path(out).expanduser() if out is not None else directory / f"{kind}s"
    _mkdir(folder)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


@functools.lru_cache(maxsize=4096)
def identity_of(cert_pem: bytes) -> tuple[str, str]:
    """(kind, name) from a certificate's OU and CN; cached, since servers ask on every RPC.

    It reads, it does not verify: call it only on a certificate the TLS
    handshake has already checked against the site CA.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    kinds = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(kinds) != 1 or len(names) != 1:
        raise ValueError("certificate subject must hold exactly one OU (kind) and one CN (name)")
    kind, name = str(kinds[0].value), str(names[0].value)
    if kind not in KINDS:
        raise ValueError(f"certificate OU {kind!r} is not one of {', '.join(KINDS)}")
    if not name:
        raise ValueError("certificate CN is empty")
    return kind, name
