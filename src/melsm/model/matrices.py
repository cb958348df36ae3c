"""Model matrices of checked formulas, evaluated with no module in scope.

formulaic evaluates each factor of a formula as a Python expression, by default with
numpy (``np``), its transforms and the caller's variables in scope. melsm hands it only
formulas rebuilt by ``melsm.model.grammar`` and evaluates them with the data's columns and the
grammar's functions, nothing else: even a formula that slipped past the grammar could
reach no module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic import model_matrix as _formulaic_model_matrix
from formulaic.materializers import PandasMaterializer
from formulaic.transforms import C, ContrastsRegistry, center, poly, scale
from formulaic.utils.layered_mapping import LayeredMapping

from melsm.model.grammar import FUNCTIONS


def _identity(values):
    return values


#: The only names a factor can call: the grammar's functions, numpy's element-wise ones.
SCOPE = {"C": C, "I": _identity, "log": np.log, "log2": np.log2, "log10": np.log10, "exp": np.exp,
         "sqrt": np.sqrt, "abs": np.abs, "center": center, "scale": scale, "standardize": scale, "poly": poly,
         "contr": ContrastsRegistry}  # only reached as the codings the grammar writes: contr.sum ...
assert set(SCOPE) == {*FUNCTIONS, "contr"}


class ScopedMaterializer(PandasMaterializer):
    """formulaic's pandas materializer with the data and ``SCOPE`` as the only names."""

    REGISTER_NAME = "melsm_scoped"
    REGISTER_INPUTS = ()  # never chosen by formulaic on its own
    REGISTER_OUTPUTS = ("pandas",)

    def __init__(self, data, context=None, **params):
        super().__init__(data, context=None, **params)
        # the data first, as formulaic orders them; then the functions; no numpy, no caller
        self.layered_context = LayeredMapping(LayeredMapping(self.data_context, name="data"),
                                              LayeredMapping(SCOPE, name="functions"))


def model_matrix(formula: str, data: pd.DataFrame):
    """formulaic's model matrix of ``formula`` (rebuilt by ``melsm.model.grammar``) on ``data``."""
    return _formulaic_model_matrix(formula, data, context={}, na_action="raise",
                                   materializer=ScopedMaterializer)
