"""SOQL: a tokenizer and a recursive-descent parser producing a small AST.

Supported: SELECT fields (with parent paths like Account.Name), aggregate
functions (COUNT, COUNT_DISTINCT, SUM, AVG, MIN, MAX) with aliases, date
functions (CALENDAR_YEAR, DAY_ONLY, ...), GROUPING(), FIELDS(), TYPEOF and one
level of child subqueries; FROM [USING SCOPE]; WHERE with comparisons, LIKE,
[NOT] IN (with a literal list or a semi-join subquery), AND/OR/NOT and
parentheses; WITH SECURITY_ENFORCED|USER_MODE|SYSTEM_MODE; GROUP BY [ROLLUP|
CUBE]; HAVING; literals (strings with backslash escapes, numbers, null,
booleans, date and datetime literals, relative date literals such as
LAST_N_DAYS:7); ORDER BY with ASC/DESC and NULLS FIRST/LAST; LIMIT; OFFSET;
FOR VIEW|REFERENCE|UPDATE.

Errors carry the org's caret block (`ERROR at Row:1:Column:N`) so clients that
show them look the same as against a real org.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ferry.sandbox.salesforce.errors import ApiError


class SoqlError(ApiError):
    """A 400 with MALFORMED_QUERY / INVALID_FIELD / INVALID_TYPE and the caret block."""


def caret_message(soql: str, pos: int, text: str) -> str:
    # The org numbers columns from 1 and quotes the statement on its own line.
    line_start = soql.rfind("\n", 0, pos) + 1
    row = soql.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    line = soql.split("\n")[row - 1]
    return f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{text}"


def malformed(soql: str, pos: int, text: str) -> SoqlError:
    return SoqlError(400, "MALFORMED_QUERY", caret_message(soql, pos, text))


# --- tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # IDENT STRING NUMBER DATE DATETIME OP COMMA LPAREN RPAREN DOT COLON EOF
    text: str
    value: Any
    pos: int

    def is_kw(self, *words: str) -> bool:
        return self.kind == "IDENT" and self.text.upper() in words


_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\dT])")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCT = {",": "COMMA", "(": "LPAREN", ")": "RPAREN", ".": "DOT", ":": "COLON"}
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
            "%": "\\%", "_": "\\_"}  # \% and \_ stay escaped: they only mean something inside LIKE


def _read_string(soql: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(soql):
        ch = soql[i]
        if ch == "\\":
            if i + 1 >= len(soql):
                break
            nxt = soql[i + 1]
            if nxt not in _ESCAPES:
                raise malformed(soql, i, f"Invalid string literal '{soql[start:i + 2]}'. Illegal character sequence "
                                         f"'\\{nxt}' in string literal.")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == "'":
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise malformed(soql, start, f"line 1:{start}: mismatched character '<EOF>' expecting \"'\"")


def tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(soql)
    while i < n:
        ch = soql[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            text, end = _read_string(soql, i)
            tokens.append(Token("STRING", soql[i:end], text, i))
            i = end
            continue
        if ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], ch, ch, i))
            i += 1
            continue
        op = next((o for o in _OPS if soql.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token("OP", op, "!=" if op == "<>" else op, i))
            i += len(op)
            continue
        m = _DATETIME_RE.match(soql, i)
        if m:
            tokens.append(Token("DATETIME", m.group(), m.group(), i))
            i = m.end()
            continue
        m = _DATE_RE.match(soql, i)
        if m:
            tokens.append(Token("DATE", m.group(), m.group(), i))
            i = m.end()
            continue
        m = _NUMBER_RE.match(soql, i)
        if m and (ch.isdigit() or ch == "." or (ch in "+-" and i + 1 < n and (soql[i + 1].isdigit()))):
            text = m.group()
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(Token("NUMBER", text, value, i))
            i = m.end()
            continue
        m = _IDENT_RE.match(soql, i)
        if m:
            tokens.append(Token("IDENT", m.group(), m.group(), i))
            i = m.end()
            continue
        raise malformed(soql, i, f"unexpected token: '{ch}'")
    tokens.append(Token("EOF", "<EOF>", None, n))
    return tokens


# --- AST --------------------------------------------------------------------------------------------

AGGREGATE_FUNCTIONS = frozenset({"COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"})
DATE_FUNCTIONS = frozenset({"CALENDAR_MONTH", "CALENDAR_QUARTER", "CALENDAR_YEAR", "DAY_IN_MONTH", "DAY_IN_WEEK",
                            "DAY_IN_YEAR", "DAY_ONLY", "FISCAL_MONTH", "FISCAL_QUARTER", "FISCAL_YEAR", "HOUR_IN_DAY",
                            "WEEK_IN_MONTH", "WEEK_IN_YEAR"})
FUNCTIONS = AGGREGATE_FUNCTIONS | DATE_FUNCTIONS | {"GROUPING"}


@dataclass(slots=True)
class FieldPath:
    parts: list[str]
    pos: int
    alias: str | None = None
    alias_pos: int = 0

    @property
    def text(self) -> str:
        return ".".join(self.parts)


@dataclass(slots=True)
class FuncExpr:
    """`COUNT()`, `SUM(Amount) total`, `CALENDAR_YEAR(CreatedDate)`, `GROUPING(LeadSource)`."""

    name: str  # upper case
    field: FieldPath | None  # None only for COUNT()
    alias: str | None
    pos: int
    alias_pos: int = 0

    @property
    def aggregate(self) -> bool:
        return self.name in AGGREGATE_FUNCTIONS

    @property
    def text(self) -> str:
        return f"{self.name}({self.field.text if self.field else ''})"


CountExpr = FuncExpr  # the name older callers use for COUNT() / COUNT(field)


@dataclass(slots=True)
class Subquery:
    query: Query
    pos: int


@dataclass(slots=True)
class FieldsExpr:
    """`FIELDS(ALL)`, `FIELDS(STANDARD)` or `FIELDS(CUSTOM)`: every field of that kind, in describe order."""

    kind: str  # ALL STANDARD CUSTOM
    pos: int


@dataclass(slots=True)
class TypeOf:
    """`TYPEOF What WHEN Account THEN Phone ELSE Name END`: fields chosen by the polymorphic parent's type."""

    relationship: str
    pos: int
    whens: list[tuple[str, list[FieldPath]]]
    otherwise: list[FieldPath]


SelectItem = FieldPath | FuncExpr | Subquery | FieldsExpr | TypeOf
Operand = FieldPath | FuncExpr


@dataclass(slots=True)
class Literal:
    kind: str  # STRING NUMBER DATE DATETIME NULL BOOLEAN RELATIVE
    value: Any
    pos: int
    text: str = ""
    n: int | None = None  # for relative date literals with :n


@dataclass(slots=True)
class SemiJoin:
    """`Id IN (SELECT AccountId FROM Contact WHERE ...)`: the values come from a one-field subquery."""

    query: Query
    pos: int


@dataclass(slots=True)
class Comparison:
    path: Operand
    op: str  # = != < <= > >= LIKE IN NOTIN INCLUDES EXCLUDES
    value: Literal | list[Literal] | SemiJoin


@dataclass(slots=True)
class BoolOp:
    op: str  # AND OR
    items: list[Condition]


@dataclass(slots=True)
class Not:
    item: Condition


Condition = Comparison | BoolOp | Not


@dataclass(slots=True)
class OrderItem:
    path: Operand
    descending: bool = False
    nulls_last: bool | None = None  # None: the org's default (ASC nulls first, DESC nulls last)


@dataclass(slots=True)
class Query:
    select: list[SelectItem]
    sobject: str
    sobject_pos: int
    where: Condition | None = None
    group_by: list[Operand] = field(default_factory=list)
    group_kind: str = ""  # "", ROLLUP or CUBE
    group_pos: int = 0
    having: Condition | None = None
    order_by: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    for_clause: str | None = None  # VIEW, REFERENCE or UPDATE: accepted, nothing to lock or track here
    soql: str = ""


# --- parser -----------------------------------------------------------------------------------------

_RESERVED = frozenset({"SELECT", "FROM", "WHERE", "ORDER", "BY", "LIMIT", "OFFSET", "AND", "OR", "NOT", "IN",
                       "LIKE", "NULL", "TRUE", "FALSE", "ASC", "DESC", "NULLS", "FIRST", "LAST", "GROUP",
                       "HAVING", "INCLUDES", "EXCLUDES", "WITH", "FOR", "USING", "TYPEOF", "WHEN", "THEN", "ELSE",
                       "END", "ROLLUP", "CUBE"})
_OBJECT_KEYWORDS = frozenset({"ORDER", "GROUP"})
_WITH_MODES = ("SECURITY_ENFORCED", "USER_MODE", "SYSTEM_MODE")


class Parser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.tokens = tokenize(soql)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "EOF":
            self.i += 1
        return tok

    def unexpected(self, tok: Token | None = None) -> SoqlError:
        tok = tok or self.tok
        return malformed(self.soql, tok.pos, f"unexpected token: '{tok.text}'")

    def expect_kw(self, word: str) -> Token:
        if not self.tok.is_kw(word):
            raise self.unexpected()
        return self.advance()

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected()
        return self.advance()

    def parse(self) -> Query:
        query = self.query()
        if self.tok.kind != "EOF":
            raise self.unexpected()
        return query

    def query(self) -> Query:
        self.expect_kw("SELECT")
        select = self.select_list()
        self.expect_kw("FROM")
        obj = self.tok
        # Order and Group are sObjects as well as keywords: after FROM, Salesforce reads them as the object.
        if obj.kind != "IDENT" or obj.text.upper() in _RESERVED - _OBJECT_KEYWORDS:
            raise self.unexpected()
        self.advance()
        query = Query(select, obj.text, obj.pos, soql=self.soql)
        if self.tok.is_kw("USING"):  # USING SCOPE: every record is visible to the integration user anyway
            self.advance()
            self.expect_kw("SCOPE")
            self.expect("IDENT")
        if self.tok.is_kw("WHERE"):
            self.advance()
            query.where = self.condition()
        if self.tok.is_kw("WITH"):
            self.advance()
            if not self.tok.is_kw(*_WITH_MODES):
                raise self.unexpected()
            self.advance()
        if self.tok.is_kw("GROUP"):
            self.group_by(query)
        if self.tok.is_kw("HAVING"):
            self.advance()
            query.having = self.condition()
        self.order_limit_offset(query)
        if self.tok.is_kw("FOR"):
            self.advance()
            if not self.tok.is_kw("VIEW", "REFERENCE", "UPDATE"):
                raise self.unexpected()
            query.for_clause = self.advance().text.upper()
        return query

    def order_limit_offset(self, query: Query) -> None:
        """`[ORDER BY ...] [LIMIT n] [OFFSET n]`, which SOSL's RETURNING lists share."""
        if self.tok.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            query.order_by = self.order_list()
        if self.tok.is_kw("LIMIT"):
            self.advance()
            query.limit = self.non_negative_int()
        if self.tok.is_kw("OFFSET"):
            self.advance()
            query.offset = self.non_negative_int()

    def group_by(self, query: Query) -> None:
        query.group_pos = self.advance().pos
        self.expect_kw("BY")
        if self.tok.is_kw("ROLLUP", "CUBE") and self.peek().kind == "LPAREN":
            query.group_kind = self.advance().text.upper()
            self.advance()
            query.group_by = self.operand_list()
            self.expect("RPAREN")
            return
        query.group_by = self.operand_list()

    def operand_list(self) -> list[Operand]:
        items = [self.operand()]
        while self.tok.kind == "COMMA":
            self.advance()
            items.append(self.operand())
        return items

    def order_list(self) -> list[OrderItem]:
        items = [self.order_item()]
        while self.tok.kind == "COMMA":
            self.advance()
            items.append(self.order_item())
        return items

    def order_item(self) -> OrderItem:
        item = OrderItem(self.operand())
        if self.tok.is_kw("ASC", "DESC"):
            item.descending = self.advance().text.upper() == "DESC"
        if self.tok.is_kw("NULLS"):
            self.advance()
            if not self.tok.is_kw("FIRST", "LAST"):
                raise self.unexpected()
            item.nulls_last = self.advance().text.upper() == "LAST"
        return item

    def non_negative_int(self) -> int:
        tok = self.expect("NUMBER")
        if not isinstance(tok.value, int) or tok.value < 0:
            raise self.unexpected(tok)
        return tok.value

    def select_list(self) -> list[SelectItem]:
        items = [self.select_item()]
        while self.tok.kind == "COMMA":
            self.advance()
            items.append(self.select_item())
        return items

    def select_item(self) -> SelectItem:
        tok = self.tok
        if tok.kind == "LPAREN":
            self.advance()
            sub = self.query()
            self.expect("RPAREN")
            return Subquery(sub, tok.pos)
        if tok.is_kw("TYPEOF"):
            return self.typeof()
        if tok.is_kw("FIELDS") and self.peek().kind == "LPAREN":
            self.advance()
            self.advance()
            kind = self.tok
            if not kind.is_kw("ALL", "STANDARD", "CUSTOM"):
                raise self.unexpected()
            self.advance()
            self.expect("RPAREN")
            return FieldsExpr(kind.text.upper(), tok.pos)
        item = self.operand()
        if self.tok.kind == "IDENT" and self.tok.text.upper() not in _RESERVED:
            item.alias_pos = self.tok.pos
            item.alias = self.advance().text
        return item

    def operand(self) -> Operand:
        """A field path or a function call (aggregate, date function, GROUPING)."""
        tok = self.tok
        if tok.kind == "IDENT" and self.peek().kind == "LPAREN" and tok.text.upper() not in _RESERVED:
            name = tok.text.upper()
            if name not in FUNCTIONS:
                raise self.unexpected(self.peek())
            self.advance()
            self.advance()
            if name == "COUNT" and self.tok.kind == "RPAREN":
                self.advance()
                return FuncExpr(name, None, None, tok.pos)
            path = self.field_path()
            self.expect("RPAREN")
            return FuncExpr(name, path, None, tok.pos)
        return self.field_path()

    def typeof(self) -> TypeOf:
        start = self.advance()
        rel = self.expect("IDENT")
        whens: list[tuple[str, list[FieldPath]]] = []
        while self.tok.is_kw("WHEN"):
            self.advance()
            obj = self.expect("IDENT").text
            self.expect_kw("THEN")
            whens.append((obj, self.field_list()))
        otherwise: list[FieldPath] = []
        if self.tok.is_kw("ELSE"):
            self.advance()
            otherwise = self.field_list()
        if not whens:
            raise self.unexpected()
        self.expect_kw("END")
        return TypeOf(rel.text, start.pos, whens, otherwise)

    def field_list(self) -> list[FieldPath]:
        items = [self.field_path()]
        while self.tok.kind == "COMMA":
            self.advance()
            items.append(self.field_path())
        return items

    def field_path(self) -> FieldPath:
        first = self.tok
        if first.kind != "IDENT" or first.text.upper() in _RESERVED:
            raise self.unexpected()
        parts = [self.advance().text]
        while self.tok.kind == "DOT":
            self.advance()
            parts.append(self.expect("IDENT").text)
        return FieldPath(parts, first.pos)

    def condition(self) -> Condition:
        items = [self.and_condition()]
        while self.tok.is_kw("OR"):
            self.advance()
            items.append(self.and_condition())
        return items[0] if len(items) == 1 else BoolOp("OR", items)

    def and_condition(self) -> Condition:
        items = [self.not_condition()]
        while self.tok.is_kw("AND"):
            self.advance()
            items.append(self.not_condition())
        return items[0] if len(items) == 1 else BoolOp("AND", items)

    def not_condition(self) -> Condition:
        if self.tok.is_kw("NOT"):
            self.advance()
            return Not(self.not_condition())
        if self.tok.kind == "LPAREN":
            self.advance()
            inner = self.condition()
            self.expect("RPAREN")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        path = self.operand()
        tok = self.tok
        if tok.kind == "OP":
            self.advance()
            return Comparison(path, tok.value, self.literal())
        if tok.is_kw("LIKE"):
            self.advance()
            return Comparison(path, "LIKE", self.literal())
        if tok.is_kw("IN", "INCLUDES", "EXCLUDES"):
            self.advance()
            op = tok.text.upper()
            return Comparison(path, op, self.semi_join() if op == "IN" and self._at_subquery() else self.literal_list())
        if tok.is_kw("NOT") and self.peek().is_kw("IN"):
            self.advance()
            self.advance()
            return Comparison(path, "NOTIN", self.semi_join() if self._at_subquery() else self.literal_list())
        raise self.unexpected()

    def _at_subquery(self) -> bool:
        return self.tok.kind == "LPAREN" and self.peek().is_kw("SELECT")

    def semi_join(self) -> SemiJoin:
        start = self.expect("LPAREN")
        inner = self.query()
        self.expect("RPAREN")
        return SemiJoin(inner, start.pos + 1)

    def literal_list(self) -> list[Literal]:
        self.expect("LPAREN")
        values = [self.literal()]
        while self.tok.kind == "COMMA":
            self.advance()
            values.append(self.literal())
        self.expect("RPAREN")
        return values

    def literal(self) -> Literal:
        tok = self.tok
        if tok.kind in ("STRING", "NUMBER", "DATE", "DATETIME"):
            self.advance()
            return Literal(tok.kind, tok.value, tok.pos, tok.text)
        if tok.is_kw("NULL"):
            self.advance()
            return Literal("NULL", None, tok.pos, tok.text)
        if tok.is_kw("TRUE", "FALSE"):
            self.advance()
            return Literal("BOOLEAN", tok.text.upper() == "TRUE", tok.pos, tok.text)
        if tok.kind == "IDENT" and tok.text.upper() not in _RESERVED:
            # A relative date literal (TODAY, LAST_N_DAYS:7); the executor decides which ones it knows.
            self.advance()
            n = None
            if self.tok.kind == "COLON":
                self.advance()
                n = self.non_negative_int()
            return Literal("RELATIVE", tok.text.upper(), tok.pos, tok.text, n)
        raise self.unexpected()


def parse(soql: str) -> Query:
    return Parser(soql).parse()
