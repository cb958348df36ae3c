"""The term grammar of melsm formulas: what a formula may contain, checked before anything runs.

A formula is data, never code. formulaic, which builds the model matrices, evaluates the
factors of a formula (``log(x)``, ``I(x ** 2)``) as Python expressions; this module parses
every formula with a grammar of its own and accepts only

- column names (``x``, or ``` `any text` ``` in backticks; never called, never an attribute);
- numbers, and the formula operators ``+ - * / : ** ^`` with parentheses; at the formula
  level a number is ``0`` or ``1`` (the intercept) and a power a small whole number;
- the functions of ``FUNCTIONS`` (listed in ``melsm.model.vocabulary``): ``C(column)`` (or
  ``C(column, coding)`` with a coding of ``CONTRASTS``, ``C(sg, contr.treatment('mixed'))``),
  ``I(arithmetic)``, ``log``, ``log2``, ``log10``, ``exp``, ``sqrt``, ``abs`` (also as
  ``np.log`` ...), ``center``, ``scale``/``standardize``, ``poly(expression, degree)``;
- inside ``I(...)`` and the functions: ``+ - * / **``, comparisons (``x > 0``), numbers,
  columns, and quoted text only as one side of ``==`` or ``!=`` (``I(sex == 'f')``).

Anything else (attribute access, other calls, subscripts, lambdas, keywords, braces,
dunder names, ``np.<...>`` chains) is refused with a one-line ``MelsmInputError`` naming
the term, before any evaluation. The formula handed on is rebuilt from the parse
(``Terms.text``), so what is evaluated is exactly what was checked; it is evaluated with
only the functions above in scope (``melsm.model.matrices``), no module. Arithmetic is
computed in floats (``melsm.model.design`` casts the columns), and a power of two numbers
(``I(10 ** 10 ** 10)``, which Python would compute exactly) is refused.

See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from melsm.errors import MelsmInputError

# The lists of functions and codings are also imported from here, where formulas are checked.
from melsm.model.vocabulary import ALIASES, CONTRASTS, FUNCTIONS, MATH, STATEFUL, Token, column_text, quote, tokens

#: Limits on a formula part: characters, nesting, model terms, a power of terms, poly's degree.
MAX_LENGTH = 10_000
MAX_DEPTH = 40
MAX_TERMS = 500
MAX_POWER = 5
MAX_POLY_DEGREE = 10

_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


@dataclass
class Terms:
    """One checked formula part (the right of ``~``, or a random term's left of ``|``).

    ``text``: the rebuilt formula for formulaic; ``variables``: the columns it uses;
    ``numeric``: those used other than as ``C(column)`` (they must be numeric);
    ``functions``: the functions it calls; ``terms``: the model terms, each a tuple of
    factors ``(kind, detail)`` with kind ``"categorical"`` (detail: the column),
    ``"poly"`` (detail: the degree) or ``"numeric"``, to bound the matrix size."""

    text: str
    variables: frozenset = field(default_factory=frozenset)
    numeric: frozenset = field(default_factory=frozenset)
    functions: frozenset = field(default_factory=frozenset)
    terms: tuple = ()


class _Parser:
    """Recursive descent over the tokens of one formula part. Formula level (Wilkinson
    operators) and arithmetic level (inside function calls) have their own methods; each
    returns the rebuilt text, and the formula level also the set of terms it denotes."""

    def __init__(self, text: str, where: str):
        self.where, self.source = where, text
        self.tokens = tokens(text, where)
        self.i = 0
        self.depth = 0
        self.variables: set[str] = set()
        self.numeric: set[str] = set()
        self.functions: set[str] = set()

    # ---- helpers --------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def accept(self, *ops: str) -> str | None:
        if self.tok.kind == "op" and self.tok.text in ops:
            return self.take().text
        return None

    def expect(self, op: str, context: str) -> None:
        if not self.accept(op):
            self.fail(f"expected '{op}' {context}")

    def fail(self, what: str):
        token = self.tok
        shown = "the end" if token.kind == "end" else quote(token.text, 40)
        raise MelsmInputError(f"{self.where}: {what} at {shown} in {quote(self.source)}")

    def nest(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise MelsmInputError(f"{self.where}: {quote(self.source)} nests deeper than {MAX_DEPTH} levels")

    def unnest(self):
        self.depth -= 1

    def inside(self, parse, closing: str):
        """``parse()`` of what follows an opening '(' already taken, then the ')' closing it."""
        self.nest()
        value = parse()
        self.expect(")", f"to close {closing}")
        self.unnest()
        return value

    def column(self, token: Token, numeric: bool) -> str:
        name = token.text[1:-1] if token.kind == "backtick" else token.text
        if not name.strip():
            self.fail("an empty column name")
        if token.kind == "name" and name.startswith("__") and name.endswith("__"):
            self.fail(f"the name {quote(name)} is not allowed")
        self.variables.add(name)
        if numeric:
            self.numeric.add(name)
        return column_text(name)

    def call_name(self, token: Token) -> str:
        """The function a call token names, or a one-line refusal."""
        name = ALIASES.get(token.text, token.text)
        if name not in FUNCTIONS:
            what = "attribute access or a function" if "." in token.text else "function"
            raise MelsmInputError(
                f"{self.where}: unknown {what} {quote(token.text, 40)} in {quote(self.source)}; "
                f"a formula may call only {', '.join(FUNCTIONS)}")
        self.functions.add(name)
        return name

    # ---- formula level --------------------------------------------------------------
    def formula(self) -> tuple[str, set]:
        text, terms = self.chain()
        if self.tok.kind != "end":
            self.fail("unexpected text")
        return text, terms

    def chain(self) -> tuple[str, set]:
        sign = self.accept("+", "-")
        text, terms = self.product()
        if sign == "-":
            text, terms = f"-{text}", set()  # "-1": no intercept (removes nothing else)
        while (op := self.accept("+", "-")) is not None:
            right, right_terms = self.product()
            text = f"{text} {op} {right}"
            terms = terms | right_terms if op == "+" else terms - right_terms
            _check_size(terms, self)
        return text, terms

    def product(self) -> tuple[str, set]:
        text, terms = self.interaction()
        while (op := self.accept("*", "/")) is not None:
            right, right_terms = self.interaction()
            text = f"{text} {op} {right}"
            if op == "*":
                terms = terms | right_terms | _interact(terms, right_terms, self)
            else:  # a / b = a + (all factors of a):b
                nested = {frozenset().union(*terms)} if terms else set()
                terms = terms | _interact(nested, right_terms, self)
            _check_size(terms, self)
        return text, terms

    def interaction(self) -> tuple[str, set]:
        text, terms = self.power()
        while self.accept(":"):
            right, right_terms = self.power()
            text, terms = f"{text}:{right}", _interact(terms, right_terms, self)
        return text, terms

    def power(self) -> tuple[str, set]:
        text, terms = self.atom()
        if self.accept("**", "^"):
            token = self.take()
            if token.kind != "number" or not token.text.isdigit() or not 1 <= int(token.text) <= MAX_POWER:
                self.i -= 1
                self.fail(f"a power of terms must be a whole number from 1 to {MAX_POWER}")
            expanded = terms
            for _ in range(int(token.text) - 1):
                expanded = expanded | _interact(expanded, terms, self)
                _check_size(expanded, self)
            text, terms = f"{text} ** {int(token.text)}", expanded
        return text, terms

    def atom(self) -> tuple[str, set]:
        token = self.tok
        if self.accept("("):
            text, terms = self.inside(self.chain, "'('")
            return f"({text})", terms
        if token.kind == "number":
            self.take()
            if token.text not in ("0", "1"):
                self.i -= 1
                self.fail("a number in a formula can only be 0 or 1 (the intercept); write I(...) for arithmetic")
            return token.text, ({frozenset()} if token.text == "1" else set())
        if token.kind in ("name", "backtick"):
            self.take()
            if token.kind == "name" and self.tok.kind == "op" and self.tok.text == "(":
                return self.factor_call(token)
            text = self.column(token, numeric=True)
            return text, {frozenset({("numeric", text)})}
        self.fail("expected a column, a function or '('")

    def factor_call(self, token: Token) -> tuple[str, set]:
        """A function call that is a whole factor: ``C(col)``, ``I(...)``, ``poly(x, 2)``, ``log(x)``."""
        name = self.call_name(token)
        self.expect("(", f"after {name}")
        self.nest()
        if name == "C":
            column = self.take()
            if column.kind not in ("name", "backtick") or (self.tok.kind == "op" and self.tok.text == "("):
                self.i -= 1
                self.fail("C(...) takes a column name")
            inner = self.column(column, numeric=False)
            if self.accept(","):
                inner = f"{inner}, {self.contrasts()}"
            factor = ("categorical", column.text[1:-1] if column.kind == "backtick" else column.text)
        elif name == "poly":
            inner = self.additive()[0]
            self.expect(",", "in poly(expression, degree)")
            degree = self.take()
            if degree.kind != "number" or not degree.text.isdigit() or not 1 <= int(degree.text) <= MAX_POLY_DEGREE:
                self.i -= 1
                self.fail(f"poly's degree must be a whole number from 1 to {MAX_POLY_DEGREE}")
            inner = f"{inner}, {int(degree.text)}"
            factor = ("poly", int(degree.text))
        else:
            inner = self.arithmetic()
            factor = ("numeric", None)
        self.expect(")", f"to close {name}(")
        self.unnest()
        text = f"{name}({inner})"
        return text, {frozenset({(factor[0], factor[1] if factor[0] != "numeric" else text)})}

    def contrasts(self) -> str:
        """The coding of ``C(column, coding)``: ``contr.treatment`` (optionally with its
        reference level, ``contr.treatment('mixed')``), ``contr.sum``, ``contr.helmert``,
        ``contr.poly`` or ``contr.diff``."""
        token = self.take()
        if token.kind != "name" or token.text not in CONTRASTS:
            self.i -= 1
            self.fail(f"the coding in C(column, coding) must be one of {', '.join(CONTRASTS)}")
        if token.text != "contr.treatment" or not self.accept("("):
            return token.text
        level = self.take()
        if level.kind not in ("string", "number") or not self.accept(")"):
            self.i -= 1
            self.fail("contr.treatment(level) takes one level, a number or quoted text")
        value = level.text[1:-1] if level.kind == "string" else (
            int(level.text) if level.text.isdigit() else float(level.text))
        return f"contr.treatment({value!r})"

    # ---- arithmetic level -------------------------------------------------------------
    # Each method returns (text, whether a column occurs in it): a power of two numbers is
    # refused, since Python would compute it exactly (10 ** 10 ** 10 never finishes);
    # with a column in it, numpy computes in floats (``melsm.model.design`` casts the columns).
    def arithmetic(self) -> str:
        numeric_before = set(self.numeric)
        if self.tok.kind == "string":
            left = repr(self.take().text[1:-1])
            op = self.accept("==", "!=")
            if op is None:
                self.fail("quoted text can only be compared with == or !=")
            return f"{left} {op} {self.text_operand(numeric_before)}"
        left = self.additive()[0]
        op = self.accept(*_COMPARISONS)
        if op is None:
            return left
        if self.tok.kind == "string":
            if op not in ("==", "!="):
                self.fail("quoted text can only be compared with == or !=")
            if left in {column_text(name) for name in self.numeric - numeric_before}:
                self.numeric = numeric_before  # a text column compared with text: need not be numeric
            return f"{left} {op} {self.take().text[1:-1]!r}"
        return f"{left} {op} {self.additive()[0]}"

    def text_operand(self, numeric_before: set) -> str:
        """The other side of ``'text' == ...``; a column alone there may hold text."""
        text = self.additive()[0]
        if text in {column_text(name) for name in self.numeric - numeric_before}:
            self.numeric = numeric_before
        return text

    def additive(self) -> tuple[str, bool]:
        text, has_column = self.multiplicative()
        while (op := self.accept("+", "-")) is not None:
            right, right_column = self.multiplicative()
            text, has_column = f"{text} {op} {right}", has_column or right_column
        return text, has_column

    def multiplicative(self) -> tuple[str, bool]:
        text, has_column = self.unary()
        while (op := self.accept("*", "/")) is not None:
            right, right_column = self.unary()
            text, has_column = f"{text} {op} {right}", has_column or right_column
        return text, has_column

    def unary(self) -> tuple[str, bool]:
        if (op := self.accept("-", "+")) is not None:
            self.nest()
            text, has_column = self.unary()
            self.unnest()
            return f"{op}{text}", has_column
        base, base_column = self.primary()
        if self.accept("**"):
            self.nest()
            exponent, exponent_column = self.unary()
            self.unnest()
            if not (base_column or exponent_column):
                self.i -= 1
                self.fail("a power of two numbers; write the number itself")
            return f"{base} ** {exponent}", True
        if self.tok.kind == "op" and self.tok.text == "^":
            self.fail("write ** for a power inside I(...)")
        return base, base_column

    def primary(self) -> tuple[str, bool]:
        token = self.tok
        if self.accept("("):
            text, has_column = self.inside(self.additive, "'('")
            return f"({text})", has_column
        if token.kind == "number":
            self.take()
            return (str(int(token.text)) if token.text.isdigit() else repr(float(token.text))), False
        if token.kind in ("name", "backtick"):
            self.take()
            if token.kind == "name" and self.tok.kind == "op" and self.tok.text == "(":
                return self.math_call(token)
            return self.column(token, numeric=True), True
        if token.kind == "string":
            self.fail("quoted text can only be compared with == or !=")
        self.fail("expected a number, a column or '('")

    def math_call(self, token: Token) -> tuple[str, bool]:
        name = self.call_name(token)
        if name not in MATH + STATEFUL:
            self.i -= 1
            self.fail(f"{name}(...) cannot be used inside arithmetic")
        self.take()
        inner, has_column = self.inside(self.additive, f"{name}(")
        return f"{name}({inner})", has_column


def _interact(left: set, right: set, parser: _Parser) -> set:
    if len(left) * len(right) > MAX_TERMS * MAX_TERMS:
        _check_size(range(MAX_TERMS + 1), parser)
    return {a | b for a in left for b in right}


def _check_size(terms, parser: _Parser) -> None:
    if len(terms) > MAX_TERMS:
        raise MelsmInputError(f"{parser.where}: {quote(parser.source)} expands to more than {MAX_TERMS} terms")


def parse_terms(text: str, where: str) -> Terms:
    """Check one formula part (no ``~``, no random term) and rebuild it.

    ``where`` names the part in messages (``"mean formula"``)."""
    if len(text) > MAX_LENGTH:
        raise MelsmInputError(f"{where} is {len(text):,} characters long; the limit is {MAX_LENGTH:,}")
    parser = _Parser(text, where)
    rebuilt, terms = parser.formula()
    return Terms(text=rebuilt, variables=frozenset(parser.variables), numeric=frozenset(parser.numeric),
                 functions=frozenset(parser.functions),
                 terms=tuple(tuple(sorted(term, key=repr)) for term in terms))


def column_name(text: str, what: str) -> str:
    """A single column name (the response, a grouping factor): bare or in backticks."""
    words = tokens(text, what) if len(text) <= MAX_LENGTH else []
    if len(words) != 2 or words[0].kind not in ("name", "backtick"):
        raise MelsmInputError(f"the {what} {quote(text)} must be a column name; "
                              "transform the column in the data instead")
    name = words[0].text
    return name[1:-1] if words[0].kind == "backtick" else name
