"""A local certificate authority for https://localhost in development.

Usage::

    uv run --extra ops python -m tools.localca [--dir deploy/certs] [--force] [--quiet]

On the first run it creates, in ``deploy/certs/``:

* ``ca.crt`` / ``ca.key``: a CA ("wwws local development CA") valid for 10 years. Its name
  constraints only allow ``localhost`` (and ``*.localhost``), 127.0.0.0/8 and ::1, so trusting
  it cannot be used to impersonate any other site.
* ``server.crt`` / ``server.key``: a server certificate for localhost, 127.0.0.1 and ::1
  signed by that CA (Traefik serves it as its default certificate).

Later runs keep the CA and only re-issue the server certificate when it is missing, expires
within 30 days, lacks one of the names, or was not signed by the current CA. ``--force``
re-issues the server certificate (never the CA; delete ``ca.*`` to start over).

``ca.key`` is mode 0600. ``server.key`` is mode 0644 on purpose: Traefik runs as a non-root
user and reads it through a read-only bind mount; it only ever secures localhost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "deploy" / "certs"
DNS_NAMES: tuple[str, ...] = ("localhost",)
IP_ADDRESSES: tuple[str, ...] = ("127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 397  # within the 398-day limit that browsers apply to server certificates
RENEW_BEFORE = dt.timedelta(days=30)
CA_NAME = "wwws local development CA"

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"


@dataclass(frozen=True)
class Result:
    """What :func:`ensure` did."""

    directory: Path
    ca_created: bool
    server_issued: bool
    reason: str
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the given mode (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def _expected_sans() -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in IP_ADDRESSES]
    return names


def _create_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wwws"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    permitted += [
        x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _key_pem(key), 0o600)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _issue_server(
    directory: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wwws"),
                    x509.NameAttribute(NameOID.COMMON_NAME, DNS_NAMES[0]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_expected_sans()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / SERVER_KEY, _key_pem(key), 0o644)
    _write(directory / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert


def _server_problem(directory: Path, ca_cert: x509.Certificate) -> str | None:
    """Why the server certificate must be (re)issued, or None when it is fine."""
    cert_path, key_path = directory / SERVER_CERT, directory / SERVER_KEY
    if not cert_path.exists() or not key_path.exists():
        return "missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = _load_key(key_path)
    except ValueError as exc:
        return f"unreadable ({exc})"
    if cert.issuer != ca_cert.subject:
        return "issued by another CA"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError) as exc:
        return f"not signed by the current CA ({exc})"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return "key does not match the certificate"
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subjectAltName"
    missing = [n for n in _expected_sans() if n not in sans]
    if missing:
        return f"lacks {', '.join(str(n.value) for n in missing)}"
    return None


def ensure(directory: Path = DEFAULT_DIR, *, force: bool = False) -> Result:
    """Create the CA if needed and make sure a valid server certificate exists."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_created = False
    ca_cert_path, ca_key_path = directory / CA_CERT, directory / CA_KEY
    if ca_cert_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = _load_key(ca_key_path)
        if ca_cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            raise SystemExit(
                f"{ca_cert_path} expires {ca_cert.not_valid_after_utc:%Y-%m-%d}: delete "
                f"{directory}/ca.* and run again (then trust the new CA)"
            )
    else:
        ca_cert, ca_key = _create_ca(directory)
        ca_created = True
    problem = "requested (--force)" if force else _server_problem(directory, ca_cert)
    if ca_created:
        problem = "new CA"
    if problem is not None:
        server = _issue_server(directory, ca_cert, ca_key)
        return Result(directory, ca_created, True, problem, server.not_valid_after_utc)
    server = x509.load_pem_x509_certificate((directory / SERVER_CERT).read_bytes())
    return Result(directory, ca_created, False, "valid", server.not_valid_after_utc)


def trust_instructions(directory: Path) -> str:
    ca = directory / CA_CERT
    return f"""\
Trust the local CA ({ca}) to get https://localhost without warnings:
  curl:      curl --cacert {ca} https://localhost/
  Python:    SSL_CERT_FILE={ca} python ...   (or ssl.create_default_context(cafile=...))
  Debian/Ubuntu system store (curl, wget, most CLIs):
             sudo cp {ca} /usr/local/share/ca-certificates/wwws-local-ca.crt \\
               && sudo update-ca-certificates
  Chromium/Chrome (Linux, NSS db; package libnss3-tools):
             certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "wwws local CA" -i {ca}
  Firefox:   certutil -d sql:$HOME/.mozilla/firefox/<profile> -A -t "C,," \\
               -n "wwws local CA" -i {ca}
             (or Settings > Privacy & Security > Certificates > Import)
  macOS:     sudo security add-trusted-cert -d -r trustRoot \\
               -k /Library/Keychains/System.keychain {ca}
The CA is name-constrained to localhost, 127.0.0.0/8 and ::1: it cannot vouch for other sites.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.localca",
        description="Create a local CA and a localhost server certificate for Traefik.",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output directory")
    parser.add_argument("--force", action="store_true", help="re-issue the server certificate")
    parser.add_argument("--quiet", action="store_true", help="do not print trust instructions")
    args = parser.parse_args(argv)
    directory: Path = args.dir
    result = ensure(directory, force=args.force)
    if result.ca_created:
        print(f"[certs] created CA {directory / CA_CERT}")
    else:
        print(f"[certs] CA {directory / CA_CERT}: kept")
    if result.server_issued:
        print(
            f"[certs] issued {directory / SERVER_CERT} for {', '.join(DNS_NAMES + IP_ADDRESSES)}"
            f" ({result.reason}), valid until {result.not_after:%Y-%m-%d}"
        )
    else:
        print(f"[certs] {directory / SERVER_CERT}: valid until {result.not_after:%Y-%m-%d}")
    if not args.quiet:
        print(trust_instructions(directory), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
