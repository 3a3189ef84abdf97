"""How the JetStream store proves who it is to NATS: TLS (CA, client certificate) and one
credential (creds file, nkey seed file, user/password or token).

Why a module of its own: production NATS always runs TLS and authenticates, and every secret
must come from a file or an environment variable and never reach a log line or an error. This
module is the one place that reads secrets; everything else sees a ``NatsAuth`` whose ``repr``
and ``describe()`` name only *which* credential (and its file), never its value.

Blocking: ``NatsAuth.load`` reads files (call at startup). ``connect_options`` builds the
``ssl.SSLContext`` (reads the PEM files). ``explain`` is pure.

Example::

    auth = NatsAuth.load(ca_file=Path("/etc/nats/ca.pem"), creds_file=Path("/etc/nats/el.creds"))
    await nc.connect(servers=["tls://nats:4222"], **auth.connect_options(tls_scheme=True))
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _secret(what: str, file: Path | None, env: str | None) -> str | None:
    """The secret from ``file`` (stripped) or environment variable ``env``; ``ValueError``
    naming the flag, file or variable, never the value."""
    if file is not None and env is not None:
        raise ValueError(f"nats {what}: give --nats-{what}-file or --nats-{what}-env, not both")
    if file is not None:
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"nats {what}: {file}: {exc.strerror or exc}") from None
        if not value:
            raise ValueError(f"nats {what}: {file} is empty")
        return value
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ValueError(f"nats {what}: environment variable {env} is unset or empty")
        return value
    return None


def _readable(what: str, path: Path | None) -> None:
    if path is not None and not os.access(path, os.R_OK):
        raise ValueError(f"nats {what}: {path}: cannot read the file")


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """TLS files and at most one credential for the NATS connection. Secrets are ``repr=False``.

    ``ca_file``: the CA that signed the servers' certificates (absent: the system roots).
    ``cert_file`` + ``key_file``: a client certificate (servers with ``verify: true``).
    ``creds_file``: a decentralised-auth user (JWT + nkey seed); ``nkey_seed_file``: an nkey
    user; ``user`` + ``password``; or ``token``. Files are handed to nats-py, which reads them.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    creds_file: Path | None = None
    nkey_seed_file: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    password_source: str = ""
    token: str | None = field(default=None, repr=False)
    token_source: str = ""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("nats tls: --nats-cert and --nats-key go together")
        if (self.user is None) != (self.password is None):
            raise ValueError("nats user: --nats-user needs --nats-password-file or -env")
        kinds = [name for name, value in (
            ("--nats-creds", self.creds_file), ("--nats-nkey-seed", self.nkey_seed_file),
            ("--nats-user", self.user), ("--nats-token-*", self.token)) if value is not None]
        if len(kinds) > 1:
            raise ValueError(f"nats auth: give one credential, not {' and '.join(kinds)}")
        for what, path in (("ca", self.ca_file), ("cert", self.cert_file),
                           ("key", self.key_file), ("creds", self.creds_file),
                           ("nkey seed", self.nkey_seed_file)):
            _readable(what, path)

    @classmethod
    def load(cls, *, ca_file: Path | None = None, cert_file: Path | None = None,
             key_file: Path | None = None, creds_file: Path | None = None,
             nkey_seed_file: Path | None = None, user: str | None = None,
             password_file: Path | None = None, password_env: str | None = None,
             token_file: Path | None = None, token_env: str | None = None) -> NatsAuth:
        """Read the password or token from its file or variable; ``ValueError`` names the
        problem (flag, file or variable), never a secret."""
        return cls(
            ca_file=ca_file, cert_file=cert_file, key_file=key_file, creds_file=creds_file,
            nkey_seed_file=nkey_seed_file, user=user,
            password=_secret("password", password_file, password_env),
            password_source=str(password_file or f"${password_env}" if (
                password_file or password_env) else ""),
            token=_secret("token", token_file, token_env),
            token_source=str(token_file or f"${token_env}" if (token_file or token_env) else ""),
        )

    @property
    def wants_tls(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None

    def describe(self) -> str:
        """Which credential, for messages: ``creds /etc/x.creds``, ``user el``... (no secret)."""
        if self.creds_file is not None:
            return f"creds {self.creds_file}"
        if self.nkey_seed_file is not None:
            return f"nkey seed {self.nkey_seed_file}"
        if self.user is not None:
            return f"user {self.user}, password from {self.password_source}"
        if self.token is not None:
            return f"token from {self.token_source}"
        return "no credentials"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting ``ca_file`` (or the system roots), with the client
        certificate when given; ``ValueError`` naming the file that does not load."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"nats tls: CA {self.ca_file}: {exc}") from None
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"nats tls: client certificate {self.cert_file} / {self.key_file}: {exc}"
                ) from None
        return context

    def connect_options(self, *, tls_scheme: bool) -> dict[str, Any]:
        """Keyword arguments for ``nats.aio.client.Client.connect``."""
        options: dict[str, Any] = {}
        if tls_scheme or self.wants_tls:
            options["tls"] = self.ssl_context()
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        if self.nkey_seed_file is not None:
            options["nkeys_seed"] = str(self.nkey_seed_file)
        if self.user is not None:
            options["user"], options["password"] = self.user, self.password
        if self.token is not None:
            options["token"] = self.token
        return options

    def explain(self, exc: BaseException) -> str | None:
        """One line naming a TLS, authorization or permissions failure, or ``None`` when
        ``exc`` is none of them (a network problem: worth retrying until the deadline)."""
        text = str(exc)
        lower = text.lower()
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or "certificate verify failed"
            ca = str(self.ca_file) if self.ca_file is not None else "system roots"
            return f"NATS TLS: certificate verify failed: {reason} (CA {ca})"
        if isinstance(exc, ssl.SSLError):
            return f"NATS TLS: {exc.reason or exc} ({self._tls_files()})"
        if ("authorization violation" in lower or "authentication" in lower
                or type(exc).__name__ == "AuthorizationError"):
            return f"NATS authorization violation ({self.describe()})"
        if "permissions violation" in lower:
            detail = text.partition("nats: ")[2] or text
            return f"NATS permissions violation: {detail.strip()} ({self.describe()})"
        if "tls" in lower and ("required" in lower or "no tls" in lower):
            return f"NATS TLS: {text} (use tls:// or --nats-ca)"
        return None

    def _tls_files(self) -> str:
        parts = [f"CA {self.ca_file}" if self.ca_file else "CA system roots"]
        if self.cert_file is not None:
            parts.append(f"client cert {self.cert_file}")
        return ", ".join(parts)


def add_arguments(parser: Any) -> None:
    """The ``--nats-*`` flags of ``sidecar eventlog serve`` (an ``argparse`` parser)."""
    group = parser.add_argument_group("NATS TLS and credentials (nats:// and tls:// stores)")
    group.add_argument("--nats-ca", type=Path, default=None, metavar="FILE",
                       help="CA of the NATS servers (PEM; default: system roots)")
    group.add_argument("--nats-cert", type=Path, default=None, metavar="FILE",
                       help="client certificate for NATS (PEM)")
    group.add_argument("--nats-key", type=Path, default=None, metavar="FILE",
                       help="private key of --nats-cert (PEM)")
    group.add_argument("--nats-creds", type=Path, default=None, metavar="FILE",
                       help="creds file (user JWT + nkey seed)")
    group.add_argument("--nats-nkey-seed", type=Path, default=None, metavar="FILE",
                       help="nkey seed file (an nkey user)")
    group.add_argument("--nats-user", default=None, metavar="NAME")
    group.add_argument("--nats-password-file", type=Path, default=None, metavar="FILE")
    group.add_argument("--nats-password-env", default=None, metavar="VAR")
    group.add_argument("--nats-token-file", type=Path, default=None, metavar="FILE")
    group.add_argument("--nats-token-env", default=None, metavar="VAR")


def from_arguments(args: Any) -> NatsAuth:
    """The ``NatsAuth`` the ``--nats-*`` flags ask for; ``ValueError`` naming the problem."""
    return NatsAuth.load(
        ca_file=args.nats_ca, cert_file=args.nats_cert, key_file=args.nats_key,
        creds_file=args.nats_creds, nkey_seed_file=args.nats_nkey_seed, user=args.nats_user,
        password_file=args.nats_password_file, password_env=args.nats_password_env,
        token_file=args.nats_token_file, token_env=args.nats_token_env,
    )


class _DropSslEofWarning(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when using ssl" each
    time nats-py's protocol meets a TLS close; harmless, and noise in a one-line refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


_SSL_EOF_FILTER = _DropSslEofWarning()


def quiet_ssl_eof_warning() -> None:
    """Drop asyncio's TLS ``eof_received`` warning (idempotent)."""
    logging.getLogger("asyncio").addFilter(_SSL_EOF_FILTER)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` (or ``token@``) of its servers masked, for logs."""
    return re.sub(r"(?<=[/,])[^/,@\s]+@", "***@", url)
