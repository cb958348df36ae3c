"""Formulas are data, never code: the grammar refuses everything but columns, formula
operators and its own functions, at every entry point, and what it accepts is evaluated
with no module in scope.

Side effects are watched two ways while the fuzz runs: a sentinel file that every payload
tries to create, and a Python audit hook that records process starts, writes, deletions
and every expression compiled for evaluation (each must be free of attribute access,
dunder names and calls outside the grammar's functions).
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import melsm
from melsm import cli
from melsm.model.grammar import CONTRASTS, FUNCTIONS, parse_terms

# One per process: another test run on the machine creates its own on purpose.
SENTINEL = Path("/tmp") / f"melsm-formula-safety-sentinel-{os.getpid()}"
PAYLOADS = [
    f"np.testing._private.utils.os.system('touch {SENTINEL}')",
    f"__import__('os').system('touch {SENTINEL}')",
    f"open('{SENTINEL}', 'w')",
    f"np.save('{SENTINEL}', x)",
    f"pd.DataFrame().to_csv('{SENTINEL}')",
    f"{{__import__('os').system('touch {SENTINEL}')}}",
    f"I(__import__('os').system('touch {SENTINEL}'))",
    f"C(x).__class__.__init__.__globals__['os'].system('touch {SENTINEL}')",
    f"exec(\"open('{SENTINEL}','w')\")",
    f"eval(\"open('{SENTINEL}','w')\")",
    "log(x).__class__",
    "getattr(x, 'mean')()",
    "(lambda: 1)()",
    "x[0]",
    "x.mean()",
    "I(x - x.mean())",
    "[c for c in ().__class__.__base__.__subclasses__()]",
]
ALLOWED_ATTRIBUTES = {c.split(".", 1)[1] for c in CONTRASTS}
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
FORBIDDEN_EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                    "os.remove", "os.unlink", "os.rename", "shutil.", "socket.connect", "ctypes.")


class Watch:
    """An audit hook (hooks cannot be removed, so it records only while ``active``)."""

    active = False
    events: list = []

    @classmethod
    @contextlib.contextmanager
    def paused(cls):
        """For the test's own writes (a study file, a CSV file)."""
        cls.active = False
        try:
            yield
        finally:
            cls.active = True

    @classmethod
    def hook(cls, event, args):
        if not cls.active or "/.hypothesis/" in repr(args)[:500]:  # hypothesis's own example database
            return
        if event.startswith(FORBIDDEN_EVENTS):
            cls.events.append((event, repr(args)[:200]))
        elif event == "open" and _writes(args):
            cls.events.append((event, repr(args)[:200]))
        elif event == "compile" and (args[1] == "" or args[1] is None and isinstance(args[0], ast.Expression)):
            # what formulaic compiles: text named "", or an expression tree (which has no name)
            problem = _unsafe_expression(args[0])
            if problem:
                shown = ast.unparse(args[0]) if isinstance(args[0], ast.AST) else args[0]
                cls.events.append(("compile", problem, repr(args[1]), str(shown)[:300]))


def _writes(args) -> bool:
    path, mode, flags = (list(args) + [None, None, None])[:3]
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def _unsafe_expression(source) -> str | None:
    """What in a compiled expression a formula must never produce, or None."""
    try:
        tree = source if isinstance(source, ast.AST) else ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, TypeError):
        return None  # not an expression: cannot run as one
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not _formulaic_attribute(node):
            return f"attribute .{node.attr}"
        if isinstance(node, ast.Name) and node.id.startswith("__") and not node.id.startswith("__FORMULAIC_"):
            return f"name {node.id}"
        if isinstance(node, (ast.Lambda, ast.Subscript, ast.ListComp, ast.GeneratorExp, ast.DictComp,
                             ast.SetComp, ast.NamedExpr)):
            if isinstance(node, ast.Subscript) and _formulaic_state(node):
                continue
            return type(node).__name__
        if isinstance(node, ast.Call):
            func = node.func
            if not (isinstance(func, ast.Name) and func.id in FUNCTIONS or isinstance(func, ast.Attribute)):
                return f"call {ast.unparse(func)}"
    return None


def _formulaic_attribute(node: ast.Attribute) -> bool:
    """The attributes in what formulaic compiles from a checked formula: the codings
    (``contr.sum``), its own state (``__FORMULAIC_METADATA__.get``) and a stateful
    transform's ``get_required_variables``."""
    owner = node.value.id if isinstance(node.value, ast.Name) else None
    return ((owner == "contr" and node.attr in ALLOWED_ATTRIBUTES)
            or (owner is not None and owner.startswith("__FORMULAIC_") and node.attr == "get")
            or (owner in FUNCTIONS and node.attr == "get_required_variables"))


def _formulaic_state(node: ast.Subscript) -> bool:
    """formulaic passes a stateful transform its state as ``__FORMULAIC_STATE__["..."]``."""
    return isinstance(node.value, ast.Name) and node.value.id.startswith("__FORMULAIC_")


sys.addaudithook(Watch.hook)


@pytest.fixture
def watch():
    SENTINEL.unlink(missing_ok=True)
    Watch.events = []
    Watch.active = True
    yield Watch
    Watch.active = False
    assert not SENTINEL.exists(), "a formula created a file"
    assert Watch.events == []


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    n = 60
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.uniform(1, 2, size=n),
        "k": rng.integers(0, 5, size=n), "s": rng.choice(["a", "b", "c"], size=n),
        "g": np.repeat(np.arange(12), 5), "a.b": rng.normal(size=n), "größe": rng.normal(size=n),
        "w": np.repeat(rng.integers(0, 2, size=12), 5),
    })


def build(data, mean, within="~ 1", between=None):
    """A model (no fit), or the one-line message of a ``MelsmInputError``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return melsm.Model(mean=mean, within=within, between=between, data=data)
        except melsm.MelsmInputError as err:
            message = str(err)
            assert message and len(message.splitlines()) == 1 and len(message) <= 1000, message
            return message


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``melsm ARGV`` in this process: (exit status, standard output, standard error)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_watch_sees_code_that_formulaic_would_run(data, watch):
    """The audit hook is not idle: formulaic left to itself runs a formula's attribute chain,
    and the hook records it (then the record is cleared, so this test passes)."""
    import formulaic

    formulaic.model_matrix("x + np.log(z) + np.testing._private.utils.os.system('true')", data, context={})
    seen = [event[0] if event[0] != "compile" else event[1] for event in watch.events]
    watch.events.clear()
    assert {"attribute .log", "attribute .system", "os.system"} <= set(seen), seen


# ---- named cases ---------------------------------------------------------------------------

# ids by position: the payloads contain this process's sentinel path, and xdist's workers must
# collect the same test ids.
@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"payload{k}" for k in range(len(PAYLOADS))])
@pytest.mark.parametrize("where", ["mean", "within", "between", "random", "response"])
def test_payload_is_refused_everywhere_in_the_api(data, watch, payload, where):
    formulas = {
        "mean": {"mean": f"y ~ x + {payload} + (1 | g)"},
        "within": {"mean": "y ~ x + (1 | g)", "within": f"~ x + {payload}"},
        "between": {"mean": "y ~ x + (1 | g)", "between": f"~ {payload}"},
        "random": {"mean": f"y ~ x + (1 + {payload} | g)"},
        "response": {"mean": f"{payload} ~ x + (1 | g)"},
    }[where]
    result = build(data, **formulas)
    assert isinstance(result, str)


def test_the_reported_attack_names_the_term(reisby, watch):
    message = build(reisby, "hamdep ~ week + np.testing._private.utils.os.system('touch /tmp/x') + (1 | id)")
    assert "mean formula" in message and "np.testing._private.utils.os.system" in message
    assert "may call only C, I, log" in message


@pytest.mark.parametrize("argv", [
    ["fit", "reisby", "--mean", f"hamdep ~ week + {PAYLOADS[0]} + (1 | id)"],
    ["fit", "reisby", "--mean", "hamdep ~ week + (1 | id)", "--within", f"~ {PAYLOADS[1]}"],
    ["fit", "reisby", "--mean", "hamdep ~ week + (1 | id)", "--between", f"~ {PAYLOADS[6]}"],
    ["fit", "reisby", "--mean", "hamdep ~ week + (1 | id)", "--within", "~ (1 | id)",
     "--between", f"within:Intercept=~ {PAYLOADS[5]}"],
    ["report", "reisby", "--model", f"M = hamdep ~ week + (1 | id) ; ~ {PAYLOADS[2]}"],
], ids=["mean", "within", "between", "between-named", "report"])
def test_payload_is_refused_by_the_cli(capsys, watch, argv):
    code, out, err = run_cli(capsys, argv)
    assert code == 2 and out == ""
    assert err.startswith("melsm: error: ") and len(err.strip().splitlines()) == 1


def test_payload_in_a_study_file_is_refused(tmp_path, watch):
    study = tmp_path / "study.toml"
    with watch.paused():
        study.write_text(f'''name = "s"
replicates = 2
[model]
mean = "y ~ x + (1 | group)"
[truth]
"mean:Intercept" = 0.0
"mean:x" = 0.5
"within:Intercept" = 0.0
"sd:mean:Intercept" = 0.5
[design]
groups = 10
group_size = 5
[design.covariates]
x = {{ level = 1, dist = "normal" }}
[fits.bad]
mean = "y ~ x + {PAYLOADS[0].replace("'", "")} + (1 | group)"
''')
    with pytest.raises(melsm.MelsmInputError, match="fitted model 'bad'.*unknown attribute access"):
        melsm.load_study(study)


@pytest.mark.parametrize("formula, names", [
    ("y ~ x + I(x ** 2) + log(z) + np.log(z) + sqrt(z) + (1 | g)",
     ["Intercept", "x", "I(x ** 2)", "log(z)", "sqrt(z)"]),
    ("y ~ center(x) + scale(z) + standardize(k) + (1 | g)",
     ["Intercept", "center(x)", "scale(z)", "standardize(k)"]),
    ("y ~ poly(x, 2) + (1 | g)", ["Intercept", "poly(x, 2)[1]", "poly(x, 2)[2]"]),
    ("y ~ C(s) + `a.b` + `größe` + (1 | g)", ["Intercept", "C(s)[T.b]", "C(s)[T.c]", "a.b", "größe"]),
    ("y ~ C(s, contr.treatment('c')) + (1 | g)",
     ["Intercept", "C(s, contr.treatment('c'))[T.a]", "C(s, contr.treatment('c'))[T.b]"]),
    ("y ~ I(s == 'a') + I(x > 0) + (1 | g)", ["Intercept", "I(s == 'a')", "I(x > 0)"]),
    ("y ~ x * w - 1 + (1 | g)", ["x", "w", "x:w"]),
], ids=["arithmetic", "stateful", "poly", "categorical-and-quoted", "contrast", "comparisons", "operators"])
def test_allowed_transforms_work(data, watch, formula, names):
    model = build(data, formula)
    assert not isinstance(model, str), model
    design = model.design
    assert design.x_names == names


def test_transform_values_are_right(data, watch):
    model = build(data, "y ~ I(x ** 2) + log(z) + center(x) + standardize(z) + I(s == 'a') + (1 | g)")
    X = pd.DataFrame(model.design.X, columns=model.design.x_names)
    order = model.design.row_order
    x, z, s = data["x"].to_numpy()[order], data["z"].to_numpy()[order], data["s"].to_numpy()[order]
    np.testing.assert_allclose(X["I(x ** 2)"], x**2, rtol=1e-12)
    np.testing.assert_allclose(X["log(z)"], np.log(z), rtol=1e-12)
    np.testing.assert_allclose(X["center(x)"], x - x.mean(), atol=1e-12)
    np.testing.assert_allclose(X["standardize(z)"], (z - z.mean()) / z.std(ddof=1), atol=1e-12)
    np.testing.assert_array_equal(X["I(s == 'a')"], (s == "a").astype(float))


def test_integer_columns_are_computed_in_floats(data, watch):
    """An integer column raised to a high power would wrap around in int64 arithmetic."""
    big = data.assign(k=data["k"] + 100)
    model = build(big, "y ~ I(k ** 10) + (1 | g)")
    k = big["k"].to_numpy()[model.design.row_order].astype(float)
    np.testing.assert_allclose(model.design.X[:, 1], k**10, rtol=1e-12)


@pytest.mark.parametrize("formula, expected", [
    ("y ~ I(10 ** 10 ** 10) + (1 | g)", "a power of two numbers"),
    ("y ~ x + 2 + (1 | g)", "can only be 0 or 1"),
    ("y ~ poly(x, 50) + (1 | g)", "from 1 to 10"),
    ("y ~ (x + z + k + w + `a.b` + größe + y + a1 + a2 + a3 + a4 + a5) ** 5 + (1 | g)", "more than 500 terms"),
    ("y ~ (x + z) ** 9 + (1 | g)", "a power of terms"),
    ("y ~ " + "(" * 60 + "x" + ")" * 60 + " + (1 | g)", "nests deeper than 40"),
    ("y ~ " + " + ".join(f"x{i}" for i in range(2000)) + " + (1 | g)", "characters long"),
    ("y ~ C(x, contr.custom) + (1 | g)", "coding in C(column, coding)"),
    ("y ~ x %in% g + (1 | g)", "character '%'"),
    ("y ~ . + (1 | g)", "character '.'"),
    ("log(y) ~ x + (1 | g)", "must be a column name"),
    ("y ~ x + (1 | g + x)", "grouping factor"),
], ids=["int-power", "number", "poly-degree", "term-count", "term-power", "nesting", "length", "contrast", "in", "dot",
        "response", "group"])
def test_refusals_name_the_problem(data, watch, formula, expected):
    message = build(data, formula)
    assert isinstance(message, str) and expected in message, message


def test_a_huge_categorical_is_refused_before_allocating(watch):
    data = pd.DataFrame({"y": np.arange(3000.0) % 7, "id": np.arange(3000), "g": np.arange(3000) // 3})
    message = build(data, "y ~ C(id) + (1 | g)")
    assert "3,000 columns" in message and "C(id) has 3,000 levels" in message


def test_a_column_named_like_a_function_is_refused_when_the_function_is_used(data, watch):
    message = build(data.assign(log=1.0), "y ~ log(z) + (1 | g)")
    assert "calls log(...)" in message and "rename the column" in message
    assert not isinstance(build(data.rename(columns={"z": "log"}), "y ~ log + (1 | g)"), str)


def test_long_names_are_cut_in_messages(data, watch):
    long = "q" * 1_000_000
    message = build(data.assign(**{long: 1.0}), "y ~ " + "r" * 5000 + " + (1 | g)")
    assert len(message) < 1000 and "…" in message


def test_formulas_are_stored_as_rebuilt(data):
    model = build(data, "y ~ np.log(z)+x:w + (1+x|g)")
    assert model.spec.mean_fixed == "log(z) + x:w" and model.spec.mean_random == "1 + x"


# ---- fuzz ---------------------------------------------------------------------------------

ATOMS = ["x", "z", "k", "s", "w", "y", "`a.b`", "größe", "1", "0", "2", "1.5", "1e400", "'a'", '"t"', "nope",
         "__class__", "np", "os", "sys", "`x`", "``", "`__import__`", "True", "None", "lambda", "if", "g"]
CALLS = [f"{f}(" for f in FUNCTIONS] + [
    "np.log(", "np.exp(", "os.system(", "__import__(", "eval(", "exec(", "open(", "getattr(", "x.mean(",
    "np.testing._private.utils.os.system(", "contr.treatment(", "np.save(", "pd.read_csv(", "print(", "breakpoint(",
    "globals(", "vars(", "compile(", "input(", "setattr(", "type(", "C(x).__class__(", "log.__call__("]
OPERATORS = ["+", "-", "*", "/", ":", "**", "^", "(", ")", ",", "==", "!=", "<", ">=", "|", "||", "~", ".", "[",
             "]", "{", "}", "%in%", "`", "'", '"', "=", ";", "#", "\\", "\n", " ", "@", "!", "&", "$", "\x00"]
TOKENS = ATOMS + CALLS + OPERATORS + [f"'touch {SENTINEL}'"] + list(CONTRASTS)

formula_texts = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14).map(" ".join) | \
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14).map("".join)
places = st.sampled_from(["mean", "within", "between", "random", "response", "group"])


def _formulas(where: str, text: str) -> dict:
    return {
        "mean": {"mean": f"y ~ {text} + (1 | g)"},
        "within": {"mean": "y ~ x + (1 | g)", "within": f"~ {text} + (1 | g)"},
        "between": {"mean": "y ~ x + (1 | g)", "between": {"mean:Intercept": f"~ {text}"}},
        "random": {"mean": f"y ~ x + ({text} | g)"},
        "response": {"mean": f"{text} ~ x + (1 | g)"},
        "group": {"mean": f"y ~ x + (1 | {text})"},
    }[where]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=formula_texts, where=places)
def test_fuzz_formulas_from_formula_tokens(data, watch, text, where):
    result = build(data, **_formulas(where, text))
    if not isinstance(result, str):  # accepted: it must have passed the grammar unchanged in meaning
        assert isinstance(result.design.X, np.ndarray)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60), where=places)
def test_fuzz_formulas_from_any_text(data, watch, text, where):
    build(data, **_formulas(where, text))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=formula_texts)
def test_fuzz_grammar_rebuilds_what_it_accepts(watch, text):
    """Whatever the grammar accepts, it accepts again as rebuilt, unchanged (a fixed point)."""
    try:
        terms = parse_terms(text, "mean formula")
    except melsm.MelsmInputError:
        return
    again = parse_terms(terms.text, "mean formula")
    assert again.text == terms.text and again.variables == terms.variables


cells = st.one_of(st.floats(allow_nan=True), st.integers(-10**20, 10**20), st.text(max_size=12),
                  st.sampled_from(["", "NA", "inf", "-inf", "1e999", "nan", "__import__('os')", "=1+1", "0x10"]))
headers = st.lists(st.one_of(st.sampled_from(["y", "x", "g", "a.b", "log", "C", "__class__", "x x", "", "`"]),
                             st.text(max_size=8)), min_size=3, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=headers, rows=st.lists(st.lists(cells, min_size=5, max_size=5), min_size=0, max_size=12),
       text=formula_texts)
def test_fuzz_csv_files(tmp_path_factory, watch, header, rows, text):
    import csv

    with watch.paused():
        path = tmp_path_factory.mktemp("csv") / "data.csv"
        with path.open("w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(r[: len(header)] for r in rows)
    try:
        frame = cli._read_data(str(path))
    except melsm.MelsmInputError as err:
        assert len(str(err).splitlines()) == 1
        return
    for mean in ("y ~ x + (1 | g)", f"y ~ {text} + (1 | g)", f"{header[0]} ~ {header[1]} + (1 | {header[2]})"):
        build(frame, mean)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.sampled_from(PAYLOADS), where=st.sampled_from(["--mean", "--within", "--between"]),
       extra=st.sampled_from(TOKENS))
def test_fuzz_cli(capsys, watch, payload, where, extra):
    formula = {"--mean": f"hamdep ~ week + {payload} {extra} + (1 | id)"}.get(where, f"~ {payload} {extra}")
    argv = ["fit", "reisby", "--mean", "hamdep ~ week + (1 | id)", where, formula]
    code, out, err = run_cli(capsys, argv)
    assert code == 2 and err.startswith("melsm: error: ") and len(err.strip().splitlines()) == 1
