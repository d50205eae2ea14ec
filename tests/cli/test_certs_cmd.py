"""`tashi certs init` and `tashi certs issue`: local files, no cluster manager."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from tashi.cli.main import main
from tashi.runtime import certs


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing listens here: a certs command that dialled the CM would fail.
    monkeypatch.setenv("TASHI_CM", "127.0.0.1:1")
    monkeypatch.delenv("TASHI_CERTS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_init_then_issue(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "ca"
    code, out, err = run(capsys, "certs", "init", "--dir", str(d), "--site", "lab")
    assert code == 0, err
    assert str(d / "ca.pem") in out and str(d / "ca.key") in out
    assert mode(d) == 0o700 and mode(d / "ca.key") == 0o600

    code, out, err = run(capsys, "certs", "issue", "--dir", str(d), "--kind", "node",
                         "--name", "node1", "--host", "node1.lab.example", "--host", "10.0.0.5",
                         "--days", "10")
    assert code == 0, err
    cert, key = d / "nodes" / "node1.pem", d / "nodes" / "node1.key"
    assert str(cert) in out and str(key) in out
    assert mode(d / "nodes") == 0o700 and mode(key) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    parsed.verify_directly_issued_by(x509.load_pem_x509_certificate((d / "ca.pem").read_bytes()))
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1.lab.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert certs.identity_of(cert.read_bytes()) == ("node", "node1")
    assert err == ""  # only a user is told where to put the files


def test_user_is_told_where_the_files_go(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    d, out_dir = tmp_path / "ca", tmp_path / "for-alice"
    assert run(capsys, "certs", "init", "--dir", str(d))[0] == 0
    code, out, err = run(capsys, "-o", "json", "certs", "issue", "--dir", str(d),
                         "--kind", "user", "--name", "alice", "--out", str(out_dir))
    assert code == 0, err
    rows = {r["file"]: r["path"] for r in json.loads(out)}
    assert rows == {"cert": str(out_dir / "alice.pem"), "key": str(out_dir / "alice.key"),
                    "ca_cert": str(d / "ca.pem")}
    assert mode(out_dir) == 0o700 and mode(out_dir / "alice.key") == 0o600
    for name in ("cert.pem", "key.pem", "ca.pem"):
        assert f"~/.config/tashi/{name}" in err


def test_dir_from_environment_then_home(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(capsys, "certs", "init")[0] == 0
    assert (tmp_path / "home" / ".config" / "tashi" / "ca" / "ca.key").is_file()
    monkeypatch.setenv("TASHI_CERTS_DIR", str(tmp_path / "env-ca"))
    assert run(capsys, "certs", "init")[0] == 0
    assert run(capsys, "certs", "issue", "--kind", "service", "--name", "cm")[0] == 0
    assert (tmp_path / "env-ca" / "services" / "cm.key").is_file()


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "ca"
    code, out, err = run(capsys, "certs", "issue", "--dir", str(d), "--kind", "user",
                         "--name", "alice")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no site CA" in err and "certs init" in err
    assert not d.exists()

    assert run(capsys, "certs", "init", "--dir", str(d))[0] == 0
    before = (d / "ca.key").read_bytes()
    code, _, err = run(capsys, "certs", "init", "--dir", str(d))
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    assert (d / "ca.key").read_bytes() == before

    for name in ("../x", "a/b", "x" * 64):
        code, _, err = run(capsys, "certs", "issue", "--dir", str(d), "--kind", "user",
                           "--name", name)
        assert code == 2 and err.count("\n") == 1 and "name" in err, name
    assert not (d / "users").exists() and not (tmp_path / "x.pem").exists()

    code, _, err = run(capsys, "certs", "issue", "--dir", str(d), "--kind", "admin",
                       "--name", "root")
    assert code == 2 and "invalid choice" in err  # argparse's own refusal
