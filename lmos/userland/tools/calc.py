"""The pure core of the ``calc`` tool: a safe arithmetic evaluator.

Apps hand the model's text to this tool, so the expression is untrusted input.
``eval`` would run arbitrary code; instead the expression is parsed with
:mod:`ast` and only a whitelist of node types is walked (numbers, ``+ - * / //
% **``, unary plus/minus, parentheses, and the functions ``sqrt abs round min
max`` called by name).  Exponents and intermediate results are
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
from decimal import ROUND_HALF_UP, Decimal

from lmos.errors import Errno, SyscallError

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 64
MAX_ABS_RESULT = 10**30
MAX_DEPTH = 100
MAX_ARGS = 20
MAX_ROUND_DIGITS = 10

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


def _sqrt(x: int | float) -> int | float:
    """Exact for perfect squares (``sqrt(144)`` is the int 12, even past float precision)."""
    if x < 0:
        raise _fail("square root of a negative number")
    if isinstance(x, int):
        root = math.isqrt(x)
        if root * root == x:
            return root
    return math.sqrt(x)


def _round(x: int | float, digits: int | float = 0) -> int | float:
    """Half away from zero, as people round (Python's ``round`` gives ``round(2.5) == 2``)."""
    if not isinstance(digits, int) or not 0 <= digits <= MAX_ROUND_DIGITS:
        raise _fail(f"round: digits must be a whole number from 0 to {MAX_ROUND_DIGITS}")
    if isinstance(x, int):
        return x
    value = Decimal(repr(x)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return int(value) if digits == 0 else float(value)


# name -> (function, least args, most args)
_FUNCTIONS: dict[str, tuple[Callable[..., int | float], int, int]] = {
    "sqrt": (_sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 1, MAX_ARGS),
    "max": (max, 1, MAX_ARGS),
}


def _call(node: ast.Call, depth: int) -> int | float:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in _FUNCTIONS:
        raise _fail(f"unsupported function (allowed: {', '.join(_FUNCTIONS)})")
    fn, least, most = _FUNCTIONS[name]
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise _fail(f"{name}: positional arguments only")
    if not least <= len(node.args) <= most:
        count = str(least) if least == most else f"{least} to {most}"
        raise _fail(f"{name} takes {count} argument{'' if most == 1 else 's'}")
    args = [_eval(a, depth + 1) for a in node.args]
    return _check(fn(*args))


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
    if isinstance(node, ast.Call):
        return _call(node, depth)
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
