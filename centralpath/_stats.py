"""Class statistics of features (docs/theory.md §1).

Everything downstream — the least-squares classifier, the loss decomposition, the metrics and
the moment-reduced flows — consumes a `ClassStats`, whether it came from a random
unconstrained-features initialisation, from a flow, or from a trained network.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._errors import InputError, check_finite, is_concrete, require
from ._float64 import float64
from ._repr import numeric_repr


class ClassStats(eqx.Module):
    """Sufficient statistics of labelled features h_{i,c} ∈ R^p (docs/theory.md §1).

    **Fields:**

    - `counts`: n_c, samples per class (float, shape [C]).
    - `class_means`: M = [μ_1 … μ_C], uncentred, shape [p, C] (columns are classes, as in the
      paper's W M).
    - `sigma_w`: Σ_W = Ave (h − μ_c)(h − μ_c)ᵀ, divided by n (not n − C), shape [p, p].

    The derived quantities are properties. Imbalanced classes are allowed: μ_G and Σ_T are
    sample-weighted (exact for any counts); Σ_B = (1/C) M̄ M̄ᵀ is the paper's unweighted
    convention, and Σ_T = Σ_W + Σ_B holds only for balanced classes.
    """

    def __repr__(self) -> str:  # numbers, not Equinox's dtype-and-shape summaries
        return numeric_repr(self)

    counts: Float[Array, " C"]
    class_means: Float[Array, "p C"]
    sigma_w: Float[Array, "p p"]

    def __check_init__(self):
        if self.counts.ndim != 1:
            raise InputError(f"counts must be 1-D [C], got shape {self.counts.shape}")
        if self.class_means.ndim != 2 or self.class_means.shape[1] != self.counts.shape[0]:
            raise InputError(
                f"class_means must be [p, C={self.counts.shape[0]}], got {self.class_means.shape}"
            )
        p = self.class_means.shape[0]
        if self.sigma_w.shape != (p, p):
            raise InputError(f"sigma_w must be [p, p] = [{p}, {p}], got {self.sigma_w.shape}")

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0]

    @property
    def dim(self) -> int:
        return self.class_means.shape[0]

    @property
    @float64
    def n(self) -> Float[Array, ""]:
        """Total number of samples n = Σ n_c."""
        return jnp.sum(self.counts)

    @property
    @float64
    def priors(self) -> Float[Array, " C"]:
        """Class frequencies π_c = n_c / n (1/C when balanced)."""
        return self.counts / self.n

    @property
    @float64
    def global_mean(self) -> Float[Array, " p"]:
        """μ_G = Ave h, sample-weighted."""
        return self.class_means @ self.priors

    @property
    @float64
    def centred_means(self) -> Float[Array, "p C"]:
        """M̄ = M − μ_G 1ᵀ."""
        return self.class_means - self.global_mean[:, None]

    @property
    @float64
    def sigma_b(self) -> Float[Array, "p p"]:
        """Σ_B = (1/C) M̄ M̄ᵀ (the paper's convention, unweighted over classes)."""
        Mbar = self.centred_means
        return Mbar @ Mbar.T / self.num_classes

    @property
    @float64
    def sigma_t(self) -> Float[Array, "p p"]:
        """Σ_T = Ave (h − μ_G)(h − μ_G)ᵀ = Σ_W + M̄ diag(π) M̄ᵀ (exact for any counts)."""
        Mbar = self.centred_means
        return self.sigma_w + (Mbar * self.priors) @ Mbar.T

    @property
    @float64
    def second_moment(self) -> Float[Array, "p p"]:
        """Ave h hᵀ = Σ_T + μ_G μ_Gᵀ."""
        mu = self.global_mean
        return self.sigma_t + jnp.outer(mu, mu)

    @classmethod
    def from_moments(cls, counts, class_means, sigma_w) -> ClassStats:
        """Build from moments: counts [C], class means M [p, C], Σ_W [p, p]."""
        return cls(jnp.asarray(counts, float), jnp.asarray(class_means), jnp.asarray(sigma_w))


def validate_labelled_features(features, labels, num_classes: int, *, min_per_class: int = 1):
    """Check shapes, finiteness and labels of concrete inputs; raise `InputError` otherwise."""
    require(
        isinstance(num_classes, int | np.integer),
        f"num_classes must be an int, got {num_classes!r}",
    )
    require(
        num_classes >= 2,
        f"need at least 2 classes, got {num_classes}; neural collapse compares classes",
    )
    require(
        np.ndim(features) == 2,
        f"features must be a 2-D array [n, p], got shape {np.shape(features)}",
    )
    n = np.shape(features)[0]
    require(
        np.shape(labels) == (n,),
        f"labels must have shape [n] = [{n}] to match features, got {np.shape(labels)}",
    )
    if not is_concrete(features, labels):
        return
    check_finite("features", features)
    lab = np.asarray(labels)
    require(
        np.issubdtype(lab.dtype, np.integer),
        f"labels must be integers 0..C-1, got dtype {lab.dtype}; cast them with .astype(int)",
    )
    if lab.size:
        lo, hi = int(lab.min()), int(lab.max())
        require(
            lo >= 0 and hi < num_classes,
            f"labels must lie in 0..{num_classes - 1}, found {lo}..{hi}; "
            "relabel the classes or pass the right number of classes",
        )
    counts = np.bincount(lab, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    require(
        empty.size == 0,
        f"class {int(empty[0]) if empty.size else ''} has no sample; drop it and relabel the classes "
        "to 0..C-1",
    )
    few = np.flatnonzero(counts < min_per_class)
    require(
        few.size == 0,
        f"class {int(few[0]) if few.size else ''} has {int(counts[few[0]]) if few.size else 0} sample(s); "
        f"within-class statistics need at least {min_per_class} per class — add samples or drop it",
    )


@float64
def class_stats(
    features: Float[Array, "n p"], labels: Int[Array, " n"], num_classes: int
) -> ClassStats:
    """Class statistics of features (docs/theory.md §1).

    **Arguments:**

    - `features`: h_i as rows, shape [n, p].
    - `labels`: integer class of each row in 0..C−1, shape [n]. Checked before any compute
      when concrete (`InputError`); under `jax.jit`/`vmap` checked when the program runs
      (`eqx.error_if`: an `EquinoxRuntimeError` naming the range) — a label outside would
      drop its sample from every class but keep it in the global mean.
    - `num_classes`: C (static).

    **Returns:** a `ClassStats`. Σ_W is accumulated from centred deviations (not from second
    moments minus squared means) so that nearly collapsed features keep their precision. With
    float64 enabled (`jax_enable_x64`), features saved as float16/32 are analysed in float64:
    a float32 Σ_W resolves the signal-to-noise ratios only to ~1e-3 once features collapse.
    """
    validate_labelled_features(features, labels, num_classes)
    features = jnp.asarray(features)
    if jax.config.jax_enable_x64 and jnp.issubdtype(features.dtype, jnp.floating):
        features = features.astype(jnp.promote_types(features.dtype, jnp.float64))
    labels = jnp.asarray(labels)
    if not is_concrete(labels):
        labels = _checked_labels(labels, num_classes)
    return _class_stats(features, labels, num_classes)


def _checked_labels(labels, num_classes: int):
    """Labels traced under `jit`/`vmap`, checked when the program runs: a label outside
    0..C−1 had its sample dropped from every class (a one-hot row of zeros) but kept in the
    global mean (NC1 3.02 for 3.30), silently. The dtype is known while tracing."""
    require(
        jnp.issubdtype(labels.dtype, jnp.integer),
        f"labels must be integers 0..C-1, got dtype {labels.dtype}; cast them with .astype(int)",
    )
    return eqx.error_if(
        labels,
        jnp.any((labels < 0) | (labels >= num_classes)),
        f"labels must lie in 0..{num_classes - 1} (num_classes = {num_classes}); a label "
        "outside drops its sample from every class",
    )


@eqx.filter_jit
def _class_stats(features, labels, num_classes: int) -> ClassStats:
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    counts = jnp.sum(one_hot, axis=0)
    M = (features.T @ one_hot) / counts
    deviations = features - M.T[labels]
    sigma_w = deviations.T @ deviations / features.shape[0]
    return ClassStats(counts, M, sigma_w)


@float64
def within_class_deviations(
    features: Float[Array, "n p"], labels: Int[Array, " n"], stats: ClassStats
) -> Float[Array, "n p"]:
    """ε_i = h_i − μ_{c(i)}."""
    return features - stats.class_means.T[labels]
