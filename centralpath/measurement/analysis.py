"""Measure a features file with the yardstick of docs/theory.md §3, §5, §7 — one record per checkpoint.

Used by `centralpath analyze`, by `train` (to report while training) and by `compare`.
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import (
    InputError,
    check_lambda,
    is_concrete,
    require,
    require_classifier_shape,
)
from .._float64 import float64, float64_process
from .._least_squares import least_squares_classifier
from .._linalg import DEFAULT_RTOL
from .._loss import least_squares_loss_terms, loss_decomposition
from .._metrics import (
    _REFINE_ABOVE,
    _collapse_metrics,
    _resolved_snr,
    _snr_solve,
    nc4,
    snr_singular_values,
)
from .._quantities import RECORD_KEYS as RECORD_KEYS
from .._stats import ClassStats, _class_stats, validate_labelled_features
from ._io import FeaturesFile

#: Features beyond this magnitude (or varying by less than its inverse) are at the edge of
#: float64: the metrics form fourth powers of them (‖M̄ᵀM̄‖_F, Σ_W products), which overflow at
#: 1e308 or underflow at 1e-308. 1e75⁴ = 1e300 keeps every product in range.
FEATURE_SCALE_LIMIT = 1e75

#: Two class means closer than this fraction of the largest centred mean coincide: NC1, NC2 and
#: the SNR then describe C − 1 classes, not C.
COINCIDING_MEANS = 1e-8


def check_analysable(ff: FeaturesFile, source: str = "features file") -> None:
    """Conditions under which every metric is defined (Σ_W invertible on its range, p ≥ C−1)."""
    C, p = ff.num_classes, ff.features.shape[2]
    _check_dimension(p, C, source)
    for k in range(ff.num_checkpoints):
        H = np.asarray(ff.features[k])
        big = float(np.max(np.abs(H))) if H.size else 0.0
        spread = float(np.max(np.ptp(H, axis=0))) if H.size else 0.0
        _check_scale(big, spread, source, k)
    counts = np.bincount(ff.labels, minlength=C)
    if np.any(counts < 2):
        c = int(np.argmax(counts < 2))
        raise InputError(
            f"{source}: class {c} has {counts[c]} sample; Sigma_W (inverted for NC1 and the SNR) needs "
            "at least 2 samples per class — add samples or drop the class"
        )


def _coinciding_means(stats) -> jax.Array:
    """Whether two class means coincide (to `COINCIDING_MEANS` of the largest centred mean)."""
    M = stats.class_means
    gaps = jnp.linalg.norm(M[:, :, None] - M[:, None, :], axis=0)
    C = stats.num_classes
    off_diagonal = jnp.where(jnp.eye(C, dtype=bool), jnp.inf, gaps)
    scale = jnp.max(jnp.linalg.norm(stats.centred_means, axis=0))
    return jnp.min(off_diagonal) <= COINCIDING_MEANS * scale


def _from_stats(
    stats, W, b, lam, rtol: float, features=None, labels=None, frame_scatter=None, snr=None
):
    """Every record value but NC4 from the class statistics (and the classifier). With the
    samples at hand (`features`, `labels`) ω_j are resolved from the deviations when Σ_W alone
    cannot (docs/theory.md §7½); streamed checkpoints use the statistics alone. `snr`: ω_j
    already solved for by the caller."""
    out = {}
    if snr is None:
        snr = snr_singular_values(
            stats, rtol=rtol, features=features, labels=labels, frame_scatter=frame_scatter
        )
    m = _collapse_metrics(stats, W, rtol, snr)
    out.update(
        nc1=m.nc1,
        nc2_equinorm_means=m.nc2_equinorm_means,
        nc2_equiangular_means=m.nc2_equiangular_means,
        etf_distance=m.etf_distance,
        snr=m.snr,
        snr_beyond_resolution=m.snr_beyond_resolution,
        coinciding_means=_coinciding_means(stats),
    )
    if W is None:
        ls = least_squares_classifier(stats, lam, rtol=rtol)
        out["loss_nc1"], out["loss_nc23"] = least_squares_loss_terms(stats, ls, lam)
        out["ls_singular"] = ls.singular
    else:
        # One least-squares solve serves the decomposition and the singular flag (with a bias,
        # as the flag is defined; a classifier without one is decomposed against its own).
        ls = least_squares_classifier(stats, lam, rtol=rtol)
        d = loss_decomposition(stats, W, b, lam, rtol=rtol, ls=None if b is None else ls)
        out.update(
            nc2_equinorm_classifier=m.nc2_equinorm_classifier,
            nc2_equiangular_classifier=m.nc2_equiangular_classifier,
            nc3=m.nc3,
            nc4=None,  # per sample: filled in by the caller (keeps the record's key order)
            loss=d.loss,
            loss_nc1=d.nc1,
            loss_nc23=d.nc23,
            loss_perp=d.perp,
            w_ls_distance=d.w_ls_distance,
            ls_singular=ls.singular,
        )
    return out


@eqx.filter_jit
def _checkpoint(H, labels, W, b, lam, num_classes: int, rtol: float):
    stats = _class_stats(H, labels, num_classes)
    # The samples are at hand: ω_j are resolved from the deviations when Σ_W alone cannot.
    out = _from_stats(stats, W, b, lam, rtol, features=H, labels=labels)
    if W is not None:
        out["nc4"] = nc4(H, stats, W, b)
    return out


# One compiled program per (C, p) for every streamed checkpoint and statistics file.
_checkpoint_from_stats = eqx.filter_jit(_from_stats)


@eqx.filter_jit
def _checkpoint_and_resolution(stats, W, b, lam, rtol: float):
    """`_from_stats` and whether ω_j need the samples (`snr_needs_samples`), from one SNR
    solve (its branches, Cholesky or eigendecomposition, are chosen at run time: XLA would not
    merge two copies of them)."""
    omega, err = _snr_solve(stats, rtol)
    needs = jnp.max(jnp.where(jnp.isfinite(err), err, jnp.inf)) > _REFINE_ABOVE
    snr = _resolved_snr(stats, rtol, omega, err)
    return _from_stats(stats, W, b, lam, rtol, snr=snr), needs


def _record(epoch: float, out: dict) -> dict:
    rec = {key: None for key in RECORD_KEYS}
    rec["epoch"] = float(epoch)
    for key, v in out.items():
        rec[key] = None if v is None else np.asarray(v).tolist()
    return rec


@float64_process
def analyze(
    ff,
    *,
    weight_decay: float | None = None,
    rtol: float = DEFAULT_RTOL,
    source: str = "features file",
    rows: int | None = None,
    on_checkpoint=None,
) -> list[dict]:
    """Measure every checkpoint of a features or statistics file: what `centralpath analyze`
    prints, as one record per checkpoint.

    **Arguments:**

    - `ff`: a path (a features file, a statistics file, or a folder of per-checkpoint files:
      read streamed, as the command line does), a `FeaturesFile` of `load_features` (features
      in memory), or a streamed source of `open_source`. Streamed, the memory is
      O(rows·p + p² + C·p) whatever n and K, NC4 is counted in the same pass over each
      checkpoint's chunks (reading again only the samples whose decision the final class
      means could change), and ω_j come from the statistics alone (resolved down to ~1e-14 of
      the total variance instead of ~1e-20 with the samples in memory).
    - `weight_decay`: λ of the loss decomposition (paper scale); the file's `weight_decay`
      unless given — docs/theory.md §7½: with λ = 0 the least-squares classifier of real
      features is ill-conditioned and the distance to it meaningless.
    - `rtol`: relative threshold below which Σ_B's and Σ_W's eigenvalues count as zero.
    - `rows`: samples per chunk when streaming (default: sized to the memory).
    - `on_checkpoint(checkpoint)`: receives each streamed checkpoint's statistics
      (`--save-stats`).

    **Returns:** a list with one dict per checkpoint, with the keys of `RECORD_KEYS`: NC1–NC4,
    the loss L and its terms `loss_nc1` + `loss_nc23` + `loss_perp`, `w_ls_distance`, `snr` (ω_1
    ≥ … ≥ ω_{C−1}); the classifier's keys are None when the file has no W. Computed in float64
    whatever `jax_enable_x64` (switched on for the call: the chunks are read on worker threads).

    ```python
    import centralpath as cp

    records = cp.analyze("runs/digits/features.npz")
    print(records[-1]["nc1"], records[-1]["snr"])
    ```
    """
    if isinstance(ff, str | os.PathLike):
        from ._stream import open_source

        ff = open_source(ff)
    if not isinstance(ff, FeaturesFile):
        return _analyze_streamed(ff, weight_decay, rtol, rows, on_checkpoint)
    check_analysable(ff, source)
    lam = ff.weight_decay if weight_decay is None else float(weight_decay)
    require(lam >= 0, f"weight decay must be >= 0, got {lam}")
    labels = jnp.asarray(ff.labels)
    records = []
    for k in range(ff.num_checkpoints):
        if ff.W is not None:
            big = float(np.max(np.abs(ff.features[k])))
            _check_classifier_scale(ff.W[k], ff.b[k], big, source, k)
        W = None if ff.W is None else jnp.asarray(ff.W[k])
        b = None if ff.b is None else jnp.asarray(ff.b[k])
        out = jax.device_get(
            _checkpoint(jnp.asarray(ff.features[k]), labels, W, b, lam, ff.num_classes, rtol)
        )
        records.append(_record(ff.epochs[k], out))
    return records


@float64
def measure(
    features=None,
    labels=None,
    *,
    stats: ClassStats | None = None,
    num_classes: int | None = None,
    W=None,
    b=None,
    weight_decay: float = 0.0,
    rtol: float = DEFAULT_RTOL,
    epoch: float = 0.0,
) -> dict:
    """One record of `analyze` (the keys of `RECORD_KEYS`) from arrays, no file involved.

    **Arguments:**

    - `features`, `labels`: the features [n, p] (NumPy or JAX, any float dtype) and their
      integer labels [n] in 0..C−1 — every metric; or
    - `stats`: their `ClassStats` instead — every metric but NC4, which needs the samples.
    - `num_classes`: C (default: the largest label + 1).
    - `W` [C, p], `b` [C]: the classifier — adds NC2/NC3/NC4 of W and the loss decomposition
      at ridge λ = `weight_decay` (paper scale); `b` defaults to zeros.
    - `rtol`, `epoch`: as in `analyze`; `epoch` is copied into the record.

    **Returns:** a dict with the keys of `RECORD_KEYS` (NumPy values; the classifier's keys are
    None without W). Computed in float64 whatever `jax_enable_x64`: float32 features are
    measured as `centralpath analyze` measures them. A path instead of arrays is a `TypeError`;
    p < C − 1, a W with the wrong shape, or bad labels are a `ValueError` with one line that
    names the fix.

    ```python
    import numpy as np
    import centralpath as cp

    f = np.load("runs/digits/features.npz")
    r = cp.measure(f["features"][-1], f["labels"], W=f["W"][-1], b=f["b"][-1],
                   weight_decay=float(f["weight_decay"]))
    print(r["nc1"], r["snr"], r["loss_perp"])
    ```
    """
    require(
        (features is None) != (stats is None),
        "give either features and labels, or the class statistics (stats=...), not both",
    )
    for name, x in (("features", features), ("labels", labels)):
        if isinstance(x, str | os.PathLike):
            raise TypeError(
                f"measure takes arrays, got a path for {name} ({str(x)!r}); for a features file "
                f"use cp.analyze({str(x)!r}), or load it with cp.load_features"
            )
    if stats is not None and not isinstance(stats, ClassStats):
        raise TypeError(
            f"stats must be a ClassStats (cp.class_stats(features, labels, C)), got "
            f"{type(stats).__name__}"
        )
    lam = check_lambda(weight_decay, "weight_decay")
    Wj = None if W is None else jnp.asarray(W, float)
    bj = (
        None
        if (b is None and W is None)
        else jnp.asarray(np.zeros(Wj.shape[0]) if b is None else b, float)
    )
    if Wj is not None and is_concrete(Wj, bj):
        means = stats.class_means if stats is not None else features
        big = float(np.max(np.abs(np.asarray(means)))) if np.size(means) else 0.0
        _check_classifier_scale(np.asarray(Wj), np.asarray(bj), big, "measure", 0)
    if stats is not None:
        _check_dimension(stats.dim, stats.num_classes)
        if Wj is not None:
            require_classifier_shape(Wj, bj, stats.num_classes, stats.dim)
        out = jax.device_get(_checkpoint_from_stats(stats, Wj, bj, lam, rtol))
        return _record(epoch, out)
    C = int(np.max(labels)) + 1 if num_classes is None else int(num_classes)
    validate_labelled_features(features, labels, C, min_per_class=2)
    _check_dimension(np.shape(features)[1], C)
    if Wj is not None:
        require_classifier_shape(Wj, bj, C, np.shape(features)[1])
    H = jnp.asarray(features, float)
    out = jax.device_get(_checkpoint(H, jnp.asarray(labels), Wj, bj, lam, C, rtol))
    return _record(epoch, out)


def _check_dimension(p: int, C: int, source: str = "measure") -> None:
    require(
        p >= C - 1,
        f"{source}: feature dimension p = {p} is below C-1 = {C - 1}; the class means need C-1 "
        "dimensions — capture a wider layer",
    )


def _check_scale(big, spread, source: str, k: int) -> None:
    """The float64 range check of one checkpoint's features (in memory or streamed): their
    largest magnitude `big` and the largest range of a feature over the samples `spread`."""
    if big is not None and not big <= FEATURE_SCALE_LIMIT:
        raise InputError(
            f"{source}: the features at checkpoint {k} reach {big:.1e}, where their products "
            f"overflow float64; rescale them (every collapse metric is scale-invariant), e.g. "
            f"divide by {big:.0e}"
        )
    if spread is not None and spread == 0.0:
        raise InputError(
            f"{source}: the features at checkpoint {k} are the same for every sample (no "
            "feature varies), so no class differs from another and no collapse metric is "
            "defined; check that the features were captured from the right layer and inputs"
        )
    if spread is not None and not spread >= 1.0 / FEATURE_SCALE_LIMIT:
        raise InputError(
            f"{source}: the features at checkpoint {k} vary by at most {spread:.1e}, where their "
            "second moments underflow float64; rescale them (every collapse metric is "
            f"scale-invariant), e.g. multiply by {1 / spread:.0e}"
        )


def _check_classifier_scale(W, b, big: float, source: str, k: int) -> None:
    """The float64 range check of a classifier W, b for features of magnitude `big`: the
    loss squares the outputs W h + b, which must stay far from overflow; a W below 1e-75 is
    rounded to zero by the solver's arithmetic (denormals are flushed). NC2 and NC3 are computed
    scale-free (`_metrics._scale_free`), so the refusal protects the loss, which is not."""
    if W is None:
        return
    top_w = float(np.max(np.abs(W))) if W.size else 0.0
    top_b = float(np.max(np.abs(b))) if b is not None and b.size else 0.0
    output = top_w * max(big, 1.0)
    over = [
        (v, name)
        for v, name in ((top_w, "W"), (top_b, "b"), (output, "W h"))
        if not v <= FEATURE_SCALE_LIMIT
    ]
    if over:
        worst, name = over[0]
        raise InputError(
            f"{source}: the classifier at checkpoint {k} reaches |{name}| = {worst:.1e}, where "
            "the loss's products overflow float64; rescale W and b together, e.g. divide both "
            f"by {worst:.0e} (NC1-NC4 are unchanged; the loss becomes that of the rescaled "
            "classifier)"
        )
    if 0.0 < top_w < 1.0 / FEATURE_SCALE_LIMIT:
        raise InputError(
            f"{source}: the classifier W at checkpoint {k} reaches only {top_w:.1e}, below "
            "float64's normal range in its products; rescale W and b together, e.g. multiply "
            f"both by {1 / top_w:.0e} (NC1-NC4 are unchanged)"
        )


def _check_counts(counts, source: str) -> None:
    if np.any(counts < 2):
        c = int(np.argmax(counts < 2))
        raise InputError(
            f"{source}: class {c} has {int(counts[c])} sample; Sigma_W (inverted for NC1 and the "
            "SNR) needs at least 2 samples per class — add samples or drop the class"
        )


def _analyze_streamed(src, weight_decay, rtol, rows, on_checkpoint) -> list[dict]:
    source = src.source
    C, p = src.num_classes, src.dim
    _check_dimension(p, C, source)
    if src.kind == "features":
        _check_counts(src.class_counts(), source)
    else:
        for counts in src.counts:
            _check_counts(counts, source)
    lam = src.weight_decay if weight_decay is None else float(weight_decay)
    require(lam >= 0, f"weight decay must be >= 0, got {lam}")
    records = []
    for k, ck in enumerate(src.checkpoints(rows)):
        big, spread = ck.feature_max_abs, ck.feature_spread
        if big is None:  # a statistics file without the features' range: bound it by theirs
            big = float(np.max(np.abs(ck.acc.means)))
        _check_scale(big, spread, source, k)
        _check_classifier_scale(ck.W, ck.b, big, source, k)
        stats = ck.acc.finalize()
        W = None if ck.W is None else jnp.asarray(ck.W)
        b = None if ck.b is None else jnp.asarray(ck.b)
        out, needs = jax.device_get(_checkpoint_and_resolution(stats, W, b, lam, rtol))
        if src.kind == "features" and bool(needs):
            # The statistics alone cannot resolve some ω_j to ~1e-9 (anisotropic collapse):
            # one more pass re-accumulates Σ_W in the collapse frame, as with the samples in
            # memory (docs/theory.md §7½).
            frame_scatter = src.frame_scatter(k, stats, rtol, rows)
            out = jax.device_get(
                _checkpoint_from_stats(stats, W, b, lam, rtol, frame_scatter=frame_scatter)
            )
        if W is not None and float(ck.acc.nc4_samples) > 0:
            out["nc4"] = float(ck.acc.nc4())
        records.append(_record(ck.epoch, out))
        if on_checkpoint is not None:
            on_checkpoint(ck)
        del ck, stats
        _return_freed_memory()
    return records


def _return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system between checkpoints (glibc only).

    The compiled metrics leave freed blocks scattered over the allocator's arenas; without
    this the peak memory crept up by ~30 MB over the first checkpoints of a long file (measured
    at p = 512), which streaming is meant to keep flat in K."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None
