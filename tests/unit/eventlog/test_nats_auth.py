"""``NatsAuth``: one credential at most, secrets from a file or a variable and never in a
repr or a message, the connect options nats-py gets, and which failures it names."""

from __future__ import annotations

import ssl
from pathlib import Path

import nats.errors
import pytest

from sidecar.eventlog.nats import NatsSettings
from sidecar.eventlog.nats_auth import NatsAuth

SECRET = "hunter2-very-secret"


def test_password_from_a_file_is_read_stripped_and_kept_out_of_repr(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    auth = NatsAuth.load(user="el", password_file=path)
    assert auth.password == SECRET
    assert SECRET not in repr(auth) and SECRET not in auth.describe()
    assert auth.describe() == f"user el, password from {path}"
    assert auth.connect_options(tls_scheme=False) == {"user": "el", "password": SECRET}


def test_token_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EL_TOKEN", SECRET)
    auth = NatsAuth.load(token_env="EL_TOKEN")
    assert auth.connect_options(tls_scheme=False) == {"token": SECRET}
    assert auth.describe() == "token from $EL_TOKEN" and SECRET not in repr(auth)


def test_an_unset_variable_or_empty_file_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    with pytest.raises(ValueError, match=r"environment variable NOPE_TOKEN is unset"):
        NatsAuth.load(token_env="NOPE_TOKEN")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        NatsAuth.load(user="el", password_file=empty)


def test_two_credentials_or_half_a_pair_are_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "x.creds"
    creds.write_text("x")
    monkeypatch.setenv("T", SECRET)
    with pytest.raises(ValueError, match="one credential"):
        NatsAuth.load(creds_file=creds, token_env="T")
    with pytest.raises(ValueError, match="--nats-cert and --nats-key go together"):
        NatsAuth.load(cert_file=creds)
    with pytest.raises(ValueError, match="--nats-user needs"):
        NatsAuth.load(user="el")
    with pytest.raises(ValueError, match="not both"):
        NatsAuth.load(token_file=creds, token_env="T")
    with pytest.raises(ValueError, match="cannot read"):
        NatsAuth.load(nkey_seed_file=tmp_path / "missing.nk")


def test_tls_scheme_or_a_ca_gives_an_ssl_context(tmp_path: Path) -> None:
    assert isinstance(NatsAuth().connect_options(tls_scheme=True)["tls"], ssl.SSLContext)
    assert "tls" not in NatsAuth().connect_options(tls_scheme=False)


def test_failures_are_named_and_network_errors_are_not() -> None:
    auth = NatsAuth(creds_file=None)
    assert auth.explain(nats.errors.AuthorizationError()) == (
        "NATS authorization violation (no credentials)")
    assert auth.explain(nats.errors.Error(
        'nats: permissions violation for publish to "$js.api.stream.create.x"')) == (
        'NATS permissions violation: permissions violation for publish to '
        '"$js.api.stream.create.x" (no credentials)')
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    assert auth.explain(verify) == ("NATS TLS: certificate verify failed: unable to get local "
                                    "issuer certificate (CA system roots)")
    assert auth.explain(ConnectionRefusedError(111, "refused")) is None
    assert auth.explain(TimeoutError()) is None


def test_tls_urls_keep_their_scheme_and_carry_the_auth(tmp_path: Path) -> None:
    auth = NatsAuth()
    settings = NatsSettings.from_url("tls://a:4222,b:4222?replicas=3", auth)
    assert settings.servers == ("tls://a:4222", "tls://b:4222") and settings.auth is auth
    with pytest.raises(ValueError, match="is not a nats://"):
        NatsSettings.from_url("http://a:4222")


def test_credentials_in_a_store_url_are_masked_for_logs() -> None:
    from sidecar.eventlog.nats_auth import redact_url

    assert redact_url(f"nats://el:{SECRET}@a:4222,tok@b:4222?replicas=3") == (
        "nats://***@a:4222,***@b:4222?replicas=3")
    assert redact_url("sqlite:///var/lib/e.db") == "sqlite:///var/lib/e.db"
