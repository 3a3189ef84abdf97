"""TLS for the sidecar's servers and for its event log client, from PEM files named in the config.

- :func:`server_credentials`: a listener's certificate and key; with a client CA, clients must
  present a certificate signed by it (mTLS) or the handshake fails.
- :func:`channel_credentials`: the CA that signed the server, and optionally a client
  certificate and key for mTLS.
- :func:`is_loopback`: whether a listen host stays on this machine (``127.0.0.0/8``, ``::1``,
  ``localhost``). The admin API may listen beyond it only with TLS (``sidecar.config``).

Files are read when credentials are built (at start), never later; a file that cannot be read
raises :class:`TlsFileError` naming the config key and the path, never the file's content.

Example::

    creds = server_credentials("/etc/sidecar/tls.pem", "/etc/sidecar/tls.key",
                               client_ca_file="/etc/sidecar/clients-ca.pem", key="listen_tls")
    server.add_secure_port("0.0.0.0:15001", creds)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Final

__all__ = ["LOOPBACK_NAMES", "TlsFileError", "channel_credentials", "is_loopback",
           "read_pem", "server_credentials"]

LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
"""Host names that always mean this machine."""


class TlsFileError(ValueError):
    """A certificate or key file could not be read. ``str()`` names the key and the path."""


def read_pem(path: str | Path, key: str) -> bytes:
    """The bytes of a PEM file (blocking read); :class:`TlsFileError` naming ``key`` (when
    given) and the path if it cannot be read or holds no PEM block."""
    file = Path(path)
    prefix = f"{key}: " if key else ""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{prefix}cannot read {str(file)!r}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise TlsFileError(f"{prefix}{str(file)!r} holds no PEM data")
    return data


def is_loopback(host: str) -> bool:
    """True when ``host`` (from ``HOST:PORT``; brackets allowed) is a loopback address or name.
    ``0.0.0.0``, ``::``, an empty host and any other name are not."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_credentials(cert_file: str | Path, key_file: str | Path,
                       client_ca_file: str | Path | None = None, *, key: str) -> Any:
    """``grpc.ServerCredentials`` for a listener; ``client_ca_file`` turns on mTLS.
    ``key`` is the config key named in errors (``listen_tls``, ``admin_tls``)."""
    import grpc

    cert = read_pem(cert_file, f"{key}.cert_file")
    private_key = read_pem(key_file, f"{key}.key_file")
    client_ca = (read_pem(client_ca_file, f"{key}.client_ca_file")
                 if client_ca_file is not None else None)
    return grpc.ssl_server_credentials([(private_key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def channel_credentials(ca_file: str | Path | None, cert_file: str | Path | None = None,
                        key_file: str | Path | None = None, *, key: str) -> Any:
    """``grpc.ChannelCredentials``: trust ``ca_file`` (None: the system roots) and present
    ``cert_file``/``key_file`` when given (mTLS)."""
    import grpc

    if (cert_file is None) != (key_file is None):
        raise TlsFileError(f"{key}: cert_file and key_file go together")
    ca = read_pem(ca_file, f"{key}.ca_file") if ca_file is not None else None
    cert = read_pem(cert_file, f"{key}.cert_file") if cert_file is not None else None
    private_key = read_pem(key_file, f"{key}.key_file") if key_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=private_key,
                                        certificate_chain=cert)
