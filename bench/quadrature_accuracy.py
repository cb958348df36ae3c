"""How many Gauss–Hermite points? Log-likelihood at the optimum against the number of
points, for one scale effect (Riesby) and two (London Model 6). Chooses the defaults in
melsm.estimate.ml.DEFAULT_QUADRATURE: the fewest points within 1e-4 of the 31-point value.

Run by hand:  python bench/quadrature_accuracy.py
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp

import melsm
from melsm.estimate.ml import value_grad_nodes

CASES = {
    "Riesby (q_v = 1)": ("reisby", dict(mean="hamdep ~ week + endog + endweek + (1 | id)",
                                        within="~ week + endog + (1 | id)", between="~ endog",
                                        association="linear")),
    "London Model 6 (q_v = 2)": ("tutorial", dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
                                                  within="~ standlrt + girl + (standlrt | school)")),
}


def main() -> None:
    warnings.simplefilter("ignore")
    for label, (data_name, spec) in CASES.items():
        model = melsm.Model(data=melsm.datasets.load(data_name), **spec)
        fit = model.fit(quadrature=15)
        theta = jnp.asarray(fit.theta)
        values = {}
        for k in (1, 3, 5, 7, 9, 11, 15, 21, 31):
            value, _, _ = value_grad_nodes(theta, model.model_data, fit._opt.nodes.mode, model.layout, k,
                                           nodes_move=False)
            values[k] = float(value)
        print(label)
        for k, v in values.items():
            print(f"  K = {k:2d}   log L = {v:.7f}   |error| = {abs(v - values[31]):.1e}")


if __name__ == "__main__":
    main()
