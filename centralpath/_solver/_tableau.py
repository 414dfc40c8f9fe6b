"""Tsitouras' 5(4) pair: the step's Butcher tableau and its continuous extension.

The tableau is Diffrax's public `Tsit5.tableau` (a `diffrax.ButcherTableau`), so that our
solvers take the steps `diffrax.Tsit5` takes. The dense output is Tsitouras' (2011) fourth-order
continuous extension, y(t0 + θh) = y0 + Σ_i b_i(θ) k_i with k_i = h·f_i, written here as the
coefficients of θ, θ², θ³, θ⁴ in b_i(θ); b_i(1) is the step's b_sol (tested).
"""

from __future__ import annotations

import diffrax
import jax.numpy as jnp
import numpy as np

TABLEAU: diffrax.ButcherTableau = diffrax.Tsit5.tableau

#: b_i(θ) = Σ_j DENSE[i, j] θ^(j+1), i over the seven stages (the last is y1's, FSAL).
DENSE = np.array(
    [
        [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
        [0.0, 0.13169999999999998, -0.2234, 0.1017],
        [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
        [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
        [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
        [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
        [0.0, 1.5, -4.0, 2.5],
    ]
)


def dense_weights(theta):
    """[b_1(θ), …, b_7(θ)] at θ = (t − t0)/h ∈ [0, 1]."""
    theta = jnp.asarray(theta)
    powers = jnp.stack([theta, theta**2, theta**3, theta**4])
    return jnp.asarray(DENSE, powers.dtype) @ powers


def combination(coefficients, increments):
    """Σ_j a_j k_j over the nonzero a_j (Python floats), leaf by leaf: one fused elementwise
    pass. Diffrax's stage loop forms each stage's input as a dot with all seven stored stages,
    which on a p×p state costs more than the vector field."""
    import jax

    pairs = [(float(a), k) for a, k in zip(coefficients, increments, strict=True) if a != 0]
    return jax.tree.map(
        lambda *leaves: sum(a * k for (a, _), k in zip(pairs, leaves, strict=True)),
        *(k for _, k in pairs),
    )
