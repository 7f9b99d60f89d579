"""Exact arithmetic over MCP. Expressions are parsed, never executed as code."""

from __future__ import annotations

import ast
import operator
from fractions import Fraction

from mcp.server.fastmcp import FastMCP

MAX_EXPRESSION_CHARS = 2000
MAX_EXPONENT = 10_000
MAX_DIGITS = 5_000
_MAX_BITS = int(MAX_DIGITS * 3.33)

server = FastMCP("memento-math", log_level="WARNING", instructions="Exact arithmetic: + - * / // % ** and parentheses.")

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class MathError(ValueError):
    pass


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1:
                raise MathError("only whole-number exponents are exact")
            if abs(right) > MAX_EXPONENT:
                raise MathError(f"exponent {right} is larger than {MAX_EXPONENT}")
            # Refuse before computing: the size of a power is known in advance.
            base_bits = max(left.numerator.bit_length(), left.denominator.bit_length())
            if base_bits * abs(right.numerator) > _MAX_BITS:
                raise MathError(f"result has more than {MAX_DIGITS} digits")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise MathError("division by zero")
        value = _BINARY[type(node.op)](left, right)
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_BITS:
            raise MathError(f"result has more than {MAX_DIGITS} digits")
        return Fraction(value)
    raise MathError(f"unsupported element {type(node).__name__}: only numbers, + - * / // % ** and ( )")


def evaluate(expression: str) -> Fraction:
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").replace(",", "")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise MathError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise MathError(f"not an arithmetic expression: {exc.msg}") from None
    return _eval(tree)


def format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    decimal = f"{float(value):.12g}"
    return f"{decimal} (exactly {value.numerator}/{value.denominator})"


@server.tool()
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. '17 * 23 + 4' or '(2^10 - 24) / 8'."""
    try:
        return format_number(evaluate(expression))
    except MathError as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from None


if __name__ == "__main__":
    from memento.mcp_servers._run import serve

    serve(server, "Exact arithmetic MCP server")
