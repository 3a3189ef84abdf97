"""Random YAML at the config loader: it either returns a usable config or raises ConfigError
naming what is wrong. Never another exception, never a traceback from ``sidecar proxy``.

Sources of input: random text (most of it not YAML, or YAML that is not a mapping);
random YAML documents built from nested lists, mappings and scalars; a complete valid
config with one part replaced, removed or added at a random key path; random bytes and the
valid config with bytes that are not UTF-8 spliced in, written to a file for ``load_config``.
A config that parses must be usable as it is: every breaker and the event pipeline convert to
their runtime settings, and every number is finite. Last, random number spellings (NaN and
infinities among them) for every float flag of every CLI.
"""

from __future__ import annotations

import copy
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.config import ConfigError, SidecarConfig, load_config, parse_config
from tests.support.cli_flags import FloatFlag, float_flags
from tests.support.procs import SIDECAR_BIN, free_port, require_binary

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID: dict[str, Any] = {
    "service": "checkout",
    "instance": "checkout-7d9f",
    "listen": "127.0.0.1:15001",
    "admin_listen": "127.0.0.1:15000",
    "metrics_listen": "127.0.0.1:9464",
    "upstreams": {
        "payments": {
            "address": "127.0.0.1:50051",
            "routes": ["/payments.v1.Payments/"],
            "timeout_ms": 2000,
            "max_concurrent_requests": 100,
            "breaker": {
                "window": {"type": "count", "size": 20},
                "minimum_calls": 10,
                "failure_rate": 0.5,
                "slow_call_ms": 500,
                "slow_call_rate": 0.8,
                "consecutive_failures": 5,
                "failure_codes": ["UNAVAILABLE", "DEADLINE_EXCEEDED"],
                "half_open_probes": 3,
                "open": {"base_ms": 1000, "multiplier": 2.0, "max_ms": 60000, "jitter": 0.2},
                "mode": "enforce",
            },
            "fallback": {"upstream": "payments-backup"},
        },
        "payments-backup": {"address": "127.0.0.1:50052", "routes": ["/payments.v1.Backup/"],
                            "fallback": {"status": "UNAVAILABLE", "message": "try later"}},
    },
    "eventlog": {"address": "127.0.0.1:7070", "outbox_path": "./outbox.db", "batch_size": 100},
    "tracing": {"otlp_endpoint": "http://127.0.0.1:4317", "sample_ratio": 1.0},
    "logging": {"level": "info"},
}

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e309", "127.0.0.1:0", "127.0.0.1:99999", "[::1]:1",
                     "${HOME}", "${NOPE}", "${NOPE:-x}", "${", "enforce", "count", "time",
                     "UNAVAILABLE", "OK", "/", "/a.B/"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def _mutated_valid(draw: st.DrawFn) -> dict[str, Any]:
    """The valid config with one node replaced, removed, or given an extra key."""
    config = copy.deepcopy(VALID)
    path = draw(st.sampled_from(_paths(config)))
    parent: Any = config
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(_values)
    elif action == "remove":
        del parent[path[-1]]
    elif isinstance(parent[path[-1]], dict):
        parent[path[-1]][draw(st.text(max_size=12))] = draw(_values)
    return config


def _assert_usable(config: SidecarConfig) -> None:
    """A config that parsed must start: runtime settings build, numbers are finite."""
    for upstream in config.upstreams.values():
        upstream.breaker.to_settings()
        assert math.isfinite(upstream.timeout_ms)
    if config.eventlog is not None:
        config.eventlog.to_settings()

    def walk(node: Any) -> None:
        if isinstance(node, float):
            assert math.isfinite(node), f"non-finite number accepted in {config!r}"
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(config.model_dump())


def _parse(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yaml", env={"HOME": "/root"})
    except ConfigError as error:
        assert error.problems, "ConfigError without a problem"
        for problem in error.problems:
            assert isinstance(problem, str) and ": " in problem, problem
        assert "Traceback" not in str(error)
        return
    _assert_usable(config)


def test_the_valid_reference_config_parses_to_what_it_says() -> None:
    config = parse_config(yaml.safe_dump(VALID), env={})
    assert (config.service, config.instance) == ("checkout", "checkout-7d9f")
    assert (config.listen, config.admin_listen, config.metrics_listen) == (
        "127.0.0.1:15001", "127.0.0.1:15000", "127.0.0.1:9464")
    assert sorted(config.upstreams) == ["payments", "payments-backup"]
    payments = config.upstreams["payments"]
    assert payments.address == "127.0.0.1:50051"
    assert list(payments.routes) == ["/payments.v1.Payments/"]
    assert (payments.timeout_ms, payments.max_concurrent_requests) == (2000, 100)
    settings = payments.breaker.to_settings()
    assert (settings.window_type, settings.window_size, settings.minimum_calls) == (
        "count", 20, 10)
    assert (settings.failure_rate, settings.slow_call_ms, settings.slow_call_rate) == (
        0.5, 500, 0.8)
    assert (settings.consecutive_failures, settings.half_open_probes) == (5, 3)
    assert (settings.open_base_ms, settings.open_multiplier, settings.open_max_ms,
            settings.open_jitter) == (1000, 2.0, 60000, 0.2)
    assert settings.mode.name == "ENFORCE"
    assert payments.fallback is not None and payments.fallback.upstream == "payments-backup"
    backup = config.upstreams["payments-backup"].fallback
    assert backup is not None and (backup.status, backup.message) == ("UNAVAILABLE", "try later")
    assert config.eventlog is not None
    assert (config.eventlog.address, config.eventlog.batch_size) == ("127.0.0.1:7070", 100)
    assert config.tracing.sample_ratio == 1.0
    _assert_usable(config)


@FUZZ
@given(text=st.text(max_size=400) | st.binary(max_size=400).map(
    lambda b: b.decode("latin-1")))
@example(text="service: [")
@example(text="- a\n- b\n")
@example(text="!!python/object:os.system x")
@example(text="a: &x 1\nb: *y\n")
def test_random_text_is_either_a_config_or_a_config_error(text: str) -> None:
    _parse(text)


@FUZZ
@given(document=st.dictionaries(
    st.sampled_from(sorted(VALID)) | st.text(max_size=12), _values, max_size=8))
def test_random_yaml_documents_are_either_a_config_or_a_config_error(
        document: dict[str, Any]) -> None:
    _parse(yaml.safe_dump(document))


@FUZZ
@given(config=_mutated_valid())
def test_a_valid_config_with_one_part_changed_is_either_usable_or_refused_by_key(
        config: dict[str, Any]) -> None:
    _parse(yaml.safe_dump(config))


# --- bytes in a file: load_config -------------------------------------------------------------

_VALID_BYTES = yaml.safe_dump(VALID).encode()


def _load_bytes(tmp_path: Path, data: bytes) -> None:
    """load_config on a file holding ``data``: a usable config or a ConfigError whose lines all
    have a key path; a file that is not UTF-8 gets exactly one line, naming the path and the
    offset of the first byte that does not decode."""
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    bad: UnicodeDecodeError | None = None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc
    try:
        config = load_config(path, env={"HOME": "/root"})
    except ConfigError as error:
        assert error.problems and all(": " in p for p in error.problems), error.problems
        if bad is not None:
            assert error.problems == [
                f"(file): '{path}' is not UTF-8: byte 0x{data[bad.start]:02x} at offset "
                f"{bad.start} ({bad.reason})"]
        return
    assert bad is None, "a file that is not UTF-8 was accepted"
    _assert_usable(config)


@st.composite
def _valid_with_bad_bytes(draw: st.DrawFn) -> bytes:
    """The valid config with 1-3 bytes spliced in that no UTF-8 text contains at that place
    (a lone continuation byte, a lead byte without its continuation, 0xc0/0xc1/0xf5-0xff)."""
    data = bytearray(_VALID_BYTES)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([0x80, 0xbf, 0xc0, 0xc1, 0xe9, 0xf5, 0xfe, 0xff])
                   | st.integers(0x80, 0xff))
        data[at:at] = bytes([bad])
    return bytes(data)


@FUZZ
@given(data=st.binary(max_size=400) | _valid_with_bad_bytes())
@example(data=b"")
@example(data=b"\xff\xfe" + "service: x".encode("utf-16-le"))  # UTF-16 with its BOM
@example(data=b"\xef\xbb\xbf" + _VALID_BYTES)                  # UTF-8 with a BOM: fine
@example(data=_VALID_BYTES[:-1] + b"\xc3")                       # truncated at the end
def test_random_bytes_in_a_file_are_either_a_config_or_a_config_error(
        tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    _load_bytes(tmp_path_factory.mktemp("bytes"), data)


def test_a_latin1_byte_in_the_reference_config_is_refused_naming_its_offset(
        tmp_path: Path) -> None:
    bad = b"\xe9"
    data = _VALID_BYTES.replace(b"checkout-7d9f", b"checkout-" + bad + b"7d9f")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    offset = data.index(bad)
    assert info.value.problems == [
        f"(file): '{path}' is not UTF-8: byte 0xe9 at offset {offset} (invalid continuation byte)"]


# --- number spellings for every float flag of every CLI ---------------------------------------

FLAGS = float_flags()
_NUMBER_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "-nan", "+nan", "NAN", "inf", "-inf", "+inf", "Infinity",
                     "-Infinity", "iNfInItY", "1e309", "-1e309", "1e999", " nan", "nan\n",
                     "0", "-0", "0.0", "-1", "1", "1e-320", "5", "1_000", "0x10", "", " "]),
    st.floats().map(repr),
    st.floats().map(lambda x: f"{x:g}"),
    st.text(alphabet="0123456789.eE+-naifINF_ ", max_size=12),
)


def test_every_cli_has_float_flags_to_fuzz() -> None:
    assert len(FLAGS) >= 9, [f.id for f in FLAGS]


@FUZZ
@given(flag=st.sampled_from(FLAGS), value=_NUMBER_TEXT)
@example(flag=next(f for f in FLAGS if f.flag == "--heartbeat-interval-s"), value="nan")
def test_a_float_flag_takes_a_finite_number_or_exits_2_naming_the_flag(
        flag: FloatFlag, value: str) -> None:
    code, err, parsed = flag.parse(value)
    try:
        number: float | None = float(value)
    except ValueError:
        number = None
    if code == 0:
        assert parsed is not None and math.isfinite(parsed), (flag.id, value, parsed)
        assert number is not None and parsed == number
        return
    assert code == 2, (flag.id, value, code, err)
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if "error:" in line]
    assert f"error: argument {flag.flag}: must be a " in error, error
    if number is not None and not math.isfinite(number):
        assert error.endswith(f"must be a finite number, got {value!r}"), error


# --- found by this suite, fixed in sidecar/config/ ------------------------------------------


@pytest.mark.parametrize("value", [".nan", ".inf", "1e400"])
@pytest.mark.parametrize("key", ["timeout_ms", "breaker: {slow_call_ms", "breaker: {open: {max_ms"])
def test_non_finite_numbers_are_refused_naming_the_key(key: str, value: str) -> None:
    closing = "}" * key.count("{")
    text = ("service: x\nupstreams: {p: {address: '127.0.0.1:1', routes: [/a], "
            f"{key}: {value}{closing}}}}}\n")
    with pytest.raises(ConfigError):
        parse_config(text, env={})


@pytest.mark.parametrize("text", [
    "service: x\nupstreams: &a {p: *a}\n",   # a mapping that contains itself
    "service: &s [*s]\n",                     # a list that contains itself
    "service: x\nq: " + "[" * 3000 + "]" * 3000 + "\n",  # nesting deeper than Python's stack
])
def test_self_referencing_or_very_deep_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text, env={})


def test_aliases_that_multiply_into_millions_of_values_are_refused_quickly() -> None:
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(ConfigError) as info:
        parse_config("\n".join(lines) + "\n", env={})
    assert "once aliases are expanded" in info.value.problems[0]


# --- through the CLI -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["not-utf8", "directory", "empty", "missing", "through-a-file"])
def test_sidecar_proxy_refuses_a_bad_config_file_with_exit_2_and_one_line(
        tmp_path: Path, kind: str) -> None:
    require_binary("sidecar")
    path = tmp_path / "sidecar.yaml"
    if kind == "not-utf8":
        path.write_bytes(_VALID_BYTES.replace(b"checkout-7d9f", b"checkout-\xff"))
        problem = (f"'{path}' is not UTF-8: byte 0xff at offset "
                   f"{_VALID_BYTES.index(b'checkout-7d9f') + len(b'checkout-')} "
                   "(invalid start byte)")
    elif kind == "directory":
        path.mkdir()
        problem = f"'{path}' is a directory, not a YAML file"
    elif kind == "empty":
        path.write_bytes(b"\n")
        problem = f"'{path}' is empty (expected a YAML mapping with service and upstreams)"
    elif kind == "missing":
        problem = f"cannot read '{path}': No such file or directory"
    else:
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "sidecar.yaml"
        problem = f"cannot read '{path}': Not a directory"
    done = subprocess.run([SIDECAR_BIN, "proxy", "--config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"invalid config {path}:", f"  (file): {problem}"]


@pytest.mark.integration
@pytest.mark.parametrize("text", [
    "service: [",
    "just a string",
    "service: x\nupstreams: {}\n",
    "service: x\nupstreams: {p: {address: nowhere, routes: [a]}}\n",
    "service: x\nbogus_key: 1\nupstreams: {p: {address: '127.0.0.1:1', routes: [/a]}}\n",
])
def test_sidecar_proxy_refuses_a_bad_config_with_exit_2_and_no_traceback(
        tmp_path: Path, text: str) -> None:
    require_binary("sidecar")
    path = tmp_path / "bad.yaml"
    path.write_text(text + f"\nlisten: 127.0.0.1:{free_port()}\n" if "bogus" in text else text)
    done = subprocess.run([SIDECAR_BIN, "proxy", "--config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "invalid config" in done.stderr
