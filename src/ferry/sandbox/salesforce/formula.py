"""A subset of the Salesforce formula language, enough for the validation rules integrations trip over.

A validation rule's formula is true when the record is *invalid*. Supported:
- literals: "text" or 'text', numbers, TRUE, FALSE, NULL; field names of the rule's own object;
- operators: + - * / (numbers), & (text), = == != <> < <= > >=, && ||, ! (not), parentheses;
- functions: AND, OR, NOT, IF, ISBLANK, ISNULL, BLANKVALUE, LEN, ISPICKVAL, TEXT, VALUE, REGEX, BEGINS,
  CONTAINS, LOWER, UPPER, TRIM, ISNEW, ISCHANGED, PRIORVALUE.
Blank fields are treated as blanks (not zero): a comparison with a blank is false, arithmetic gives blank.
Cross-object references (`Account.Name`) are not supported; a formula using one is refused at load time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>\d+(?:\.\d+)?) |
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*') |
    (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*) |
    (?P<op>&&|\|\||==|!=|<>|<=|>=|[-+*/&=<>!(),])
)""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


class FormulaError(ValueError):
    """A formula outside the supported subset, or with a syntax error."""


@dataclass(slots=True)
class Context:
    record: dict[str, Any]
    old: dict[str, Any] | None  # None on insert
    field_name: Callable[[str], str]  # any spelling -> the canonical field name


Node = Callable[[Context], Any]


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> float | None:
    if _blank(value) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FormulaError(f"not a number: {value!r}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("=", "==", "!=", "<>"):
        if _blank(left) and _blank(right):
            same = True
        elif _is_number(left) or _is_number(right):
            same = _number(left) == _number(right)
        else:
            same = left == right
        return same if op in ("=", "==") else not same
    if _blank(left) or _blank(right):
        return False
    a, b = (left, right) if isinstance(left, str) and isinstance(right, str) else (_number(left), _number(right))
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])  # type: ignore[operator]


def _arith(op: str, left: Any, right: Any) -> Any:
    if op == "&":
        return _text(left) + _text(right)
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return None
    if op == "/":
        return None if b == 0 else a / b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


class _Parser:
    def __init__(self, text: str, known_field: Callable[[str], bool]) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.known_field = known_field

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise FormulaError(f"unexpected character at {pos}: {text[pos:pos + 10]!r}")
            kind = m.lastgroup or ""
            tokens.append((kind, m.group(kind)))
            pos = m.end()
        return tokens

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise FormulaError(f"expected {value or 'more'}, got {tok[1] if tok else 'the end'}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise FormulaError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("=", "==", "!=", "<>"), ("<", "<=", ">", ">="),
                                            ("+", "-", "&"), ("*", "/"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (tok := self.peek()) is not None and tok[0] == "op" and tok[1] in self._LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = self._combine(op, left, right)
        return left

    @staticmethod
    def _combine(op: str, left: Node, right: Node) -> Node:
        if op == "||":
            return lambda c: bool(left(c)) or bool(right(c))
        if op == "&&":
            return lambda c: bool(left(c)) and bool(right(c))
        if op in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            return lambda c: _compare(op, left(c), right(c))
        return lambda c: _arith(op, left(c), right(c))

    def unary(self) -> Node:
        tok = self.peek()
        if tok == ("op", "!"):
            self.take()
            inner = self.unary()
            return lambda c: not inner(c)
        if tok == ("op", "-"):
            self.take()
            inner = self.unary()
            return lambda c: _arith("-", 0, inner(c))
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            number = float(value)
            return lambda c: number
        if kind == "str":
            text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), value[1:-1])
            return lambda c: text
        if kind == "op" and value == "(":
            node = self.binary(0)
            self.take(")")
            return node
        if kind != "name":
            raise FormulaError(f"unexpected {value!r}")
        upper = value.upper()
        if self.peek() == ("op", "("):
            self.take("(")
            args: list[Node] = []
            if self.peek() != ("op", ")"):
                args.append(self.binary(0))
                while self.peek() == ("op", ","):
                    self.take(",")
                    args.append(self.binary(0))
            self.take(")")
            return self._function(upper, args)
        if upper in ("TRUE", "FALSE"):
            flag = upper == "TRUE"
            return lambda c: flag
        if upper == "NULL":
            return lambda c: None
        if "." in value:
            raise FormulaError(f"cross-object reference {value} is not supported")
        if not self.known_field(value):
            raise FormulaError(f"unknown field {value}")
        return lambda c: c.record.get(c.field_name(value))

    def _function(self, name: str, args: list[Node]) -> Node:
        spec = _FUNCTIONS.get(name)
        if spec is None:
            raise FormulaError(f"unsupported function {name}")
        arity, build = spec
        if len(args) not in arity:
            raise FormulaError(f"{name} takes {' or '.join(str(n) for n in arity)} argument(s), got {len(args)}")
        if name in ("ISCHANGED", "PRIORVALUE"):
            # These take a field, not a value: resolve the name now.
            # The argument must be exactly one field name: `(`, name, `)` are the last three tokens.
            if self.tokens[self.pos - 3] != ("op", "(") or self.tokens[self.pos - 2][0] != "name":
                raise FormulaError(f"{name} needs a field name")
            field = self.tokens[self.pos - 2][1]
            return build([lambda c, f=field: f])  # type: ignore[misc]
        return build(args)


def _regex(args: list[Node]) -> Node:
    def run(c: Context) -> bool:
        text, pattern = args[0](c), args[1](c)
        # Salesforce REGEX matches the whole text; a blank text never matches.
        return not _blank(text) and re.fullmatch(_text(pattern), _text(text)) is not None
    return run


def _is_changed(args: list[Node]) -> Node:
    def run(c: Context) -> bool:
        name = c.field_name(args[0](c))
        return c.old is not None and c.old.get(name) != c.record.get(name)
    return run


def _prior_value(args: list[Node]) -> Node:
    def run(c: Context) -> Any:
        name = c.field_name(args[0](c))
        return (c.old or c.record).get(name)
    return run


_FUNCTIONS: dict[str, tuple[tuple[int, ...], Callable[[list[Node]], Node]]] = {
    "AND": ((*range(1, 50),), lambda a: lambda c: all(bool(x(c)) for x in a)),
    "OR": ((*range(1, 50),), lambda a: lambda c: any(bool(x(c)) for x in a)),
    "NOT": ((1,), lambda a: lambda c: not a[0](c)),
    "IF": ((3,), lambda a: lambda c: a[1](c) if a[0](c) else a[2](c)),
    "ISBLANK": ((1,), lambda a: lambda c: _blank(a[0](c))),
    "ISNULL": ((1,), lambda a: lambda c: _blank(a[0](c))),
    "BLANKVALUE": ((2,), lambda a: lambda c: a[1](c) if _blank(a[0](c)) else a[0](c)),
    "LEN": ((1,), lambda a: lambda c: float(len(_text(a[0](c))))),
    "ISPICKVAL": ((2,), lambda a: lambda c: _text(a[0](c)) == _text(a[1](c))),
    "TEXT": ((1,), lambda a: lambda c: _text(a[0](c))),
    "VALUE": ((1,), lambda a: lambda c: _number(a[0](c))),
    "REGEX": ((2,), _regex),
    "BEGINS": ((2,), lambda a: lambda c: _text(a[0](c)).startswith(_text(a[1](c)))),
    "CONTAINS": ((2,), lambda a: lambda c: _text(a[1](c)) in _text(a[0](c))),
    "LOWER": ((1,), lambda a: lambda c: _text(a[0](c)).lower()),
    "UPPER": ((1,), lambda a: lambda c: _text(a[0](c)).upper()),
    "TRIM": ((1,), lambda a: lambda c: _text(a[0](c)).strip()),
    "ISNEW": ((0,), lambda a: lambda c: c.old is None),
    "ISCHANGED": ((1,), _is_changed),
    "PRIORVALUE": ((1,), _prior_value),
}


def compile_formula(text: str, known_field: Callable[[str], bool]) -> Node:
    """Parse ``text`` into a callable on a Context; raises FormulaError outside the subset."""
    if not text.strip():
        raise FormulaError("the formula is empty")
    return _Parser(text, known_field).parse()
