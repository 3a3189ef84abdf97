"""NATS servers with TLS and authentication for integration tests, and the credentials to
reach them: nkey users, and decentralised (operator/account/user JWT) creds files built here
with the ``nkeys`` package, the way ``nsc`` would (JWT v2: ``ed25519-nkey`` signatures).

``SecureNats(workdir, block)`` runs one nats-server (JetStream on) with ``block`` — the TLS and
authorization part of its config — on a free port; ``url``/``tls_url`` reach it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import nkeys

from tests.support.nats import nats_server_binary
from tests.support.procs import ManagedProcess, free_port, wait_for_port

READY_TIMEOUT_S = 20.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class NKey:
    seed: bytes
    public: str

    @classmethod
    def create(cls, prefix: int) -> NKey:
        """A fresh key pair (``prefix``: ``nkeys.PREFIX_BYTE_OPERATOR/ACCOUNT/USER``)."""
        import nacl.signing

        raw = bytes(nacl.signing.SigningKey.generate())
        seed = nkeys.encode_seed(raw, prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))


def _jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    body = json.dumps(claims, separators=(",", ":")).encode()
    claims["jti"] = base64.b32encode(hashlib.new("sha512_256", body).digest()).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{_b64(issuer.sign(signing_input))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
              "wildcards": True, "conn": -1, "leaf": -1,
              "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Operator:
    """An operator with one account (JetStream on); issues users' creds files."""

    key: NKey
    account: NKey
    system: NKey
    jwt: str
    account_jwt: str
    system_jwt: str

    @classmethod
    def create(cls) -> Operator:
        op = NKey.create(nkeys.PREFIX_BYTE_OPERATOR)
        account = NKey.create(nkeys.PREFIX_BYTE_ACCOUNT)
        system = NKey.create(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account
        return cls(op, account, system,
                   _jwt(op, op.public, "test-operator",
                        {"type": "operator", "system_account": system.public}),
                   _jwt(op, account.public, "EVENTLOG",
                        {"type": "account", "limits": _UNLIMITED}),
                   _jwt(op, system.public, "SYS", {"type": "account"}))

    def server_block(self, folder: Path) -> str:
        (folder / "operator.jwt").write_text(self.jwt)
        return (f'operator: "{folder / "operator.jwt"}"\nresolver: MEMORY\n'
                f"system_account: {self.system.public}\n"
                f'resolver_preload: {{ {self.account.public}: "{self.account_jwt}", '
                f'{self.system.public}: "{self.system_jwt}" }}\n')

    def creds(self, path: Path, name: str = "eventlog", *, signer: NKey | None = None) -> Path:
        """A creds file for a new user of the account (signed by ``signer``: a stranger's key
        makes creds the server refuses)."""
        user = NKey.create(nkeys.PREFIX_BYTE_USER)
        jwt = _jwt(signer or self.account, user.public, name,
                   {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1,
                    "payload": -1})
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n")
        path.chmod(0o600)
        return path


class SecureNats:
    """One nats-server with JetStream and ``block`` (TLS/authorization config) on a free port."""

    def __init__(self, workdir: Path, block: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "nats.conf"
        config.write_text(f"listen: 127.0.0.1:{self.port}\n"
                          f'jetstream {{ store_dir: "{workdir / "store"}" }}\n{block}\n')
        self.process = ManagedProcess([nats_server_binary(), "-c", str(config)],
                                      workdir / "nats.log")
        try:
            wait_for_port(self.port, timeout_s=READY_TIMEOUT_S, proc=self.process.proc)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.process.output()

    def close(self) -> None:
        self.process.close()

    def __enter__(self) -> SecureNats:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
