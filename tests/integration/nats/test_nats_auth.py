"""``sidecar eventlog serve --store nats://|tls://`` against real nats-servers that require TLS
(with client certificates) and each kind of credential: accepted ones append and read back;
a wrong CA, wrong credentials or a missing permission end startup with one line naming which,
and no secret ever reaches the output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nkeys
import pytest

from sidecar.v1 import eventlog_pb2
from tests.integration.eventlog._server import EventLogProcess
from tests.support.certs import Pki
from tests.support.events import StreamFactory
from tests.support.nats_auth import NKey, Operator, SecureNats
from tests.support.procs import SIDECAR_BIN, free_port

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-pass-word-7f3a"
TOKEN = "tok-9b1c-never-printed"
STARTUP_TIMEOUT_S = 60.0
# The least a user needs, as docs/nats.md ("NATS over TLS, with credentials") documents it.
SCOPED = ('{ publish: { allow: ["$JS.API.>", "$JS.FC.>", "EVENTLOG.>", '
          '"$KV.EVENTLOG_CHECKPOINTS.>"] }, subscribe: { allow: ["_INBOX.>", "EVENTLOG.head"] } }')


class NatsEventLog(EventLogProcess):
    """``EventLogProcess`` on a NATS store URL instead of its sqlite file."""

    def __init__(self, workdir: Path, store_url: str, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self._nats_url = store_url
        super().__init__(workdir, *extra, env=env)

    def args(self) -> list[str]:
        args = super().args()
        args[args.index("--store") + 1] = self._nats_url
        return args


def _round_trip(workdir: Path, store_url: str, *flags: str,
                env: dict[str, str] | None = None) -> str:
    """Serve on ``store_url``, append three events, read them back, subscribe and get three
    more live (the ordered consumer's subjects too); the server's output."""
    workdir.mkdir(parents=True, exist_ok=True)
    with NatsEventLog(workdir, store_url, *flags, env=env) as server:
        events = StreamFactory("auth", workdir.name).transitions(6)
        reply = server.append(events[:3])
        assert [r.version for r in reply.results] == [1, 2, 3]
        page = server.stub.ReadStream(
            eventlog_pb2.ReadStreamRequest(stream=f"auth/{workdir.name}", from_version=1),
            timeout=10.0)
        assert [e.event_id for e in page.events] == [e.event_id for e in events[:3]]
        received: list[str] = []
        mine = {e.event_id for e in events}  # the module's server holds other tests' too
        stream = server.stub.Subscribe(eventlog_pb2.SubscribeRequest(from_position=1),
                                       timeout=30.0)
        for message in stream:
            if message.WhichOneof("message") == "event" and message.event.event_id in mine:
                received.append(message.event.event_id)
                if len(received) == 3:
                    server.append(events[3:])
                if len(received) == 6:
                    break
        stream.cancel()
        assert received == [e.event_id for e in events]
        return server.output()


def _refused(store_url: str, *flags: str, env: dict[str, str] | None = None) -> str:
    """Run serve, expect it to exit non-zero; its whole output (stdout + stderr)."""
    import os

    result = subprocess.run(
        [SIDECAR_BIN, "eventlog", "serve", "--store", f"{store_url}?connect_timeout_s=3",
         "--listen", f"127.0.0.1:{free_port()}", *flags],
        capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
        env={**os.environ, **(env or {})})
    assert result.returncode != 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def _no_secret(output: str) -> None:
    assert PASSWORD not in output and TOKEN not in output
    assert "SUA" not in output and "eyJ" not in output  # nkey seeds, JWTs


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> SecureNats:
    """TLS with required client certificates, and user/password (one user may not use
    JetStream: the missing permission)."""
    server = pki.issue("nats-server")
    block = (f'tls {{ cert_file: "{server.cert}", key_file: "{server.key}", '
             f'ca_file: "{pki.ca_cert}", verify: true }}\n'
             f'authorization {{ users: [ {{ user: el, password: "{PASSWORD}" }}, '
             f'{{ user: nojs, password: "{PASSWORD}", '
             'permissions: { publish: { deny: ["$JS.API.>"] } } }, '
             f'{{ user: scoped, password: "{PASSWORD}", permissions: {SCOPED} }} ] }}\n')
    with SecureNats(tmp_path_factory.mktemp("nats-tls"), block) as nats:
        yield nats  # type: ignore[misc]


def _tls_flags(pki: Pki, client: Path, key: Path) -> list[str]:
    return ["--nats-ca", str(pki.ca_cert), "--nats-cert", str(client), "--nats-key", str(key)]


def test_tls_with_a_client_certificate_and_a_password_appends_and_reads(
        tmp_path: Path, pki: Pki, tls_nats: SecureNats) -> None:
    client = pki.issue("eventlog-client", client=True)
    output = _round_trip(tmp_path / "tls", tls_nats.tls_url,
                         *_tls_flags(pki, client.cert, client.key),
                         "--nats-user", "el", "--nats-password-env", "EL_NATS_PASSWORD",
                         env={"EL_NATS_PASSWORD": PASSWORD})
    _no_secret(output)


def test_the_documented_least_permissions_are_enough(
        tmp_path: Path, pki: Pki, tls_nats: SecureNats) -> None:
    client = pki.issue("eventlog-client-5", client=True)
    _round_trip(tmp_path / "scoped", tls_nats.tls_url, *_tls_flags(pki, client.cert, client.key),
                "--nats-user", "scoped", "--nats-password-env", "EL_NATS_PASSWORD",
                env={"EL_NATS_PASSWORD": PASSWORD})


def test_a_wrong_ca_is_refused_in_one_line_naming_the_ca(
        tmp_path: Path, pki: Pki, tls_nats: SecureNats) -> None:
    other = Pki(tmp_path / "other", name="some other CA")
    client = pki.issue("eventlog-client-2", client=True)
    stderr = _refused(tls_nats.tls_url, "--nats-ca", str(other.ca_cert),
                      "--nats-cert", str(client.cert), "--nats-key", str(client.key),
                      "--nats-user", "el", "--nats-password-env", "EL_NATS_PASSWORD",
                      env={"EL_NATS_PASSWORD": PASSWORD})
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "NATS TLS: certificate verify failed" in stderr
    assert f"CA {other.ca_cert}" in stderr
    _no_secret(stderr)


def test_a_wrong_password_is_an_authorization_violation_naming_the_user(
        tmp_path: Path, pki: Pki, tls_nats: SecureNats) -> None:
    client = pki.issue("eventlog-client-3", client=True)
    password = tmp_path / "password"
    password.write_text("not-the-password-1234\n")
    stderr = _refused(tls_nats.tls_url, *_tls_flags(pki, client.cert, client.key),
                      "--nats-user", "el", "--nats-password-file", str(password))
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"NATS authorization violation (user el, password from {password})" in stderr
    assert "not-the-password-1234" not in stderr


def test_a_user_without_jetstream_permission_is_a_permissions_violation(
        tmp_path: Path, pki: Pki, tls_nats: SecureNats) -> None:
    client = pki.issue("eventlog-client-4", client=True)
    stderr = _refused(tls_nats.tls_url, *_tls_flags(pki, client.cert, client.key),
                      "--nats-user", "nojs", "--nats-password-env", "EL_NATS_PASSWORD",
                      env={"EL_NATS_PASSWORD": PASSWORD})
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "NATS permissions violation" in stderr and "$js.api" in stderr.lower()
    _no_secret(stderr)


def test_an_nkey_seed_user_is_accepted_and_an_unknown_one_refused(tmp_path: Path) -> None:
    user = NKey.create(nkeys.PREFIX_BYTE_USER)
    stranger = NKey.create(nkeys.PREFIX_BYTE_USER)
    seed, wrong = tmp_path / "user.nk", tmp_path / "stranger.nk"
    seed.write_bytes(user.seed)
    wrong.write_bytes(stranger.seed)
    block = f'authorization {{ users: [ {{ nkey: {user.public} }} ] }}\n'
    with SecureNats(tmp_path / "nats", block) as nats:
        _no_secret(_round_trip(tmp_path / "nkey", nats.url, "--nats-nkey-seed", str(seed)))
        stderr = _refused(nats.url, "--nats-nkey-seed", str(wrong))
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"NATS authorization violation (nkey seed {wrong})" in stderr
    _no_secret(stderr)


def test_a_token_from_a_file_is_accepted_and_a_wrong_one_refused(tmp_path: Path) -> None:
    token, wrong = tmp_path / "token", tmp_path / "wrong"
    token.write_text(TOKEN + "\n")
    wrong.write_text("tok-wrong-0000\n")
    with SecureNats(tmp_path / "nats", f'authorization {{ token: "{TOKEN}" }}\n') as nats:
        _no_secret(_round_trip(tmp_path / "token-ok", nats.url, "--nats-token-file", str(token)))
        verified = subprocess.run(  # the offline tools take the same flags
            [SIDECAR_BIN, "eventlog", "verify", "--store", nats.url, "--nats-token-file",
             str(token)], capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
        assert verified.returncode == 0, verified.stderr
        _no_secret(verified.stdout + verified.stderr)
        stderr = _refused(nats.url, "--nats-token-env", "EL_NATS_TOKEN",
                          env={"EL_NATS_TOKEN": "tok-wrong-0000"})
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "NATS authorization violation (token from $EL_NATS_TOKEN)" in stderr
    assert "tok-wrong-0000" not in stderr


def test_a_creds_file_is_accepted_and_one_from_another_account_refused(tmp_path: Path) -> None:
    operator = Operator.create()
    stranger = Operator.create()
    folder = tmp_path / "op"
    folder.mkdir()
    good = operator.creds(tmp_path / "eventlog.creds")
    bad = operator.creds(tmp_path / "stranger.creds", signer=stranger.account)
    with SecureNats(tmp_path / "nats", operator.server_block(folder)) as nats:
        _no_secret(_round_trip(tmp_path / "creds-ok", nats.url, "--nats-creds", str(good)))
        stderr = _refused(nats.url, "--nats-creds", str(bad))
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"NATS authorization violation (creds {bad})" in stderr
    _no_secret(stderr)
