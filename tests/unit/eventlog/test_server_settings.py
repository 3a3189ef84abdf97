"""Server settings: validated once with errors naming the setting; the token never leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.eventlog.settings import (
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ServerSettings,
    parse_host_port,
    resolve_token,
)


def test_token_file_argument_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file\n")

    assert resolve_token(path, env={ENV_TOKEN: "from-env"}) == "from-file"


def test_token_comes_from_the_environment_then_the_env_named_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  via-file  ")

    assert resolve_token(None, env={ENV_TOKEN: "direct"}) == "direct"
    assert resolve_token(None, env={ENV_TOKEN_FILE: str(path)}) == "via-file"
    assert resolve_token(None, env={}) is None


def test_unreadable_or_empty_token_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")

    with pytest.raises(ValueError, match=r"missing.*cannot read"):
        resolve_token(tmp_path / "missing", env={})
    with pytest.raises(ValueError, match=r"empty.*is empty"):
        resolve_token(empty, env={})


def test_token_is_kept_out_of_the_settings_repr() -> None:
    settings = ServerSettings(store_url="sqlite:///x.db", token="hunter2-secret")

    assert "hunter2-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"store_url": ""}, "store"),
        ({"listen": "nohost"}, "listen"),
        ({"metrics_listen": "127.0.0.1:notaport"}, "metrics_listen"),
        ({"max_batch_events": 0}, "max_batch_events"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"subscriber_buffer_events": 0}, "subscriber_buffer_events"),
        ({"default_heartbeat_interval_s": 0.0}, "default_heartbeat_interval_s"),
        ({"default_read_limit": 20_000}, "default_read_limit"),
        ({"reads_require_token": True}, "reads_require_token"),
        ({"token": ""}, "token"),
    ],
)
def test_bad_setting_is_refused_naming_it(changes: dict[str, object], setting: str) -> None:
    kwargs: dict[str, object] = {"store_url": "sqlite:///x.db", **changes}

    with pytest.raises(ValueError, match=f"^{setting}: "):
        ServerSettings(**kwargs)  # type: ignore[arg-type]


def test_host_port_accepts_ipv6_brackets() -> None:
    assert parse_host_port("[::1]:50071", "listen") == ("::1", 50071)
    assert parse_host_port("0.0.0.0:1", "listen") == ("0.0.0.0", 1)
