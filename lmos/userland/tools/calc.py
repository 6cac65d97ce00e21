"""The pure core of the ``calc`` tool: a safe arithmetic evaluator.

Apps hand the model's text to this tool, so the expression is untrusted input.
``eval`` would run arbitrary code; instead the expression is parsed with
:mod:`ast` and only a whitelist of node types is walked (numbers, ``+ - * / //
% **``, unary plus/minus, parentheses).  Exponents and intermediate results are
bounded so ``9**9**9`` cannot eat the CPU or memory of the worker.

The training corpus of the built-in model computes its answers with these same
two functions, so what the model learned to expect is exactly what the tool
returns at run time.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from lmos.errors import Errno, SyscallError

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 64
MAX_ABS_RESULT = 10**30
MAX_DEPTH = 100

_BINARY: dict[type[ast.operator], Callable[[int | float, int | float], int | float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _fail(message: str) -> SyscallError:
    return SyscallError(Errno.EINVAL, message)


def _check(value: int | float) -> int | float:
    """Reject results that are too large or not finite, so later steps stay cheap."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail("result is not a finite number")
    if abs(value) > MAX_ABS_RESULT:
        raise _fail("result too large")
    return value


def _eval(node: ast.AST, depth: int) -> int | float:
    if depth > MAX_DEPTH:
        raise _fail("expression nested too deeply")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _fail(f"not a number: {node.value!r}")
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(node.operand, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _eval(node.left, depth + 1)
        right = _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise _fail(f"exponent too large (max {MAX_EXPONENT})")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise _fail("division by zero")
        try:
            result = _BINARY[type(node.op)](left, right)
        except (OverflowError, ZeroDivisionError, ValueError) as exc:
            raise _fail(f"cannot compute: {exc}") from None
        if isinstance(result, complex):
            raise _fail("result is not a real number")
        return _check(result)
    raise _fail(f"unsupported syntax: {type(node).__name__}")


def evaluate(expr: str) -> int | float:
    """Evaluate an arithmetic expression; raise ``SyscallError(EINVAL)`` on anything else."""
    if not isinstance(expr, str):
        raise _fail("expression must be a string")
    if not expr.strip():
        raise _fail("empty expression")
    if len(expr) > MAX_EXPR_CHARS:
        raise _fail(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise _fail(f"cannot parse expression: {expr.strip()}") from None
    return _eval(tree.body, 0)


def format_result(value: int | float) -> str:
    """Render a result the way the tool reports it: ints plain, floats to <= 6 decimals.

    Integral floats (``8 / 2``) print as ``4``: the reader asked for a number, and
    ``4.0`` would make the model learn two spellings of the same value.
    """
    if isinstance(value, bool):
        raise _fail("not a number")
    if isinstance(value, int):
        return str(value)
    rounded = round(value, 6)
    if rounded == int(rounded):
        return str(int(rounded))
    text = f"{rounded:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
