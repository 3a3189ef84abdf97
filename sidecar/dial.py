"""Dialling the sidecar's own servers from the command line: plain, TLS or mTLS.

``sidecar breakers`` and ``sidecar health`` share these options, so both reach an admin API
served with ``admin_tls`` (required when ``admin_listen`` is beyond loopback):

- ``--tls-ca FILE``: the CA that signed the server's certificate (PEM). Any ``--tls-*`` option
  turns TLS on; without ``--tls-ca`` the system's roots are trusted.
- ``--tls-cert FILE --tls-key FILE``: a client certificate, for a server that requires one
  (``admin_tls.client_ca_file``).
- ``--tls-server-name NAME``: the name to check in the server's certificate instead of the
  dialled host (e.g. dialling 127.0.0.1 a server whose certificate names ``sidecar.internal``).
- ``--config FILE``: take the address from the sidecar config's ``admin_listen`` (a wildcard
  host is dialled on loopback) and turn TLS on when it sets ``admin_tls``. The config holds the
  *server's* files only: the CA to trust and a client certificate still come from the options.

Files are read (blocking) when the channel is built; a missing or non-PEM file raises
:class:`~sidecar.tls.TlsFileError` naming the option, never the file's content.

Example::

    parser = argparse.ArgumentParser()
    add_tls_arguments(parser)
    args = parser.parse_args(["--tls-ca", "ca.pem"])
    with open_channel("127.0.0.1:15000", ClientTls.from_args(args)) as channel:
        ...
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sidecar.tls import TlsFileError, channel_credentials

if TYPE_CHECKING:
    from sidecar.config import SidecarConfig

__all__ = ["WILDCARD_DIAL_HOSTS", "ClientTls", "add_tls_arguments", "dial_address",
           "open_channel", "resolve_admin"]

WILDCARD_DIAL_HOSTS: Final = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]",
                              "::": "[::1]"}
"""Listen hosts that mean "every interface", and the loopback address to dial them on."""


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS settings of a CLI client (see the module docstring)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientTls | None:
        """The ``--tls-*`` options, or None when none was given (plaintext)."""
        if (args.tls_ca is None and args.tls_cert is None and args.tls_key is None
                and args.tls_server_name is None):
            return None
        if (args.tls_cert is None) != (args.tls_key is None):
            raise TlsFileError("--tls-cert and --tls-key go together")
        return cls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)

    def credentials(self) -> Any:
        """``grpc.ChannelCredentials`` (reads the files now)."""
        return channel_credentials(self.ca_file, self.cert_file, self.key_file, key="--tls")


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-server-name``."""
    group = parser.add_argument_group("TLS (any of these turns TLS on)")
    group.add_argument("--tls-ca", type=Path, default=None, metavar="FILE",
                       help="CA of the server's certificate (PEM; default: the system's roots)")
    group.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                       help="client certificate (PEM), when the server requires one (mTLS)")
    group.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                       help="client private key (PEM), with --tls-cert")
    group.add_argument("--tls-server-name", default=None, metavar="NAME",
                       help="name to verify in the server's certificate instead of the host")


def dial_address(listen: str) -> str:
    """Where a client on this host reaches a server listening on ``listen`` (``HOST:PORT``):
    the same address, or loopback for a wildcard host (``0.0.0.0``, ``[::]``)."""
    host, _, port = listen.rpartition(":")
    return f"{WILDCARD_DIAL_HOSTS.get(host, host)}:{port}"


def resolve_admin(config: SidecarConfig, tls: ClientTls | None) -> tuple[str, ClientTls | None]:
    """The admin address and TLS settings for a sidecar running ``config``: TLS is on when the
    config sets ``admin_tls``; ``TlsFileError`` when that requires a client certificate and
    ``tls`` has none."""
    address = dial_address(config.admin_listen)
    if config.admin_tls is None:
        return address, tls
    tls = tls or ClientTls()
    if config.admin_tls.client_ca_file is not None and tls.cert_file is None:
        raise TlsFileError(
            "admin_tls.client_ca_file is set, so the admin API requires a client certificate: "
            "pass --tls-cert and --tls-key (and --tls-ca for its CA)")
    return address, tls


def open_channel(address: str, tls: ClientTls | None) -> Any:
    """A blocking ``grpc.Channel`` to ``address`` (plaintext when ``tls`` is None). Use it as a
    context manager, or close it."""
    import grpc

    if tls is None:
        return grpc.insecure_channel(address)
    options = (() if tls.server_name is None
               else (("grpc.ssl_target_name_override", tls.server_name),))
    return grpc.secure_channel(address, tls.credentials(), options=options)
