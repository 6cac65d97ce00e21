"""The calc tool's core: exact arithmetic, result formatting, and refusal of anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmos.errors import Errno, SyscallError
from lmos.userland.tools.calc import MAX_EXPONENT, evaluate, format_result


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("12 * 7", 84),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("-5 + 3", -2),
        ("--4", 4),
        ("+7", 7),
        ("10 / 4", 2.5),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("1.5 * 2", 3.0),
        ("  3+4  ", 7),
    ],
)
def test_evaluates_arithmetic(expr: str, expected: float) -> None:
    assert evaluate(expr) == expected


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("__import__('os')", "unsupported"),
        ("x + 1", "unsupported"),
        ("'a' * 3", "not a number"),
        ("True + 1", "not a number"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        (f"2 ** {MAX_EXPONENT + 1}", "exponent too large"),
        ("9 ** 9 ** 9", "exponent too large"),
        ("10 ** 40", "too large"),
        ("1 +", "cannot parse"),
        ("", "empty"),
        ("[1, 2]", "unsupported"),
        ("1 if 1 else 2", "unsupported"),
        ("1 << 3", "unsupported"),
        ("(-8) ** 0.5", "not a real number"),
        ("1" * 300, "longer than"),
    ],
)
def test_rejects_bad_input_with_einval(expr: str, fragment: str) -> None:
    with pytest.raises(SyscallError) as info:
        evaluate(expr)
    assert info.value.errno == Errno.EINVAL
    assert fragment in info.value.message


def test_rejects_deep_nesting_but_allows_long_sums() -> None:
    with pytest.raises(SyscallError, match="nested too deeply"):
        evaluate("-" * 150 + "1")
    assert evaluate("+".join(["1"] * 60)) == 60


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (84, "84"),
        (-3, "-3"),
        (2.5, "2.5"),
        (4.0, "4"),
        (10 / 3, "3.333333"),
        (2 / 3, "0.666667"),
        (0.1 + 0.2, "0.3"),
        (-0.0000001, "0"),
        (1e-7, "0"),
        (-1.25, "-1.25"),
    ],
)
def test_format_result(value: float, text: str) -> None:
    assert format_result(value) == text


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from(["+", "-", "*"]))
def test_integer_ops_match_python(a: int, b: int, op: str) -> None:
    expr = f"{a} {op} {b}"
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert evaluate(expr) == expected
    assert format_result(evaluate(expr)) == str(expected)


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("sqrt(144)", "12"),
        ("sqrt(2)", "1.414214"),
        ("sqrt(10 ** 30)", "1000000000000000"),
        ("sqrt(6.25)", "2.5"),
        ("sqrt(16) * 3 + 1", "13"),
        ("abs(-3)", "3"),
        ("abs(2 - 7.5)", "5.5"),
        ("round(2.5)", "3"),
        ("round(-2.5)", "-3"),
        ("round(3.14159, 2)", "3.14"),
        ("round(7)", "7"),
        ("min(3, 1, 2)", "1"),
        ("max(2, 7.5)", "7.5"),
        ("max(sqrt(81), 2 ** 3)", "9"),
        ("15 / 100 * 200", "30"),
    ],
)
def test_whitelisted_functions(expr: str, text: str) -> None:
    assert format_result(evaluate(expr)) == text


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("sqrt(-1)", "negative"),
        ("sqrt()", "sqrt takes 1 argument"),
        ("sqrt(1, 2)", "sqrt takes 1 argument"),
        ("round(1.5, 2.5)", "digits must be"),
        ("round(1.5, 11)", "digits must be"),
        ("round(1, 2, 3)", "round takes 1 to 2 arguments"),
        ("max()", "max takes 1 to 20 arguments"),
        ("min(" + ", ".join(["1"] * 21) + ")", "min takes 1 to 20"),
        ("max(*[1, 2])", "positional arguments only"),
        ("min(a=1)", "positional arguments only"),
        ("pow(2, 3)", "unsupported function"),
        ("math.sqrt(4)", "unsupported function"),
        ("sqrt(4)(2)", "unsupported function"),
        ("__import__('os')", "unsupported function"),
        ("sqrt('4')", "not a number"),
        ("abs(10 ** 29 * 100)", "too large"),
        ("max(9 ** 9 ** 9)", "exponent too large"),
    ],
)
def test_functions_refuse_bad_calls(expr: str, fragment: str) -> None:
    with pytest.raises(SyscallError) as info:
        evaluate(expr)
    assert info.value.errno == Errno.EINVAL
    assert fragment in info.value.message
