"""Every breaker setting has its config key, and every breaker config key reaches the breaker.

A new trip rule brings a :class:`BreakerSettings` field and a ``BreakerConfig`` field (see
docs/breaker.md, "Adding a trip rule"); forgetting the config half, or forgetting to pass it
on in ``to_settings``, fails here. Config keys map to settings by name: a nested model's key
is its parent's name and its own, joined by ``_`` (``window.size`` -> ``window_size``,
``open.base_ms`` -> ``open_base_ms``).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sidecar.breaker import BreakerSettings
from sidecar.config import BreakerConfig

CONFIG_ONLY = {
    # The proxy classifies each call's final status with it and tells the breaker only
    # failed=True/False; the breaker never sees status codes.
    "failure_codes",
    # A removed key, kept only to refuse it with a message naming its replacement.
    "streak_decay_windows",
}

DEFAULTS = BreakerSettings()


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field holds: one, a union of them (a discriminated union), or none."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = typing.get_args(annotation)
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return list(members)
    return []


def config_paths() -> dict[str, dict[str, Any]]:
    """Settings name -> how to set it in a config: the nested keys (a ``{key: ...}`` skeleton
    whose leaf is the placeholder ``...``), e.g. ``window_seconds`` ->
    ``{"window": {"type": "time", "seconds": ...}}``."""
    paths: dict[str, dict[str, Any]] = {}
    for name, field in BreakerConfig.model_fields.items():
        if name in CONFIG_ONLY:
            continue
        models = _models(field.annotation)
        if not models:
            paths[name] = {name: ...}
            continue
        for model in models:
            kind = model.model_fields.get("type")
            tag = typing.get_args(kind.annotation)[0] if kind is not None else None
            for key in model.model_fields:
                inner: dict[str, Any] = {key: ...}
                if tag is not None and key != "type":
                    inner = {"type": tag, key: ...}  # the member this key belongs to
                paths.setdefault(f"{name}_{key}", {name: inner})
    return paths


def _fill(skeleton: dict[str, Any], value: Any) -> dict[str, Any]:
    return {
        k: (_fill(v, value) if isinstance(v, dict) else value if v is ... else v)
        for k, v in skeleton.items()
    }


def _candidates(default: Any, field: dataclasses.Field[Any]) -> list[Any]:
    """Values other than the default worth trying, by the default's type."""
    if isinstance(default, enum.Enum):
        return [m for m in type(default) if m is not default]
    literal = typing.get_args(typing.get_type_hints(BreakerSettings)[field.name])
    if isinstance(default, str):
        return [x for x in literal if isinstance(x, str) and x != default]
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default - 1, 1]
    if isinstance(default, float):
        return [default * 0.5, default * 1.5, default + 1.0]
    return [1, 0.5, True]  # None by default: anything the field might accept


def test_every_breaker_setting_has_a_config_key_and_every_config_key_a_setting() -> None:
    settings_fields = {f.name for f in dataclasses.fields(BreakerSettings)}
    paths = config_paths()
    missing = settings_fields - set(paths)
    assert not missing, f"BreakerSettings fields with no key in BreakerConfig: {sorted(missing)}"
    unknown = set(paths) - settings_fields
    assert not unknown, (
        f"BreakerConfig keys that reach no BreakerSettings field: {sorted(unknown)} "
        "(name them after the setting, or list them in CONFIG_ONLY with the reason)"
    )


def test_config_defaults_are_the_breakers_defaults() -> None:
    assert BreakerConfig().to_settings() == DEFAULTS


@pytest.mark.parametrize("field", dataclasses.fields(BreakerSettings), ids=lambda f: f.name)
def test_each_config_key_reaches_its_breaker_setting(field: dataclasses.Field[Any]) -> None:
    skeleton = config_paths()[field.name]
    default = getattr(DEFAULTS, field.name)
    tried = []
    for value in _candidates(default, field):
        if value == default:
            continue
        try:
            settings = BreakerConfig.model_validate(_fill(skeleton, value)).to_settings()
        except (ValidationError, ValueError) as exc:
            tried.append(f"{value!r}: {str(exc).splitlines()[0]}")
            continue
        assert getattr(settings, field.name) == value
        changed = {
            f.name
            for f in dataclasses.fields(BreakerSettings)
            if getattr(settings, f.name) != getattr(DEFAULTS, f.name)
        }
        assert changed <= {field.name, "window_type"}  # a time-window key selects that window
        return
    pytest.fail(f"no value other than the default passed through {skeleton}: {tried}")
