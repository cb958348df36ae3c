"""Reading what a request carries: an uploaded CSV file, a JSON form, a fitted model's
number. What cannot be read raises ``ClientError``, which the handler answers with a 4xx
and ``{"errors": {field: text}}``. See docs/architecture.md."""

from __future__ import annotations

import io
import json
from http import HTTPStatus

import pandas as pd


class ClientError(Exception):
    """A request the page should show as a message: ``errors`` maps field → text."""

    def __init__(self, errors: dict[str, str], status: int = HTTPStatus.BAD_REQUEST):
        super().__init__("; ".join(errors.values()))
        self.errors, self.status = errors, status


def read_csv(raw: bytes, filename: str) -> pd.DataFrame:
    """An uploaded file as a DataFrame, or ``ClientError`` saying why not."""
    if not raw.strip():
        raise ClientError({"upload": f"'{filename}' is empty"})
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\x00" in raw[:4096]:
            raise ClientError({"upload": f"'{filename}' is not a text (CSV) file"}) from None
        text = raw.decode("latin-1")
    try:
        data = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise ClientError({"upload": f"'{filename}' has no columns"}) from None
    except (pd.errors.ParserError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClientError({"upload": f"cannot read '{filename}' as CSV: {first}"}) from None
    if data.shape[1] < 2:
        raise ClientError({"upload": f"'{filename}' has only one column: is it comma-separated? A model needs "
                                     "at least a response and a group column"})
    if len(data) < 3:
        raise ClientError({"upload": f"'{filename}' has {len(data)} data rows: too few to fit a model"})
    if not any(pd.api.types.is_numeric_dtype(data[c]) for c in data.columns):
        raise ClientError({"upload": f"'{filename}' has no numeric column: the response must be numeric "
                                     "(check the decimal mark and the separator)"})
    return data


def _refuse_constant(name: str):
    raise ClientError({"form": f"the request has {name}: send finite numbers"})


def parse_form(body: bytes) -> dict:
    """A JSON request's body as a dict (an empty body: ``{}``); NaN and infinities are
    refused, since JSON has no such numbers and the page never sends them."""
    try:
        payload = json.loads(body or b"{}", parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, bad encodings, huge numbers, deep nesting
        raise ClientError({"form": "the request is not valid JSON"}) from None
    if not isinstance(payload, dict):
        raise ClientError({"form": "the request is not a form (a JSON object)"})
    return payload


def fit_number(text: object) -> int | None:
    """A fitted model's number from a path, a query or a JSON list; None when it is not one."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text > 0 else None
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 10:
        return int(text) or None
    return None


def size_text(n: int) -> str:
    """A number of bytes as a message shows it (kB or MB)."""
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"
