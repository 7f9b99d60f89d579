import pytest

from memento.mcp_servers.math import MathError, calculate, evaluate, format_number


@pytest.mark.parametrize("expression,expected", [
    ("17 * 23 + 4", "395"), ("(2^10 - 24) / 8", "125"), ("1/3 + 1/6", "0.5 (exactly 1/2)"),
    ("0.1 + 0.2", "0.3 (exactly 3/10)"), ("-(3 - 5) ** 3", "8"), ("7 // 2 + 7 % 2", "4"),
    ("sqrt(2)", "1.4142135623731"), ("2 ** 0.5", "1.4142135623731"), ("factorial(20)", "2432902008176640000"),
    ("gcd(84, 36) + lcm(4, 6)", "24"), ("round(pi * 100) / 100", "3.14 (exactly 157/50)"),
    ("abs(-7/2)", "3.5 (exactly 7/2)"), ("round(2/3, 2)", "0.67 (exactly 67/100)"),
])
def test_exact_arithmetic(expression, expected):
    assert format_number(evaluate(expression)) == expected


@pytest.mark.parametrize("expression,problem", [
    ("__import__('os').system('echo hi')", "unknown function"), ("().__class__", "unsupported"),
    ("a + 1", "unsupported"), ("1 / 0", "division by zero"),
    ("9 ** 99999", "exponent"), ("1 +", "not an arithmetic expression"), ("(10 ** 900) ** 9", "digits"),
    ("open('x')", "unknown function 'open'"), ("sqrt(-1)", "math domain"), ("factorial(2.5)", "whole numbers"),
    ("factorial(100000)", "above 5000"), ("(-8) ** 0.5", "not a real number"), ("exp(1000)", "range"),
    ("2.0 ** 5000.5", "too large"), ("factorial(4000) * factorial(4000)", "digits"), ("round(1.5, 0.5)", "whole number"),
])
def test_refuses_what_is_not_safe_arithmetic(expression, problem):
    with pytest.raises(MathError, match=problem):
        evaluate(expression)


def test_tool_reports_errors_as_value_errors():
    with pytest.raises(ValueError, match="cannot evaluate '1 / 0'"):
        calculate("1 / 0")
