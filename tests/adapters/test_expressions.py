"""Expressions: the fast path gives exactly JMESPath's answers; errors are named, not raised raw."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jmespath.exceptions import JMESPathError

from courier_gateway.adapters.expressions import ExpressionError, compile_expression

FIELDS = ["a", "b", "c", "events"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "x", "0"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS), children, max_size=3)
    ),
    max_leaves=12,
)


def _path() -> st.SearchStrategy[str]:
    step = st.one_of(
        st.sampled_from(FIELDS),
        st.builds(lambda f, i: f"{f}[{i}]", st.sampled_from(FIELDS), st.integers(-3, 3)),
    )
    return st.lists(step, min_size=1, max_size=4).map(".".join)


fast_expressions = st.recursive(
    _path() | st.sampled_from(["@", "`1`", "'text'", "`null`", "`[]`", "a.[b, c]", "a[0].[b]"]),
    lambda inner: (
        st.builds(lambda a, b: f"{a} || {b}", inner, inner)
        | st.builds(lambda a, b: f"({a}) && ({b})", inner, inner)
        | st.builds(lambda a, b: f"({a}) == ({b})", inner, inner)
        | st.builds(lambda a, b: f"({a}) != ({b})", inner, inner)
        | st.builds(lambda a: f"!({a})", inner)
        | st.builds(lambda a: f"type({a})", inner)
        | st.builds(lambda a: f"starts_with({a}, 'x')", inner)
        | st.builds(lambda a, b: f"[{a}, {b}]", inner, inner)
    ),
    max_leaves=4,
)


@settings(max_examples=200, deadline=None)
@given(source=fast_expressions, document=json_values)
def test_the_fast_path_answers_exactly_as_jmespath(source: str, document: Any) -> None:
    expression = compile_expression(source)
    assert expression.is_fast, source
    assert _outcome(expression.search, document) == _outcome(expression.slow_search, document)


def _outcome(search: Any, document: Any) -> Any:
    """The value, or that the expression refused the document (a function's argument type)."""
    try:
        return search(document)
    except (ExpressionError, JMESPathError):
        return "refused"


@pytest.mark.parametrize(
    ("source", "document", "expected"),
    [
        ("body.a.b", {"body": {"a": {"b": 1}}}, 1),
        ("body.a[-1]", {"body": {"a": [1, 2, 3]}}, 3),
        ("body.a[5]", {"body": {"a": [1]}}, None),
        ("body.a.b", {"body": {"a": [1]}}, None),
        ("body.x || body.y", {"body": {"x": "", "y": 2}}, 2),
        ("body.x || body.y", {"body": {"x": 0, "y": 2}}, 0),  # 0 is true in JMESPath
        ("[body.t, body.c]", {"body": {"t": "D", "c": "FS"}}, ["D", "FS"]),
        ("'fedex'", {}, "fedex"),
        ('headers."as-webhook-version"', {"headers": {"as-webhook-version": "2026-07"}}, "2026-07"),
    ],
)
def test_paths(source: str, document: Any, expected: Any) -> None:
    assert compile_expression(source).search(document) == expected


@pytest.mark.parametrize(
    ("source", "document", "expected"),
    [
        ("lower(body.s)", {"body": {"s": "InTransit"}}, "intransit"),
        ("upper(body.s)", {"body": {"s": "dl"}}, "DL"),
        ("trim(body.s)", {"body": {"s": "  x "}}, "x"),
        ("concat(body.d, 'T', body.t)", {"body": {"d": "20240423", "t": 95004}}, "20240423T95004"),
        ("concat(body.none)", {"body": {}}, None),
        ("join('|', [body.a, body.b])", {"body": {"a": "D", "b": "FS"}}, "D|FS"),
        ("body.e[?code=='DL'].code | [0]", {"body": {"e": [{"code": "IT"}, {"code": "DL"}]}}, "DL"),
        ("type(body.e) == 'string'", {"body": {"e": 1}}, False),
        ("lower(body.s)", {"body": {}}, None),
    ],
)
def test_functions_and_the_interpreter_path(source: str, document: Any, expected: Any) -> None:
    assert compile_expression(source).search(document) == expected


def test_a_function_refusing_its_argument_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="lower"):
        compile_expression("lower(body.n)").search({"body": {"n": 5}})


@pytest.mark.parametrize(
    ("source", "mentions"),
    [
        ("body.[", "not a valid JMESPath"),
        ("nope(body)", r"unknown function nope\(\)"),
        ("", "empty"),
    ],
)
def test_bad_expressions_are_refused_when_compiled(source: str, mentions: str) -> None:
    with pytest.raises(ExpressionError, match=mentions):
        compile_expression(source)
