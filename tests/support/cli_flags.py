"""Every float flag of every ``sidecar`` CLI, found by walking the real argument parsers.

Example::

    for flag in float_flags():
        code, err = flag.parse("nan")        # (2, "... argument --timeout-s: must be ...")
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar import cli_types
from sidecar.cli import build_parser

FINITE_TYPES: frozenset[Callable[[str], float]] = frozenset({
    cli_types.finite_float, cli_types.positive_finite_float, cli_types.non_negative_finite_float,
})
"""The argparse types that refuse NaN and infinities."""


@dataclass(frozen=True)
class FloatFlag:
    """One float option of one (sub)command, with what that command needs besides it."""

    program: str
    """``sidecar eventlog serve`` or ``python -m sidecar.demo.upstream``."""
    command: tuple[str, ...]
    flag: str
    dest: str
    type: Any
    required: tuple[str, ...]
    """Other arguments the command requires, with placeholder values."""
    build: Callable[[], argparse.ArgumentParser]

    @property
    def id(self) -> str:
        return f"{self.program} {self.flag}"

    def argv(self, value: str) -> list[str]:
        # FLAG=VALUE: argparse would take a separate "-inf" for an option of its own
        return [*self.command, *self.required, f"{self.flag}={value}"]

    def parse(self, value: str) -> tuple[int, str, Any]:
        """(exit status, stderr, parsed value): status 0 when argparse accepted ``value``."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                namespace = self.build().parse_args(self.argv(value))
            except SystemExit as exc:
                return int(exc.code or 0), err.getvalue(), None
        return 0, err.getvalue(), getattr(namespace, self.dest)


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _upstream_parser() -> argparse.ArgumentParser:
    """The sample upstream's parser: ``sidecar.demo.upstream.main`` builds it inline, so run
    ``main`` up to its ``parse_args`` and take the parser there."""
    from sidecar.demo import upstream

    def capture(self: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> Any:
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture  # type: ignore[assignment,method-assign]
    try:
        upstream.main([])
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise AssertionError("sidecar.demo.upstream.main never called parse_args")


def _placeholders(parser: argparse.ArgumentParser, skip: argparse.Action) -> tuple[str, ...]:
    needed: list[str] = []
    for action in parser._actions:
        if action is not skip and action.required and action.option_strings:
            needed += [action.option_strings[0], "127.0.0.1:1"]
    for group in parser._mutually_exclusive_groups:
        if group.required and skip not in group._group_actions:
            needed += [group._group_actions[0].option_strings[0], "127.0.0.1:1"]
    return tuple(needed)


def _is_float_type(kind: Any) -> bool:
    return kind is float or kind in FINITE_TYPES


def _walk(parser: argparse.ArgumentParser, program: str, command: tuple[str, ...],
          build: Callable[[], argparse.ArgumentParser], found: list[FloatFlag]) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _walk(sub, f"{program} {name}", (*command, name), build, found)
        elif action.option_strings and _is_float_type(action.type):
            found.append(FloatFlag(program, command, action.option_strings[0], action.dest,
                                   action.type, _placeholders(parser, action), build))


def float_flags() -> list[FloatFlag]:
    """Every option whose type is ``float`` or one of :data:`FINITE_TYPES`, in every parser."""
    found: list[FloatFlag] = []
    _walk(build_parser(), "sidecar", (), build_parser, found)
    _walk(_upstream_parser(), "python -m sidecar.demo.upstream", (), _upstream_parser, found)
    return found
