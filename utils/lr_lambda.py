"""Safe learning-rate lambdas: the thesis's ``lr_lambda`` strings without ``eval``.

The thesis configured LambdaLR and MultiplicativeLR with strings such as
``lambda epoch: 0.955**epoch`` or ``lambda epoch: pow(0.0001/0.001, 1/67)**epoch``. The original
ran them through ``eval``; here they are parsed with :mod:`ast` and walked by a tiny interpreter
that knows numbers, the lambda's one argument, arithmetic operators and a few math functions.
Anything else (attribute access, names, subscripts, comprehensions, ...) is rejected.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

_BINARY_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type, Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "pow": math.pow,
    "min": min,
    "max": max,
    "abs": abs,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "cos": math.cos,
    "sin": math.sin,
    # math.floor/ceil return ints, whose ** and * are exact and unbounded: keep everything float
    "floor": lambda x: float(math.floor(x)),
    "ceil": lambda x: float(math.ceil(x)),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_LENGTH = 300


class LambdaSyntaxError(ValueError):
    """The string is not an arithmetic one-argument lambda."""


def parse_lr_lambda(source: str) -> Callable[[int], float]:
    """Turn ``'lambda epoch: <arithmetic>'`` into a function of the epoch, without eval."""
    if not isinstance(source, str):
        raise LambdaSyntaxError(
            f"expected a string like 'lambda epoch: 0.955**epoch', got {source!r}"
        )
    if len(source) > MAX_LENGTH:
        raise LambdaSyntaxError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as err:
        raise LambdaSyntaxError(f"not valid syntax ({err.msg})") from None
    node = tree.body
    if not isinstance(node, ast.Lambda):
        raise LambdaSyntaxError("expected 'lambda <name>: <arithmetic expression>'")
    args = node.args
    if (
        len(args.args) != 1
        or args.posonlyargs
        or args.kwonlyargs
        or args.vararg
        or args.kwarg
        or args.defaults
    ):
        raise LambdaSyntaxError(
            "the lambda must take exactly one argument, e.g. 'lambda epoch: ...'"
        )
    arg_name = args.args[0].arg
    body = node.body
    _check(body, arg_name)

    # A plain closure (not a callable object) so LambdaLR.state_dict() stores nothing of it
    # and checkpoints stay loadable with weights_only=True.
    def lr_lambda(epoch: int) -> float:
        value = float(_evaluate(body, arg_name, float(epoch)))
        if not math.isfinite(value) or value < 0:  # a negative rate climbs the loss
            raise LambdaSyntaxError(
                f"the factor at epoch {epoch} is {value}, not a finite number >= 0"
            )
        return value

    lr_lambda.source = source  # type: ignore[attr-defined]
    lr_lambda(0)  # fail now, not after an epoch of training
    return lr_lambda


def _check(node: ast.AST, arg_name: str) -> None:
    """Reject every node that is not plain arithmetic on numbers and the argument."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise LambdaSyntaxError(f"only numbers are allowed, found {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id != arg_name and node.id not in _CONSTANTS:
            raise LambdaSyntaxError(
                f"unknown name '{node.id}' (only '{arg_name}', {', '.join(_CONSTANTS)} are known)"
            )
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY_OPS:
            raise LambdaSyntaxError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.left, arg_name)
        _check(node.right, arg_name)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY_OPS:
            raise LambdaSyntaxError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, arg_name)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise LambdaSyntaxError(
                f"only these functions may be called: {', '.join(sorted(_FUNCTIONS))}"
            )
        if node.keywords:
            raise LambdaSyntaxError("keyword arguments are not allowed")
        for arg in node.args:
            _check(arg, arg_name)
    else:
        raise LambdaSyntaxError(f"{type(node).__name__} is not allowed in an lr_lambda")


def _evaluate(node: ast.AST, arg_name: str, value: float) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)  # floats overflow at once where huge ints would hang
    if isinstance(node, ast.Name):
        return value if node.id == arg_name else _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, arg_name, value)
        right = _evaluate(node.right, arg_name, value)
        try:
            result = _BINARY_OPS[type(node.op)](left, right)
        except (OverflowError, ZeroDivisionError) as err:
            raise LambdaSyntaxError(f"arithmetic error at epoch {value:g}: {err}") from None
        if isinstance(result, complex):
            raise LambdaSyntaxError(f"the result at epoch {value:g} is not a real number")
        return result
    if isinstance(node, ast.UnaryOp):
        return _UNARY_OPS[type(node.op)](_evaluate(node.operand, arg_name, value))
    if isinstance(node, ast.Call):
        args = [_evaluate(a, arg_name, value) for a in node.args]
        try:
            return float(_FUNCTIONS[node.func.id](*args))  # type: ignore[union-attr]
        except (OverflowError, ValueError, TypeError) as err:
            raise LambdaSyntaxError(f"error calling {node.func.id}: {err}") from None  # type: ignore[union-attr]
    raise LambdaSyntaxError(f"{type(node).__name__} is not allowed")  # unreachable after _check
