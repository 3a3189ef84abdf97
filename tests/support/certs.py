"""Test certificates: a throwaway CA, and server and client certificates it signed, as PEM files.

Made with the ``cryptography`` package (EC P-256, valid for one day). Server certificates carry
``localhost`` and ``127.0.0.1`` as subject alternative names, so clients can dial
``127.0.0.1:PORT`` and verify the name; client certificates carry the clientAuth usage for
mTLS. A second, unrelated CA (``Pki(...)`` again) makes certificates that must be refused.

Example::

    pki = Pki(tmp_path / "pki")
    server = pki.issue("server")            # Issued(cert=..., key=...) paths
    client = pki.issue("client", client=True)
    # server side: cert_file=server.cert, key_file=server.key, client_ca_file=pki.ca_cert
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "Pki"]

VALID_FOR = datetime.timedelta(days=1)
SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """Paths of one certificate and its private key (PEM)."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """(certificate, key) bytes."""
        return self.cert.read_bytes(), self.key.read_bytes()


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class Pki:
    """A CA in ``folder`` (``ca.pem``, ``ca.key``) that issues certificates into it."""

    def __init__(self, folder: Path, name: str = "Evergreen Sidecar test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_cert = folder / "ca.pem"
        self.ca_cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self._key, folder / "ca.key")

    def issue(self, name: str, *, client: bool = False) -> Issued:
        """A certificate for ``name`` signed by this CA: a server certificate (SANs localhost,
        127.0.0.1, ::1), or with ``client=True`` a client certificate for mTLS."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in SERVER_NAMES]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]),
                critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued
