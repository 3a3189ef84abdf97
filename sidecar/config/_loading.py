"""Loading: YAML text in, environment references expanded, a validated :class:`SidecarConfig`
out, or a :class:`ConfigError` listing every problem."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.config._fields import ConfigError
from sidecar.config._sidecar import SidecarConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


# A config expands aliases (``*anchor``) into copies; refuse files whose aliases multiply
# past this many values ("billion laughs") instead of spending minutes expanding them.
MAX_CONFIG_VALUES = 100_000

# A config file is a few kilobytes; refuse to read more than this (``--config /dev/zero``).
MAX_CONFIG_BYTES = 10 * 1024 * 1024


class _Expander:
    """Replaces ``${VAR}`` / ``${VAR:-default}`` in every string value, recording problems.

    Also the one place that walks the whole tree, so it refuses what would make validation
    blow up: a node that contains itself (a recursive alias) and trees that aliases multiply
    beyond :data:`MAX_CONFIG_VALUES`.
    """

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self.env = env
        self.problems = problems
        self.values = 0
        self._on_path: set[int] = set()

    def expand(self, node: Any, path: str) -> Any:
        self.values += 1
        if self.values > MAX_CONFIG_VALUES:
            raise _TooLarge
        if isinstance(node, dict | list):
            if id(node) in self._on_path:
                raise _SelfReference(path or "(top level)")
            self._on_path.add(id(node))
            try:
                if isinstance(node, dict):
                    return {k: self.expand(v, f"{path}.{k}" if path else str(k))
                            for k, v in node.items()}
                return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(node)]
            finally:
                self._on_path.discard(id(node))
        if isinstance(node, str):
            return _ENV_REF.sub(lambda match: self._lookup(match, path), node)
        return node

    def _lookup(self, match: re.Match[str], path: str) -> str:
        name, default = match.group(1), match.group(2)
        if name in self.env:
            return self.env[name]
        if default is not None:
            return default
        self.problems.append(f"{path}: environment variable {name} is not set")
        return ""


class _TooLarge(Exception):
    pass


class _SelfReference(Exception):
    pass


_TAGS = {("window", "count"), ("window", "time"), ("discovery", "dns"), ("discovery", "file")}
"""pydantic's discriminator tags in error locations: not keys a user wrote."""


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        if (previous, item) in _TAGS:
            pass  # pydantic's discriminator tag, not a user key
        elif isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
        previous = item
    return "".join(parts) or "(top level)"


def _format_errors(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the configuration reference)"
        elif item["type"] == "missing":
            message = "required key is missing"
        if not item["loc"] and ": " in message:  # cross-checks already name their key paths
            problems.extend(message.split("; "))
            continue
        problems.append(f"{_format_loc(item['loc'])}: {message}")
    return problems


def parse_config(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> SidecarConfig:
    """Parse and validate YAML text; raise :class:`ConfigError` listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"(yaml): {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, ["(yaml): nested too deeply"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping of keys to values"])
    problems: list[str] = []
    try:
        expanded = _Expander(os.environ if env is None else env, problems).expand(raw, "")
    except _SelfReference as exc:
        raise ConfigError(source, [f"{exc}: an alias refers to a value that contains it"]) from None
    except _TooLarge:
        raise ConfigError(
            source, [f"(yaml): more than {MAX_CONFIG_VALUES} values once aliases are expanded"]
        ) from None
    if problems:
        raise ConfigError(source, problems)
    try:
        return SidecarConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read, expand and validate a YAML config file.

    Every way the file itself can be wrong is a :class:`ConfigError` with one ``(file): ...``
    line naming the path, never another exception: missing, unreadable, a directory, larger
    than :data:`MAX_CONFIG_BYTES`, empty (or only whitespace), or not UTF-8 (the line gives the
    offset of the first byte that does not decode).
    """
    file = Path(path)
    source = str(file)
    quoted = repr(source)

    def refuse(problem: str) -> ConfigError:
        return ConfigError(source, [f"(file): {problem}"])

    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except IsADirectoryError:
        raise refuse(f"{quoted} is a directory, not a YAML file") from None
    except OSError as exc:
        raise refuse(f"cannot read {quoted}: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:  # a path with a NUL byte
        raise refuse(f"cannot read {quoted}: {exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise refuse(f"{quoted} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"{quoted} is not UTF-8: byte 0x{data[exc.start]:02x} at offset "
                     f"{exc.start} ({exc.reason})") from None
    if not text.strip():
        raise refuse(f"{quoted} is empty (expected a YAML mapping with service and upstreams)")
    return parse_config(text, source, env)


def config_digest(config: SidecarConfig) -> str:
    """SHA-256 of the effective config, for the ConfigApplied event and logs."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()
