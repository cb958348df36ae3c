"""The data of a distributed fit: a Parquet data set (a file or a directory, on storage
every worker can read) or a Dask DataFrame, checked before anything is computed
(docs/architecture.md, 'Data on a cluster').

The design is built per partition, so what needs the whole data first is decided here:
a factor's levels are the union over the partitions (each partition then encodes its
rows with all of them), and the stateful transforms ``center``, ``scale``,
``standardize`` and ``poly``, whose state would be each partition's own, are refused.
A group must lie in one partition, since its likelihood needs all its rows at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.model.checks import check_columns, part_name
from melsm.model.grammar import parse_terms, quote
from melsm.model.spec import ModelSpec

#: Formula functions whose values depend on the whole column (their state is learnt from the data).
STATEFUL = ("center", "scale", "standardize", "poly")


def is_distributed(data) -> bool:
    """True for what ``open_source`` takes: a path (str or ``os.PathLike``) or a Dask DataFrame."""
    return isinstance(data, (str, os.PathLike)) or type(data).__module__.startswith("dask")


def open_source(data):
    """A Dask DataFrame of ``data``: read lazily from Parquet for a path (a one-line error if
    a local path does not exist or cannot be read as Parquet), else the Dask DataFrame itself."""
    import dask.dataframe as dd

    if not isinstance(data, (str, os.PathLike)):
        if not isinstance(data, dd.DataFrame):
            raise MelsmInputError(f"data must be a pandas or Dask DataFrame or a Parquet path, "
                                  f"not {type(data).__name__}")
        return data
    text = os.fspath(data)
    if "://" not in text:
        if not Path(text).exists():
            raise MelsmInputError(f"no Parquet data at '{text}': the path does not exist")
        text = os.path.abspath(text)  # the workers' working directory may be another
    try:
        return dd.read_parquet(text)
    except (OSError, ValueError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MelsmInputError(f"cannot read '{text}' as Parquet: {first}") from None


def model_columns(spec: ModelSpec) -> dict[str, set[str]]:
    """The columns each formula part uses (the response with the mean), checked against nothing yet."""
    from melsm.model.design import formula_parts

    used = {}
    for which, text in formula_parts(spec).items():
        terms = parse_terms(text, part_name(which))
        stateful = sorted(set(terms.functions) & set(STATEFUL))
        if stateful:
            raise MelsmInputError(
                f"{stateful[0]}() in the {part_name(which)} needs the whole column at once, which a "
                "partitioned data set does not give; transform the column before writing the data")
        used[which] = set(terms.variables)
    used["mean"] = used["mean"] | {spec.response}
    return used


def check_frame(spec: ModelSpec, frame) -> list[str]:
    """Check the Dask DataFrame's columns (its metadata, nothing computed) against the model;
    return the columns to read."""
    from melsm.model.design import formula_parts

    used = model_columns(spec)
    parsed = {which: parse_terms(text, part_name(which)) for which, text in formula_parts(spec).items()}
    check_columns(frame._meta, spec, used, parsed)
    if spec.group is None:
        raise MelsmInputError("a partitioned data set needs a grouping column: (1 | group) in a formula")
    if spec.weights and spec.weights not in frame.columns:
        raise MelsmInputError(f"unknown weights column {quote(spec.weights)}")
    columns = set().union(*used.values()) | {spec.group} | ({spec.weights} if spec.weights else set())
    return sorted(columns)


def factor_columns(frame, columns: list[str], group: str) -> list[str]:
    """The columns whose values are labels (strings, categories), whose levels must be the
    same in every partition."""
    meta = frame._meta
    return [c for c in columns if c != group and not pd.api.types.is_numeric_dtype(meta[c])]


def check_groups_whole(labels: list[np.ndarray], group: str) -> None:
    """Every group's rows in one partition: a one-line error naming the column and a group
    found in two partitions otherwise."""
    if not labels:
        raise MelsmInputError("the data set is empty (no partitions)")
    owner = np.concatenate([np.full(len(a), k) for k, a in enumerate(labels)])
    values = pd.Series(np.concatenate(labels))
    repeated = values.duplicated(keep=False).to_numpy()
    if repeated.any():
        k = int(np.argmax(repeated))
        where = sorted(set(owner[repeated & (values == values.iloc[k]).to_numpy()].tolist()))
        raise MelsmInputError(
            f"group {quote(str(values.iloc[k]))} of grouping column {quote(group)} is split across partitions "
            f"{where[0]} and {where[1]}; write the data partitioned by {quote(group)} "
            f"(e.g. dask's frame.shuffle(on={group!r}))")
