"""Walking composed YAML nodes into typed values; every error carries its key path and line.

`yaml.compose` keeps each node's position, so a wrong value is reported where it was written.
String scalars get `${VAR}` substitution from the environment (or a systemd credential file);
`$${` writes a literal `${`. A value that came from the environment is never echoed back.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
_KINDS = {STR: "a string", INT: "an integer", FLOAT: "a number", BOOL: "a boolean", NULL: "null"}

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\}?)")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NO_BOUNDS: Mapping[str, tuple[int, int | None]] = MappingProxyType({})


class ConfigError(Exception):
    """A configuration problem at `path` (e.g. `rules[2].when.queue`), line `line` of `source`."""

    def __init__(self, path: str, message: str, line: int | None = None, source: str = "") -> None:
        self.path = path
        self.message = message
        self.line = line
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}: " if self.line is not None and self.source else ""
        if not where and self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


@dataclass(frozen=True, slots=True)
class At:
    """A YAML node, the key path that leads to it, and the line its entry starts on.

    For a mapping entry that is the key's line, so `twilio:` is blamed for what its
    block lacks rather than the first line inside it.
    """

    node: yaml.Node
    path: str
    line: int

    def child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


@dataclass(frozen=True, slots=True)
class _Scalar:
    tag: str
    text: str
    from_env: bool


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _KINDS.get(str(node.tag), "a scalar")


class NodeReader:
    """Reads one document's nodes for one source, resolving `${VAR}` from `environ`."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self._environ = environ
        self._constructor = SafeConstructor()

    def error(self, at: At, message: str) -> ConfigError:
        return ConfigError(at.path, message, at.line, self.source)

    def document(self, text: str) -> At:
        """The root node of `text`, which must be one YAML mapping."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ConfigError("", f"YAML syntax error: {exc.problem}", line, self.source) from exc
        except yaml.YAMLError as exc:
            raise ConfigError("", f"YAML error: {exc}", None, self.source) from exc
        except RecursionError as exc:  # PyYAML composes nested collections recursively
            raise ConfigError("", "YAML nested too deeply", None, self.source) from exc
        if root is None:
            raise ConfigError("", "the configuration is empty", None, self.source)
        return At(root, "", _line(root))

    def mapping(
        self, at: At, allowed: Collection[str], required: Collection[str] = ()
    ) -> dict[str, At]:
        """The entries of a mapping with a fixed set of keys."""
        entries = self.entries(at)
        for key, child in entries:
            if key not in allowed:
                raise self.error(child, _unknown("key", key, allowed))
        found = dict(entries)
        for key in required:
            if key not in found:
                raise self.error(At(at.node, at.child(key), at.line), "missing (required)")
        return found

    def entries(self, at: At) -> list[tuple[str, At]]:
        """The entries of a free-form mapping, in order; keys are taken as written."""
        if not isinstance(at.node, yaml.MappingNode):
            raise self.error(at, f"expected a mapping, got {_describe(at.node)}")
        out: list[tuple[str, At]] = []
        seen: set[str] = set()
        for key_node, value_node in at.node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == NULL:
                raise self.error(At(key_node, at.path, _line(key_node)), "keys must be plain names")
            key = str(key_node.value)
            child = At(value_node, at.child(key), _line(key_node))
            if key in seen:
                raise self.error(child, f"duplicate key '{key}'")
            seen.add(key)
            out.append((key, child))
        return out

    def sequence(self, at: At) -> list[At]:
        if not isinstance(at.node, yaml.SequenceNode):
            raise self.error(at, f"expected a list, got {_describe(at.node)}")
        return [At(node, f"{at.path}[{i}]", _line(node)) for i, node in enumerate(at.node.value)]

    def text(self, at: At) -> str:
        """A string; unquoted numbers, dates and yes/no count as the text written."""
        scalar = self._scalar(at)
        if scalar.tag == NULL:
            raise self.error(at, "expected a string, got nothing")
        return scalar.text

    def items(self, at: At) -> list[At]:
        """The items of a list, or the node itself when it is a single value."""
        return self.sequence(at) if isinstance(at.node, yaml.SequenceNode) else [at]

    def texts(self, at: At) -> tuple[str, ...]:
        """One string or a list of strings."""
        return tuple(self.text(item) for item in self.items(at))

    def choice(self, at: At, known: Collection[str], what: str = "value") -> str:
        """A string that must be one of `known`; a near miss is suggested."""
        name = self.text(at)
        if name not in known:
            raise self.error(at, _unknown(what, name, known))
        return name

    def weekday(self, at: At) -> int:
        """0 for `mon` or `monday` (any case) to 6 for `sun`."""
        name = self.text(at).lower()
        for names in (_WEEKDAYS, _FULL_WEEKDAYS):
            if name in names:
                return names.index(name)
        raise self.error(at, f"unknown day '{name}'; expected one of: {', '.join(_WEEKDAYS)}")

    def clock(self, at: At, latest: int = 24 * 60) -> int:
        """Minutes after midnight of "HH:MM"; YAML 1.1 reads an unquoted 17:30 as a number."""
        text = self.text(at)
        found = _CLOCK.fullmatch(text.strip())
        minutes = int(found[1]) * 60 + int(found[2]) if found and int(found[2]) < 60 else None
        if minutes is None or minutes > latest:
            raise self.error(at, f'expected a time of day as "HH:MM", got {text!r}')
        return minutes

    def integer(self, at: At, minimum: int | None = 0, maximum: int | None = None) -> int:
        scalar = self._typed(at, INT, "an integer")
        try:
            value = int(self._constructor.construct_yaml_int(yaml.ScalarNode(INT, scalar.text)))
        except (ValueError, IndexError) as exc:  # `!!int junk`, `!!int ''`, 4,300+ digits
            raise self.error(at, _wrong_type("an integer", "", scalar)) from exc
        if minimum is not None and value < minimum:
            raise self.error(at, f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(at, f"must be at most {maximum}")
        return value

    def number(self, at: At) -> float:
        """A positive number (durations, rates)."""
        scalar = self._scalar(at)
        tag = _retag(scalar)
        if tag not in (INT, FLOAT):
            raise self.error(at, _wrong_type("a number", tag, scalar))
        node = yaml.ScalarNode(tag, scalar.text)
        try:
            value = float(self._constructor.construct_object(node))
        except (ValueError, IndexError) as exc:  # `!!float junk`, an int of 4,300+ digits
            raise self.error(at, _wrong_type("a number", "", scalar)) from exc
        if not (value > 0 and math.isfinite(value)):
            raise self.error(at, "must be a positive number")
        return value

    def flag(self, at: At) -> bool:
        scalar = self._typed(at, BOOL, "a boolean (true or false)")
        try:
            return bool(self._constructor.construct_yaml_bool(yaml.ScalarNode(BOOL, scalar.text)))
        except KeyError as exc:  # `!!bool maybe`
            raise self.error(at, _wrong_type("a boolean", "", scalar)) from exc

    def fill(
        self,
        nodes: Mapping[str, At],
        cls: type[T],
        bounds: Mapping[str, tuple[int, int | None]] = _NO_BOUNDS,
        **fixed: Any,
    ) -> T:
        """Builds dataclass `cls` from `nodes` whose keys are its field names (`from` is `from_`).

        Fields typed str, int, float, bool or tuple[str, ...] (or those `| None`) are read; any
        other field must be in `fixed` or keep its default. Integers are at least 0 unless
        `bounds` says otherwise; floats are positive.
        """
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = dict(fixed)
        for spec in fields(cls):
            at = nodes.get(spec.name.rstrip("_"))
            if at is None or spec.name in fixed:
                continue
            hint = _unoptional(hints[spec.name])
            if hint is int:
                values[spec.name] = self.integer(at, *bounds.get(spec.name, (0, None)))
            else:
                values[spec.name] = self._read_as(at, hint)
        return cls(**values)

    def _read_as(self, at: At, hint: object) -> object:
        if hint is bool:
            return self.flag(at)
        if hint is float:
            return self.number(at)
        if hint is str:
            return self.text(at)
        if hint == tuple[str, ...]:
            return self.texts(at)
        raise TypeError(f"no YAML reader for {hint!r}")

    def _typed(self, at: At, tag: str, wanted: str) -> _Scalar:
        scalar = self._scalar(at)
        if _retag(scalar) != tag:
            raise self.error(at, _wrong_type(wanted, _retag(scalar), scalar))
        return scalar

    def _scalar(self, at: At) -> _Scalar:
        if not isinstance(at.node, yaml.ScalarNode):
            raise self.error(at, f"expected a single value, got {_describe(at.node)}")
        tag, raw = str(at.node.tag), str(at.node.value)
        if tag != STR:
            return _Scalar(tag, raw, from_env=False)
        text, from_env = self._substitute(at, raw)
        return _Scalar(tag, text, from_env)

    def _substitute(self, at: At, raw: str) -> tuple[str, bool]:
        used_env = False

        def replace(match: re.Match[str]) -> str:
            nonlocal used_env
            if match.group(0) == "$${":
                return "${"
            name = match.group("name")
            if not match.group("close"):
                raise self.error(at, "unterminated '${' (write '$${' for a literal '${')")
            if not _VAR_NAME.fullmatch(name):
                raise self.error(
                    at, f"bad variable reference '${{{name}}}' (write '$${{' for a literal '${{')"
                )
            used_env = True
            return self._variable(at, name)

        return _REFERENCE.sub(replace, raw), used_env

    def _variable(self, at: At, name: str) -> str:
        value = self._environ.get(name)
        if value is not None:
            return value
        directory = self._environ.get("CREDENTIALS_DIRECTORY")
        if directory:
            # systemd LoadCredential= puts each secret in a file named after it.
            credential = Path(directory) / name
            try:
                content = credential.read_text(encoding="utf-8")
            except FileNotFoundError:
                pass
            except (OSError, UnicodeDecodeError) as exc:
                raise self.error(
                    at, f"cannot read credential '{name}': {type(exc).__name__}"
                ) from exc
            else:
                return content.removesuffix("\n")
        raise self.error(at, f"environment variable '{name}' is not set")


def _unoptional(hint: object) -> object:
    """`X` for a hint `X | None`."""
    if isinstance(hint, UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not NoneType]
        if len(args) == 1:
            return args[0]
    return hint


def _retag(scalar: _Scalar) -> str:
    """The tag a value from the environment would have had if written in the file."""
    if not scalar.from_env:
        return scalar.tag
    resolver = Resolver()
    return str(resolver.resolve(yaml.ScalarNode, scalar.text, (True, False)))  # type: ignore[no-untyped-call]


def _wrong_type(wanted: str, tag: str, scalar: _Scalar) -> str:
    if scalar.from_env:
        return f"expected {wanted}; the value from the environment is not one"
    shown = scalar.text if len(scalar.text) <= 40 else scalar.text[:37] + "..."
    return f"expected {wanted}, got {_KINDS.get(tag, 'a scalar')} {shown!r}"


def _unknown(what: str, name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {what} '{name}'{hint}; expected one of: {', '.join(known)}"
