"""Exact arithmetic over MCP. Expressions are parsed, never executed as code."""

from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction

from mcp.server.fastmcp import FastMCP

MAX_EXPRESSION_CHARS = 2000
MAX_EXPONENT = 10_000
MAX_DIGITS = 5_000
_MAX_BITS = int(MAX_DIGITS * 3.33)

server = FastMCP("memento-math", log_level="WARNING",
                 instructions="Exact arithmetic (+ - * / // % ** and parentheses) and common math functions.")

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# Functions give floating-point results; the rest of the arithmetic stays exact.
_FUNCTIONS = {name: getattr(math, name) for name in (
    "sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
    "sinh", "cosh", "tanh", "degrees", "radians", "hypot")}
_FUNCTIONS |= {"abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil, "factorial": math.factorial,
               "gcd": math.gcd, "lcm": math.lcm, "comb": math.comb, "perm": math.perm, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_INTEGER_ONLY = {"factorial", "gcd", "lcm", "comb", "perm"}


class MathError(ValueError):
    pass


Number = Fraction | float


def _call(node: ast.Call) -> Number:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in _FUNCTIONS or node.keywords:
        raise MathError(f"unknown function {name or ast.unparse(node.func)!r}: use one of {', '.join(sorted(_FUNCTIONS))}")
    args = [_eval(arg) for arg in node.args]
    if name in _INTEGER_ONLY:
        if any(isinstance(a, float) or a.denominator != 1 for a in args):
            raise MathError(f"{name} takes whole numbers")
        if name in {"factorial", "comb", "perm"} and any(a > 5000 for a in args):
            raise MathError(f"{name} arguments above 5000 are refused")
        return Fraction(_FUNCTIONS[name](*(int(a) for a in args)))
    if name == "round":
        if len(args) == 2 and (isinstance(args[1], float) or args[1].denominator != 1 or abs(args[1]) > 100):
            raise MathError("round takes a whole number of digits, at most 100")
        args = [args[0], *(int(a) for a in args[1:])]
    try:
        exact = name in {"abs", "min", "max", "round"}
        value = _FUNCTIONS[name](*args) if exact else _FUNCTIONS[name](*(float(a) for a in args))
    except (ValueError, OverflowError, TypeError) as exc:
        raise MathError(f"{name}: {exc}") from None
    return _bounded(value if isinstance(value, (Fraction, float)) else Fraction(value))


def _bounded(value: Number) -> Number:
    if isinstance(value, Fraction) and max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_BITS:
        raise MathError(f"result has more than {MAX_DIGITS} digits")
    return value


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(left, float) or isinstance(right, float):
            return _float_op(node.op, float(left), float(right))
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1:
                return _float_op(node.op, float(left), float(right))
            if abs(right) > MAX_EXPONENT:
                raise MathError(f"exponent {right} is larger than {MAX_EXPONENT}")
            # Refuse before computing: the size of a power is known in advance.
            base_bits = max(left.numerator.bit_length(), left.denominator.bit_length())
            if base_bits * abs(right.numerator) > _MAX_BITS:
                raise MathError(f"result has more than {MAX_DIGITS} digits")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise MathError("division by zero")
        return _bounded(Fraction(_BINARY[type(node.op)](left, right)))
    raise MathError(f"unsupported element {type(node).__name__}: only numbers, + - * / // % **, ( ), "
                    "math functions and pi, e, tau")


def _float_op(op: ast.operator, left: float, right: float) -> float:
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
        raise MathError("division by zero")
    try:
        value = _BINARY[type(op)](left, right)
    except OverflowError:
        raise MathError("result too large") from None
    if isinstance(value, complex):
        raise MathError("the result is not a real number")
    return float(value)


def evaluate(expression: str) -> Number:
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise MathError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise MathError(f"not an arithmetic expression: {exc.msg}") from None
    return _eval(tree)


def format_number(value: Number) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MathError("the result is not finite")
        return f"{value:.15g}"
    if value.denominator == 1:
        return str(value.numerator)
    decimal = f"{float(value):.12g}"
    return f"{decimal} (exactly {value.numerator}/{value.denominator})"


@server.tool()
def calculate(expression: str) -> str:
    """Evaluate an expression: exact arithmetic such as '17 * 23 + 4' or '(2^10 - 24) / 8', and math
    functions (sqrt, log, sin, factorial, gcd, ...) and constants (pi, e) in floating point."""
    try:
        return format_number(evaluate(expression))
    except MathError as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from None


if __name__ == "__main__":
    from memento.mcp_servers._run import serve

    serve(server, "Exact arithmetic MCP server")
