import pytest

from memento.mcp_servers.math import MathError, calculate, evaluate, format_number


@pytest.mark.parametrize("expression,expected", [
    ("17 * 23 + 4", "395"), ("(2^10 - 24) / 8", "125"), ("1/3 + 1/6", "0.5 (exactly 1/2)"),
    ("0.1 + 0.2", "0.3 (exactly 3/10)"), ("-(3 - 5) ** 3", "8"), ("7 // 2 + 7 % 2", "4"), ("1,000 * 3", "3000"),
])
def test_exact_arithmetic(expression, expected):
    assert format_number(evaluate(expression)) == expected


@pytest.mark.parametrize("expression,problem", [
    ("__import__('os').system('echo hi')", "unsupported"), ("a + 1", "unsupported"), ("1 / 0", "division by zero"),
    ("9 ** 99999", "exponent"), ("2 ** 0.5", "whole-number"), ("1 +", "not an arithmetic expression"),
    ("(10 ** 900) ** 9", "digits"),
])
def test_refuses_what_is_not_safe_arithmetic(expression, problem):
    with pytest.raises(MathError, match=problem):
        evaluate(expression)


def test_tool_reports_errors_as_value_errors():
    with pytest.raises(ValueError, match="cannot evaluate '1 / 0'"):
        calculate("1 / 0")
