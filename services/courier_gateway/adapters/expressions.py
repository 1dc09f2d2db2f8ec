"""JMESPath expressions, compiled once, with a fast path for the plain paths adapters mostly use.

Every value an adapter reads is a JMESPath expression (https://jmespath.org) evaluated against the
item's context: ``body`` (the parsed JSON), ``headers`` and ``query`` (first value per name,
header names lower-cased) and one name per split stage (``tracking``, ``event``…).

``jmespath`` walks its syntax tree with a fresh interpreter per call, a few microseconds for even
``a.b``. Most adapter expressions are field paths, indexes, ``||`` fallbacks, literals and lists,
so those are compiled here into nested closures with exactly JMESPath's semantics (a field of a
non-object is null, an index of a non-list is null, ``||`` skips JMESPath's false values);
anything else runs on one reused :class:`jmespath.visitor.TreeInterpreter`. The tests compare
both paths on generated documents.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath import functions as jmespath_functions
from jmespath.visitor import Options, TreeInterpreter

__all__ = ["Expression", "ExpressionError", "compile_expression"]

Evaluator = Callable[[Any], Any]


class ExpressionError(ValueError):
    """An expression that does not compile, or failed on a value (e.g. a function's argument)."""


_F = TypeVar("_F", bound=Callable[..., Any])


def _signature(*arguments: dict[str, Any]) -> Callable[[_F], _F]:
    # jmespath ships no type hints: this gives its decorator one.
    decorate: Callable[[_F], _F] = jmespath_functions.signature(*arguments)
    return decorate


class _Functions(jmespath_functions.Functions):  # type: ignore[misc]
    """JMESPath's built-in functions plus a few string helpers adapters need."""

    @_signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @_signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @_signature({"types": ["string", "null"]})
    def _func_trim(self, value: str | None) -> str | None:
        return None if value is None else value.strip()

    @_signature({"types": ["string", "null"]})
    def _func_nfkc(self, value: str | None) -> str | None:
        return None if value is None else unicodedata.normalize("NFKC", value)

    @_signature({"types": ["string", "number", "boolean", "null"], "variadic": True})
    def _func_concat(self, *values: Any) -> str | None:
        """Concatenate the non-null arguments (numbers as JSON text); null if all are null."""
        present = [_text(value) for value in values if value is not None]
        return "".join(present) if present else None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


_OPTIONS = Options(custom_functions=_Functions())


def _is_false(value: Any) -> bool:
    # JMESPath's falsiness: empty string, list, object, null and false (0 is true).
    return value is None or value is False or value in ("", [], {})


def _steps(node: dict[str, Any]) -> list[tuple[bool, Any]] | None:
    """A plain path (fields and indexes) as ``(is_field, name_or_index)`` steps, else ``None``."""
    kind = node["type"]
    if kind == "field":
        return [(True, node["value"])]
    if kind == "index":
        return [(False, node["value"])]
    if kind in {"subexpression", "index_expression"}:
        steps: list[tuple[bool, Any]] = []
        for child in node["children"]:
            found = _steps(child)
            if found is None:
                return None
            steps += found
        return steps
    return None


def _path(steps: list[tuple[bool, Any]]) -> Evaluator:
    """One function for a whole path: the common case, so it gets the fewest calls."""
    if all(is_field for is_field, _ in steps):
        keys = tuple(key for _, key in steps)
        if len(keys) == 1:
            (only,) = keys

            def field(value: Any) -> Any:
                return value.get(only) if value.__class__ is dict else None

            return field

        def fields(value: Any) -> Any:
            for key in keys:
                if value.__class__ is not dict:
                    return None
                value = value.get(key)
            return value

        return fields

    def path(value: Any) -> Any:
        for is_field, key in steps:
            if is_field:
                if value.__class__ is not dict:
                    return None
                value = value.get(key)
            else:
                if value.__class__ is not list:
                    return None
                try:
                    value = value[key]
                except IndexError:
                    return None
        return value

    return path


def _chain(steps: list[Evaluator]) -> Evaluator:
    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _fast(node: dict[str, Any]) -> Evaluator | None:  # noqa: PLR0911 - one return per node kind
    """A closure for ``node`` when every part of it has a fast form, else ``None``."""
    kind = node["type"]
    children: list[dict[str, Any]] = node.get("children", [])
    steps_of_path = _steps(node)
    if steps_of_path is not None:
        return _path(steps_of_path)
    if kind == "current":
        return lambda value: value
    if kind == "literal":
        constant = node["value"]
        return lambda _value: constant
    parts = [_fast(child) for child in children]
    if any(part is None for part in parts) or (not parts and kind != "function_expression"):
        return None
    steps: list[Evaluator] = [part for part in parts if part is not None]
    if kind in {"subexpression", "index_expression"}:
        return _chain(steps)
    if kind == "or_expression":
        left, right = steps

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if _is_false(matched) else matched

        return either
    if kind == "multi_select_list":

        def select(value: Any) -> Any:
            return None if value is None else [step(value) for step in steps]

        return select
    return _fast_logic(kind, node, steps)


def _numeric(value: Any) -> bool:
    return value.__class__ is not bool and isinstance(value, int | float)


def _equals(left: Any, right: Any) -> bool:
    # JMESPath's equality: 0 and 1 never equal false and true (Python says they do).
    if (_numeric(left) and left in (0, 1) and isinstance(right, bool)) or (
        _numeric(right) and right in (0, 1) and isinstance(left, bool)
    ):
        return False
    return bool(left == right)


def _fast_logic(kind: str, node: dict[str, Any], steps: list[Evaluator]) -> Evaluator | None:
    """``&&``, ``!``, ``==``/``!=`` and function calls over fast arguments."""
    if kind == "and_expression":
        left, right = steps

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if _is_false(matched) else right(value)

        return both
    if kind == "not_expression":
        (inner,) = steps
        return lambda value: _is_false(inner(value))
    if kind == "comparator" and node["value"] in {"eq", "ne"}:
        left, right = steps
        equal = node["value"] == "eq"
        return lambda value: _equals(left(value), right(value)) is equal
    if kind == "function_expression":
        name = node["value"]
        call = _OPTIONS.custom_functions.call_function

        def function(value: Any) -> Any:
            try:
                return call(name, [step(value) for step in steps])
            except jmespath_errors.JMESPathError as error:
                raise ExpressionError(f"{name}(): {_first_line(error)}") from None

        return function
    return None


class Expression:
    """One compiled expression; :meth:`search` evaluates it against a context."""

    __slots__ = ("_fast", "_interpreter", "_parsed", "evaluate", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._parsed = jmespath.compile(source)
        except jmespath_errors.JMESPathError as error:
            raise ExpressionError(
                f"not a valid JMESPath expression ({_first_line(error)})"
            ) from None
        self._fast = _fast(self._parsed.parsed)
        self._interpreter = TreeInterpreter(_OPTIONS)
        _check_functions(self._parsed.parsed)
        #: The evaluation function itself (the fast closure when there is one), for hot loops.
        self.evaluate: Evaluator = self._fast or self.search

    @property
    def is_fast(self) -> bool:
        """Whether evaluation bypasses the JMESPath interpreter."""
        return self._fast is not None

    @property
    def tree(self) -> dict[str, Any]:
        """The parsed syntax tree (JMESPath's own form)."""
        tree: dict[str, Any] = self._parsed.parsed
        return tree

    def search(self, context: Any) -> Any:
        """Evaluate; raise :class:`ExpressionError` when a function refuses its arguments."""
        if self._fast is not None:
            return self._fast(context)
        try:
            return self._interpreter.visit(self._parsed.parsed, context)
        except jmespath_errors.JMESPathError as error:
            raise ExpressionError(f"'{self.source}': {_first_line(error)}") from None

    def slow_search(self, context: Any) -> Any:
        """Evaluate with the JMESPath interpreter only (the reference the fast path must match)."""
        return self._interpreter.visit(self._parsed.parsed, context)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _check_functions(node: dict[str, Any]) -> None:
    # Unknown function names are otherwise found only when an item reaches them.
    if node["type"] == "function_expression":
        name = node["value"]
        if not hasattr(_OPTIONS.custom_functions, f"_func_{name}"):
            raise ExpressionError(f"unknown function {name}()")
    for child in node.get("children", []):
        if isinstance(child, dict):
            _check_functions(child)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def compile_expression(source: str) -> Expression:
    """Compile ``source``; raise :class:`ExpressionError` naming the problem."""
    return Expression(source)
