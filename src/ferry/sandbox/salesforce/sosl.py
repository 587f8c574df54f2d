"""SOSL: `FIND {term} IN scope FIELDS RETURNING Obj(fields WHERE ... ORDER BY ... LIMIT n), ... LIMIT n`.

The search expression inside the braces is parsed into a small tree (words and "quoted phrases", `*` and `?`
wildcards, AND / OR / AND NOT / NOT and parentheses; words side by side must all match, as in the org) and
matched against the words of a record's searchable fields: the search index splits text at spaces and
punctuation and compares case-insensitively. The RETURNING object lists reuse the SOQL parser for their field
lists, WHERE and ORDER BY, so filters behave (and fail) as they do in a query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ferry.sandbox.salesforce import soql as ast
from ferry.sandbox.salesforce.errors import ApiError
from ferry.sandbox.salesforce.soql import Parser, SoqlError, caret_message

SCOPES = ("ALL", "NAME", "EMAIL", "PHONE", "SIDEBAR")
MAX_LIMIT = 2000
_SPECIAL = set("&|!(){}[]^\"~*?:\\'+-")


def malformed_search(sosl: str, pos: int, text: str) -> ApiError:
    return ApiError(400, "MALFORMED_SEARCH", caret_message(sosl, pos, text))


def no_search_term() -> ApiError:
    return ApiError(400, "MALFORMED_SEARCH", "No search term found. The search term must be enclosed in braces.")


# --- the search expression ------------------------------------------------------------------------------


@dataclass(slots=True)
class Term:
    """A word or a "quoted phrase": a sequence of word patterns that must match consecutive words."""

    text: str
    patterns: list[re.Pattern[str]]


@dataclass(slots=True)
class Op:
    op: str  # AND OR NOT
    items: list[SearchExpr]


SearchExpr = Term | Op


def _word_pattern(word: str) -> re.Pattern[str]:
    out = []
    for ch in word:
        out.append(r"\w*" if ch == "*" else r"\w" if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z")


def words_of(text: str) -> list[str]:
    """How the index splits text: runs of letters and digits, lower-cased."""
    return re.findall(r"\w+", text.lower())


def make_term(text: str) -> Term:
    # Wildcards stay inside the word they belong to; other punctuation splits words, as in the index.
    pieces = re.findall(r"[\w*?]+", text.lower())
    return Term(text, [_word_pattern(p) for p in pieces])


class _TermParser:
    """Parses the text between the braces; positions are offsets into the whole SOSL statement."""

    def __init__(self, sosl: str, start: int, text: str) -> None:
        self.sosl = sosl
        self.start = start
        self.tokens = self._lex(text)
        self.i = 0

    def _lex(self, text: str) -> list[tuple[str, str, int]]:
        tokens: list[tuple[str, str, int]] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch.isspace():
                i += 1
            elif ch in "()":
                tokens.append((ch, ch, i))
                i += 1
            elif ch == '"':
                end = text.find('"', i + 1)
                if end < 0:
                    raise malformed_search(self.sosl, self.start + i, "unbalanced quotes in search term")
                tokens.append(("PHRASE", text[i + 1:end], i))
                i = end + 1
            else:
                word, i = self._word(text, i)
                upper = word[1].upper()
                tokens.append((upper if upper in ("AND", "OR", "NOT") else "WORD", word[1], word[0]))
        return tokens

    @staticmethod
    def _word(text: str, i: int) -> tuple[tuple[int, str], int]:
        start, out = i, []
        while i < len(text) and not text[i].isspace() and text[i] not in '()"':
            if text[i] == "\\" and i + 1 < len(text):  # an escaped special character is literal text
                out.append(text[i + 1])
                i += 2
                continue
            out.append(text[i])
            i += 1
        return (start, "".join(out)), i

    def parse(self) -> SearchExpr:
        expr = self.or_expr()
        if self.i < len(self.tokens):
            _, text, pos = self.tokens[self.i]
            raise malformed_search(self.sosl, self.start + pos, f"unexpected token in search term: '{text}'")
        return expr

    def _peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def or_expr(self) -> SearchExpr:
        items = [self.and_expr()]
        while self._peek() == "OR":
            self.i += 1
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Op("OR", items)

    def and_expr(self) -> SearchExpr:
        items = [self.unary()]
        while self._peek() in ("AND", "NOT", "WORD", "PHRASE", "("):
            if self._peek() == "AND":
                self.i += 1
            items.append(self.unary())
        return items[0] if len(items) == 1 else Op("AND", items)

    def unary(self) -> SearchExpr:
        kind = self._peek()
        if kind is None:
            raise malformed_search(self.sosl, self.start, "search term is incomplete")
        _, text, pos = self.tokens[self.i]
        self.i += 1
        if kind == "NOT":
            return Op("NOT", [self.unary()])
        if kind == "(":
            inner = self.or_expr()
            if self._peek() != ")":
                raise malformed_search(self.sosl, self.start + pos, "unbalanced parentheses in search term")
            self.i += 1
            return inner
        if kind in ("WORD", "PHRASE"):
            return make_term(text)
        raise malformed_search(self.sosl, self.start + pos, f"unexpected token in search term: '{text}'")


def _terms(expr: SearchExpr) -> list[Term]:
    return [expr] if isinstance(expr, Term) else [t for item in expr.items for t in _terms(item)]


def parse_search_text(text: str, sosl: str | None = None, start: int = 0) -> SearchExpr:
    """The search expression; too short a search is the org's INVALID_SEARCH."""
    expr = _TermParser(sosl if sosl is not None else text, start, text).parse()
    significant = "".join(c for t in _terms(expr) for c in t.text if c not in "*?")
    if len(significant.strip()) < 2:
        raise ApiError(400, "INVALID_SEARCH", f"search term must be longer than one character: {text.strip()}")
    return expr


# --- the statement --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Returning:
    """One RETURNING object: a SOQL-shaped query (fields, WHERE, ORDER BY, LIMIT, OFFSET) over it."""

    query: ast.Query


@dataclass(slots=True)
class Search:
    text: str
    expr: SearchExpr
    scope: str = "ALL"
    returning: list[Returning] = field(default_factory=list)
    limit: int = MAX_LIMIT
    sosl: str = ""


_FIND = re.compile(r"\s*FIND\b\s*", re.IGNORECASE)


def _closing_brace(sosl: str, start: int) -> int:
    i = start + 1
    while i < len(sosl):
        if sosl[i] == "\\":
            i += 2
            continue
        if sosl[i] == "}":
            return i
        i += 1
    raise no_search_term()


class _SoslParser(Parser):
    """The clauses after the braces, with the SOQL parser's field lists, conditions and ORDER BY."""

    def __init__(self, sosl: str, after: int) -> None:
        # Padding keeps token positions equal to offsets in the whole statement, for the caret messages.
        super().__init__(" " * after + sosl[after:])
        self.soql = sosl

    def clauses(self, search: Search) -> None:
        if self.tok.is_kw("IN"):
            self.advance()
            scope = self.expect("IDENT")
            if scope.text.upper() not in SCOPES:
                raise self.unexpected(scope)
            search.scope = scope.text.upper()
            self.expect_kw("FIELDS")
        if self.tok.is_kw("RETURNING"):
            self.advance()
            search.returning.append(self.returning())
            while self.tok.kind == "COMMA":
                self.advance()
                search.returning.append(self.returning())
        if self.tok.is_kw("WITH"):
            self.advance()
            self.expect_kw("SPELL_CORRECTION")
            if self.tok.kind != "OP" or self.tok.text != "=":
                raise self.unexpected()
            self.advance()
            if not self.tok.is_kw("TRUE", "FALSE"):
                raise self.unexpected()
            self.advance()
        if self.tok.is_kw("LIMIT"):
            self.advance()
            search.limit = min(self.non_negative_int(), MAX_LIMIT)
        if self.tok.kind != "EOF":
            raise self.unexpected()

    def returning(self) -> Returning:
        obj = self.expect("IDENT")
        query = ast.Query([ast.FieldPath(["Id"], obj.pos)], obj.text, obj.pos, soql=self.soql)
        if self.tok.kind == "LPAREN":
            self.advance()
            query.select = list(self.field_list())
            if self.tok.is_kw("WHERE"):
                self.advance()
                query.where = self.condition()
            self.order_limit_offset(query)
            self.expect("RPAREN")
        return Returning(query)


def parse_sosl(sosl: str) -> Search:
    m = _FIND.match(sosl)
    if m is None:
        first = len(sosl) - len(sosl.lstrip())
        raise malformed_search(sosl, first, f"unexpected token: '{sosl.split()[0] if sosl.split() else '<EOF>'}'")
    brace = m.end()
    if brace >= len(sosl) or sosl[brace] != "{":
        raise no_search_term()
    end = _closing_brace(sosl, brace)
    text = sosl[brace + 1:end]
    search = Search(text, parse_search_text(text, sosl, brace + 1), sosl=sosl)
    try:
        _SoslParser(sosl, end + 1).clauses(search)
    except SoqlError as err:
        if err.error_code == "MALFORMED_QUERY":
            raise ApiError(400, "MALFORMED_SEARCH", err.message) from None
        raise
    return search
