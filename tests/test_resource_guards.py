"""Resource guards and strict values (issue 14): hostile sizes are refused before allocating.

Every hostile input here must end with exit status 2, exactly one line on stderr, no "internal
error", no traceback, and within seconds. Forged `.npz` files are written by hand (a zip writer
below, `.npy` headers from numpy.lib.format) so that a member can *declare* 8 GiB or a
(10**12, 10**6) shape while the file stays a few kilobytes: nothing large is ever allocated here,
and the subprocess cases run under a small RLIMIT_AS, where a guard that allocated first would
fail with MemoryError ("internal error") instead of refusing.
"""

import io
import math
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from _hostile import PEAK_LIMIT, TIME_LIMIT, GiB, assert_refused, run_cli
from hypothesis import HealthCheck, given, settings, strategies as st

from centralpath._errors import SEED_MAX, InputError
from centralpath._run.resources import MEMORY_ENV, WORK_ENV, format_bytes, memory_limit, parse_size
from centralpath.cli import COMMANDS, main
from centralpath.measurement._io import load_npz, npz_headers

# ------------------------------------------------------------------ forging files


def npy(shape, dtype="<f8", data: bytes = b"") -> bytes:
    """An `.npy` image: a real version-1.0 header declaring `shape`, then `data` (any length)."""
    buf = io.BytesIO()
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(shape),
    }
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def arr(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zeros_deflate(total: int, block: int = 1 << 20) -> bytes:
    """A raw deflate stream of `total` zero bytes built from one compressed block repeated: a
    full flush makes each copy self-contained, so 8 GiB costs ~8 MiB and no 8 GiB pass."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = c.compress(b"\0" * block) + c.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total, block)
    tail = c.compress(b"\0" * rest) + c.flush()
    return one * count + tail


def write_zip(path, members) -> Path:
    """A zip written by hand. `members`: name -> (payload, declared uncompressed size, method,
    crc) or just the bytes of a stored member. Sizes of 4 GiB and more get zip64 fields, as
    numpy/zipfile write them."""
    out, central = bytearray(), bytearray()
    for name, spec in members.items():
        if isinstance(spec, bytes):
            spec = (spec, len(spec), zipfile.ZIP_STORED, zlib.crc32(spec))
        payload, size, method, crc = spec
        fname = name.encode()
        zip64 = size >= 0xFFFFFFFF or len(payload) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, len(payload)) if zip64 else b""
        usz, csz = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (size, len(payload))
        version = 45 if zip64 else 20
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            version,
            0,
            method,
            0,
            0x21,
            crc,
            csz,
            usz,
            len(fname),
            len(extra),
        )
        out += fname + extra + payload
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            version,
            version,
            0,
            method,
            0,
            0x21,
            crc,
            csz,
            usz,
            len(fname),
            len(extra),
            0,
            0,
            0,
            0,
            offset,
        )
        central += fname + extra
    n = len(members)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(out), 0)
    Path(path).write_bytes(bytes(out + central + eocd))
    return Path(path)


def good_members(n_per_class=4, C=3, p=3):
    rng = np.random.default_rng(0)
    return {
        "features.npy": arr(rng.normal(size=(C * n_per_class, p))),
        "labels.npy": arr(np.repeat(np.arange(C), n_per_class)),
    }


def bomb(shape, dtype="<f8", stream_bytes=None):
    """A deflated member whose header and zip entry both declare the full size (what a real
    bomb does), its stream a run of zeros of that size (or of `stream_bytes`: a member cut
    short, whose reading would fail only after allocating)."""
    head = npy(shape, dtype)
    size = len(head) + math.prod(shape) * np.dtype(dtype).itemsize
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = size - len(head) if stream_bytes is None else stream_bytes
    return (stream + zeros_deflate(zeros), size, zipfile.ZIP_DEFLATED, 0)


# ------------------------------------------------------------------ running the command line


def main_refuses(capsys, argv, contains=()):
    """In-process variant (no memory limit): for value checks, which allocate nothing anyway."""
    start = time.monotonic()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err
    assert_refused(code, err, time.monotonic() - start, contains=contains)
    return err


# ------------------------------------------------------------------ hostile features files


def _forged_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its refusal must contain)."""
    labels = np.repeat(np.arange(3), 4)
    rng = np.random.default_rng(1)
    feats = arr(rng.normal(size=(12, 3)))
    files = {
        # bincount(labels) would allocate 2**40 counters: 8 TiB.
        "label_2_40": (
            {"features.npy": feats, "labels.npy": arr(np.r_[labels[:-1], 2**40])},
            "only 12 samples",
        ),
        "num_classes_2_40": (
            {"features.npy": feats, "labels.npy": arr(labels), "num_classes.npy": arr(2**40)},
            "only 12 samples",
        ),
        # A header claiming 6.9 EiB inside a member of a few hundred bytes.
        "header_exa": (
            {"features.npy": npy((10**12, 10**6)), "labels.npy": arr(labels)},
            "holds only",
        ),
        # A 100,000² float64 header (74.5 GiB) whose zip entry declares that size too (zip64),
        # over a stream of only 64 MiB.
        "header_74_gib": (
            {
                "features.npy": bomb((100_000, 100_000), stream_bytes=64 << 20),
                "labels.npy": arr(np.arange(100_000) % 3),
            },
            "of memory",
        ),
        # A real bomb: 8 GiB of zeros in ~8 MiB of deflate stream. `analyze` streams features in
        # chunks, so it would fit in memory: it is refused by its expansion ratio instead.
        "bomb_8_gib": (
            {"features.npy": bomb((2**20, 2**10)), "labels.npy": arr(np.arange(2**20) % 3)},
            "zip bomb",
        ),
        # 10**7 checkpoints of 4 samples: 160 MB of features, but a record each (~40 GiB).
        "many_checkpoints": (
            {"features.npy": bomb((10**7, 4, 1), "<f4"), "labels.npy": arr(np.arange(4) % 2)},
            "of memory",
        ),
        "bzip2_member": (
            {
                "features.npy": (b"BZh91AY&SY", len(feats), zipfile.ZIP_BZIP2, 0),
                "labels.npy": arr(labels),
            },
            "compression method 12",
        ),
    }
    # A member that inflates past its declared size: the header and the zip entry say 12×3
    # float64 (what a reader would budget), the stream holds 8 MiB more.
    head = arr(rng.normal(size=(12, 3)))
    long = head + b"\0" * (8 << 20)
    files["inflates_past_declared"] = (
        {
            "features.npy": (deflate(long), len(head), zipfile.ZIP_DEFLATED, zlib.crc32(long)),
            "labels.npy": arr(labels),
        },
        "features",
    )
    return {
        name: (write_zip(d / f"{name}.npz", members), phrase)
        for name, (members, phrase) in files.items()
    }


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    return _forged_files(tmp_path_factory.mktemp("forged"))


@pytest.mark.parametrize(
    "name",
    [
        "label_2_40",
        "num_classes_2_40",
        "header_exa",
        "header_74_gib",
        "bomb_8_gib",
        "many_checkpoints",
        "bzip2_member",
        "inflates_past_declared",
    ],
)
def test_forged_features_refused_under_rlimit(forged, tmp_path, name):
    path, phrase = forged[name]
    outcome = run_cli("analyze", path, "--quiet", tmp_path=tmp_path)
    assert_refused(*outcome, contains=[phrase])


def test_forged_headers_refused_in_process(forged, monkeypatch):
    """The same files through the library: InputError, never MemoryError. (The limit is set:
    this process has no RLIMIT_AS, and the 8 GiB bomb is legal where 18 GiB are available.)"""
    from centralpath.measurement._io import load_features

    monkeypatch.setenv(MEMORY_ENV, "2G")
    for path, _ in forged.values():
        with pytest.raises(InputError):
            load_features(path)


def test_not_an_archive_keeps_its_own_message(tmp_path):
    """The archive checks are not rewrapped as "not a readable archive (InputError: …)"."""
    np.save(tmp_path / "lone.npy", np.ones(3))
    (tmp_path / "text.npz").write_text("hello")
    for name, phrase in (("lone.npy", "is a single .npy array"), ("text.npz", "no zip header")):
        with pytest.raises(InputError) as info:
            load_npz(tmp_path / name)
        assert phrase in str(info.value) and "InputError" not in str(info.value)


def test_huge_zip_directory_refused_before_parsing(tmp_path, monkeypatch):
    """zipfile would build an object per member first; the directory's size is read from the
    end record and refused (here with the limit lowered, so the file can stay small)."""
    import centralpath.measurement._io as io_module

    members = {f"m{i}.npy": arr(np.zeros(1)) for i in range(200)}
    path = write_zip(tmp_path / "many.npz", {**good_members(), **members})
    assert len(npz_headers(path)) == 202  # under the real limit: read as usual
    monkeypatch.setattr(io_module, "MAX_DIRECTORY_BYTES", 4096)
    with pytest.raises(InputError, match="zip directory of .* members"):
        load_npz(path)


def test_unused_member_is_never_read(tmp_path, capsys):
    """A features file carrying an 8 GiB bomb under a key analyze does not use still works."""
    members = good_members()
    members["junk.npy"] = bomb((2**30,))
    path = write_zip(tmp_path / "f.npz", members)
    assert set(npz_headers(path)) == {"features", "labels", "junk"}
    start = time.monotonic()
    assert main(["analyze", str(path), "--quiet"]) == 0, capsys.readouterr().err
    assert time.monotonic() - start < TIME_LIMIT


@pytest.mark.parametrize(("p", "n"), [(20_000, 6), (5_000, 6)])
def test_p_much_larger_than_n_refused_up_front(tmp_path, p, n):
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.npz"
    np.savez(path, features=rng.normal(size=(n, p)).astype(np.float32), labels=np.arange(n) % 3)
    outcome = run_cli("analyze", path, "--quiet", tmp_path=tmp_path)
    assert_refused(*outcome, contains=[f"p = {p}", f"n = {n}", "project the features", WORK_ENV])


def test_memory_limit_names_estimate_limit_and_fix(tmp_path, capsys, monkeypatch):
    path = write_zip(tmp_path / "f.npz", good_members(n_per_class=400, p=64))
    monkeypatch.setenv(MEMORY_ENV, "1M")
    err = main_refuses(capsys, ["analyze", path, "--quiet"], contains=[MEMORY_ENV, "1 MiB set by"])
    assert "needs about" in err
    monkeypatch.setenv(MEMORY_ENV, "64G")
    assert main(["analyze", str(path), "--quiet"]) == 0
    monkeypatch.setenv(MEMORY_ENV, "lots")
    main_refuses(capsys, ["analyze", path, "--quiet"], contains=[MEMORY_ENV, "64G"])


def test_compare_refuses_non_monotone_epochs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for epochs in ([0, 10, 5], [0, 5, 5]):
        path = tmp_path / "f.npz"
        np.savez(
            path,
            features=rng.normal(size=(3, 12, 3)),
            labels=np.repeat(np.arange(3), 4),
            epochs=np.array(epochs),
        )
        main_refuses(capsys, ["compare", path, "--quiet"], contains=["increase strictly"])


# ------------------------------------------------------------------ hostile statistics files


def _statistics_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, phrase): a valid statistics file of this package, altered one way each
    (issue 29: statistics files were checked only for symmetry)."""
    from centralpath.measurement._stream import open_source, save_stats

    rng = np.random.default_rng(3)
    C, n_c, p, K = 3, 40, 6, 2
    labels = np.repeat(np.arange(C), n_c)
    centres = rng.normal(size=(C, p)) * 3
    H = np.stack([centres[labels] + rng.normal(size=(C * n_c, p)) for _ in range(K)])
    features = d / "features.npz"
    W, b = rng.normal(size=(K, C, p)), rng.normal(size=(K, C))
    np.savez(features, features=H, labels=labels, W=W, b=b, weight_decay=1e-3)
    save_stats(d / "stats.npz", list(open_source(features).checkpoints()), weight_decay=1e-3)
    with np.load(d / "stats.npz") as f:
        good = dict(f)
    sigma = good["sigma_w"]
    one_negative = sigma.copy()
    for k in range(K):  # one eigenvalue flipped to minus the largest: NC1 0.0486 for 0.0659
        w, V = np.linalg.eigh(sigma[k])
        w[0] = -w.max()
        one_negative[k] = (V * w) @ V.T
        one_negative[k] = (one_negative[k] + one_negative[k].T) / 2
    empty = {k: v[:0] for k, v in good.items() if v.ndim and v.shape[0] == K}
    variants = {
        "minus_identity": (
            {"sigma_w": -np.broadcast_to(np.eye(p), sigma.shape)},
            "not a covariance",
        ),
        "one_negative_eigenvalue": ({"sigma_w": one_negative}, "smallest eigenvalue"),
        "counts_1e308": ({"counts": np.full_like(good["counts"], 1e308)}, "2**53"),
        "counts_total_over_2_53": ({"counts": np.full_like(good["counts"], 2.0**52)}, "total"),
        "zero_checkpoints": (empty, "no checkpoint"),
        "stats_version_2": ({"stats_version": np.int64(2)}, "'stats_version' is 2"),
        "stats_version_text": ({"stats_version": np.asarray("1")}, "'stats_version'"),
        "features_and_statistics": ({"features": H, "labels": labels}, "one kind"),
        "feature_spread_0": ({"feature_spread": np.zeros(K)}, "'feature_spread'"),
        "feature_spread_negative": ({"feature_spread": -np.ones(K)}, "'feature_spread'"),
        "spread_beyond_max_abs": (
            {"feature_spread": good["feature_max_abs"] * 3},
            "more than twice",
        ),
        "max_abs_negative": ({"feature_max_abs": -np.ones(K)}, "'feature_max_abs'"),
        "means_inf": ({"class_means": np.full_like(good["class_means"], np.inf)}, "non-finite"),
        "classifier_1e300": ({"W": W * 1e300, "b": b * 1e300}, "|W| = "),
        "bias_1e300": ({"b": b * 1e300}, "|b| = "),
        "classifier_1e-300": ({"W": W * 1e-300}, "multiply both"),
    }
    out = {"features": (features, ""), "stats": (d / "stats.npz", "")}
    for name, (change, phrase) in variants.items():
        arrays = {**good, **change}
        np.savez(d / f"{name}.npz", **arrays)
        out[name] = (d / f"{name}.npz", phrase)
    # The features themselves: every sample identical (ZeroDivisionError), a classifier at 1e300.
    np.savez(d / "identical_samples.npz", features=np.ones((12, 3)), labels=labels[::10])
    out["identical_samples"] = (d / "identical_samples.npz", "the same for every sample")
    np.savez(d / "features_classifier_1e300.npz", features=H, labels=labels, W=W * 1e300, b=b)
    out["features_classifier_1e300"] = (d / "features_classifier_1e300.npz", "|W| = ")
    return out


@pytest.fixture(scope="module")
def statistics_files(tmp_path_factory):
    return _statistics_files(tmp_path_factory.mktemp("statistics"))


STATISTICS_CASES = [
    "minus_identity",
    "one_negative_eigenvalue",
    "counts_1e308",
    "counts_total_over_2_53",
    "zero_checkpoints",
    "stats_version_2",
    "stats_version_text",
    "features_and_statistics",
    "feature_spread_0",
    "feature_spread_negative",
    "spread_beyond_max_abs",
    "max_abs_negative",
    "means_inf",
    "classifier_1e300",
    "bias_1e300",
    "classifier_1e-300",
    "identical_samples",
    "features_classifier_1e300",
]


@pytest.mark.parametrize("command", ["analyze", "compare"])
@pytest.mark.parametrize("name", STATISTICS_CASES)
def test_statistics_files_checked_as_what_they_claim(statistics_files, tmp_path, name, command):
    path, phrase = statistics_files[name]
    if command == "compare" and name in ("zero_checkpoints", "identical_samples"):
        phrase = "checkpoint"  # compare refuses fewer than 2 checkpoints first
    out = tmp_path / "o.json"
    outcome = run_cli(
        command,
        path,
        "--quiet",
        *(["--json", out] if command == "analyze" else []),
        tmp_path=tmp_path,
    )
    assert_refused(*outcome, contains=[phrase])
    assert not out.exists()


def test_the_valid_statistics_file_still_reads(statistics_files, capsys):
    """The checks refuse the altered files, not the one this package wrote (nor its features)."""
    for name in ("stats", "features"):
        assert main(["analyze", str(statistics_files[name][0]), "--quiet"]) == 0, name
    capsys.readouterr()


def test_covariance_tolerance_is_relative_to_the_scale():
    """PSD to COVARIANCE_RTOL of the largest variance, whatever the scale: rounding-level
    negative eigenvalues (a rank-deficient Σ_W) pass, one at 1e-6 of the largest is refused."""
    from centralpath.measurement._io import COVARIANCE_RTOL, check_covariance

    rng = np.random.default_rng(0)
    V = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    for scale in (1e-150, 1.0, 1e150):
        for low, ok in (
            (-1e-14, True),
            (0.0, True),
            (-1e-6, False),
            (-10 * COVARIANCE_RTOL, False),
        ):
            S = (V * (scale * np.array([low, 0.1, 0.5, 0.7, 1.0]))) @ V.T
            S = (S + S.T) / 2
            if ok:
                check_covariance("sigma_w", S, 0, "s")
            else:
                with pytest.raises(InputError, match="smallest eigenvalue"):
                    check_covariance("sigma_w", S, 0, "s")
    check_covariance("sigma_w", np.zeros((3, 3)), 0, "s")  # perfect collapse is a covariance


def test_classifier_metrics_are_scale_free():
    """NC2 (classifier) and NC3 of W·2**k are the bits of W's, and of W·1e±300 equal to 1e-15
    (issue 29: W at 1e300 gave NC3 = 1.0 for 0.31)."""
    import jax.numpy as jnp

    from centralpath._metrics import nc2_equiangular_classifier, nc2_equinorm_classifier, nc3
    from centralpath._stats import class_stats

    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    W = rng.normal(size=(3, 4))
    stats = class_stats(jnp.asarray(H), jnp.asarray(y), 3)
    ref = [float(f(jnp.asarray(W))) for f in (nc2_equinorm_classifier, nc2_equiangular_classifier)]
    ref.append(float(nc3(stats, jnp.asarray(W))))
    for factor, rtol in ((2.0**900, 0.0), (2.0**-900, 0.0), (1e300, 1e-15), (1e-300, 1e-15)):
        Ws = jnp.asarray(W * factor)
        got = [float(nc2_equinorm_classifier(Ws)), float(nc2_equiangular_classifier(Ws))]
        got.append(float(nc3(stats, Ws)))
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=0)


# ------------------------------------------------------------------ hostile text files, flags, configs


def _deep_toml(depth: int) -> str:
    return "x = " + "[" * depth + "]" * depth + "\n"


@pytest.fixture(scope="module")
def lr_features(tmp_path_factory):
    """Features with the training record (`--clock lr`) whose classifier is least-squares."""
    from centralpath import class_stats, least_squares_classifier
    from centralpath.measurement._io import save_features

    d = tmp_path_factory.mktemp("lr")
    rng = np.random.default_rng(0)
    C, n_c, p, lam = 3, 20, 4, 1e-3
    labels = np.repeat(np.arange(C), n_c)
    means, eps = 2.0 * rng.normal(size=(C, p)), rng.normal(size=(C * n_c, p))
    H = np.stack([means[labels] + 0.5**k * eps for k in range(4)])
    ls = [least_squares_classifier(class_stats(h, labels, C), lam) for h in H]
    save_features(
        d / "f.npz",
        features=H,
        labels=labels,
        W=np.stack([np.asarray(x.W) for x in ls]),
        b=np.stack([np.asarray(x.b) for x in ls]),
        epochs=np.arange(4.0),
        weight_decay=lam,
        learning_rate=np.full(4, 0.1),
        momentum=np.float64(0.9),
        steps_per_epoch=np.int64(10),
        loss="mse",
    )
    return d / "f.npz"


KAPPA_CASES = {
    # name -> (file content or None for /dev/zero, extra flags, phrase)
    "dev_zero": (None, [], "larger than"),
    "over_size_limit": ("sparse", [], "larger than"),
    "nested_100000": ("[" * 100_000 + "]" * 100_000, [], "more than 64 deep"),
    "nested_70": ('{"a": ' * 70 + "1" + "}" * 70, [], "more than 64 deep"),
    "kappa_1e308": (
        '{"model": "closed-form", "clock": "lr", "kappa": 1e308}',
        [],
        "beyond 1e+300",
    ),
    "kappa_inf": ('{"model": "closed-form", "clock": "lr", "kappa": Infinity}', [], "finite"),
    "not_utf8": (b"\xff\xfe{", [], "not UTF-8"),
    "flag_kappa_1e308": ("", ["--kappa", "1e308"], "beyond 1e+300"),
}


@pytest.mark.parametrize("name", sorted(KAPPA_CASES))
def test_compare_kappa_sources_bounded(lr_features, tmp_path, name):
    """`--kappa-from` read /dev/zero whole (6 GB in 19 s), overflowed at κ = 1e308 and ran on,
    and hit a RecursionError at 100,000 levels (issue 29)."""
    from centralpath.measurement._io import MAX_JSON_BYTES

    content, flags, phrase = KAPPA_CASES[name]
    path = tmp_path / "k.json"
    if content is None:
        path = Path("/dev/zero")
    elif content == "sparse":
        with open(path, "wb") as fh:
            fh.truncate(MAX_JSON_BYTES + 1)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    source = flags or ["--kappa-from", path]
    outcome = run_cli(
        "compare",
        lr_features,
        "--model",
        "closed-form",
        "--clock",
        "lr",
        *source,
        "--quiet",
        "--no-figures",
        "--out",
        tmp_path / "run",
        tmp_path=tmp_path,
    )
    assert_refused(*outcome, contains=[phrase])
    assert not (tmp_path / "run").exists()


SIM_SMALL = [
    "simulate",
    "--flow",
    "central-path",
    "--classes",
    "3",
    "--per-class",
    "4",
    "--dim",
    "3",
]
SIM_SMALL += ["--num-saves", "4"]
CONFIG_CASES = {
    "simulate_toml_1000_deep": (
        ["simulate", "--config", "{cfg}", "--out", "{out}"],
        _deep_toml(1000),
    ),
    "simulate_table_70_deep": (
        ["simulate", "--config", "{cfg}", "--out", "{out}"],
        "x = " + "{a = " * 70 + "1" + "}" * 70 + "\n",
    ),
    "train_toml_1000_deep": (["train", "--config", "{cfg}", "--out", "{out}"], _deep_toml(1000)),
    "sweep_toml_1000_deep": (["sweep", "{cfg}", "--out", "{out}"], _deep_toml(1000)),
    "demo_toml_1000_deep": (["demo", "--config", "{cfg}", "--out", "{out}"], _deep_toml(1000)),
    "simulate_config_dev_zero": (["simulate", "--config", "/dev/zero", "--out", "{out}"], None),
    "simulate_config_over_size": (["simulate", "--config", "{cfg}", "--out", "{out}"], "sparse"),
    "demo_etas_empty": (
        ["demo", "--config", "{cfg}", "--out", "{out}"],
        "[convergence]\netas = []\n",
    ),
    "demo_etas_one": (
        ["demo", "--config", "{cfg}", "--out", "{out}"],
        "[convergence]\netas = [100.0]\n",
    ),
    "demo_etas_text": (
        ["demo", "--config", "{cfg}", "--out", "{out}"],
        '[convergence]\netas = ["a", 1.0]\n',
    ),
    "demo_eta_zero": (
        ["demo", "--config", "{cfg}", "--out", "{out}"],
        "[convergence]\netas = [0.0, 1.0]\n",
    ),
    "demo_training_epochs_0": (
        ["demo", "--config", "{cfg}", "--out", "{out}"],
        "[training]\nepochs = 0\n",
    ),
    "demo_t_end_5e-324": (
        ["demo", "--config", "{cfg}", "--out", "{out}"],
        "[simulation]\nt_end = 5e-324\n",
    ),
    "simulate_max_steps_1e30": (
        [*SIM_SMALL, "--max-steps", str(10**30), "--out", "{out}"],
        None,
    ),
    "simulate_max_gd_steps_1e30": (
        [*SIM_SMALL, "--max-gd-steps", str(10**30), "--out", "{out}"],
        None,
    ),
    "simulate_t_end_5e-324": ([*SIM_SMALL, "--t-end", "5e-324", "--out", "{out}"], None),
    "simulate_t_end_float32_1e-40": (
        [*SIM_SMALL, "--t-end", "1e-40", "--precision", "float32", "--out", "{out}"],
        None,
    ),
    "simulate_t_end_float32_1e39": (
        [*SIM_SMALL, "--t-end", "1e39", "--precision", "float32", "--out", "{out}"],
        None,
    ),
}
CONFIG_PHRASES = {
    "deep": "more than 64 deep",
    "dev_zero": "larger than",
    "over_size": "larger than",
    "etas": "etas",
    "eta_zero": "etas",
    "epochs_0": "epochs",
    "max_steps": "max-steps must be an integer in 1..1000000000",
    "max_gd_steps": "max-gd-steps must be an integer in 1..1000000000",
    "t_end": "outside float",
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_configs_and_flags_refused_before_work(tmp_path, name):
    """Deep nesting was a RecursionError; empty etas failed after 11 s of work; --max-steps
    1e30 and --t-end 5e-324 failed inside the solver and then advised a --resume (issue 29)."""
    from centralpath.measurement._io import MAX_TOML_BYTES

    argv, text = CONFIG_CASES[name]
    cfg, out = tmp_path / "c.toml", tmp_path / "run"
    if text == "sparse":
        with open(cfg, "wb") as fh:
            fh.truncate(MAX_TOML_BYTES + 1)
    elif text is not None:
        cfg.write_text(text)
    argv = [a.format(cfg=cfg, out=out) for a in argv]
    extra = ["--quiet"] if argv[0] == "sweep" else ["--quiet", "--no-figures"]
    outcome = run_cli(*argv, *extra, tmp_path=tmp_path)
    phrase = next(v for k, v in CONFIG_PHRASES.items() if k in name)
    assert_refused(*outcome, contains=[phrase])
    assert "--resume" not in outcome.err
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


SWEEP_COST_CASES = {
    # name -> ([sweep] table, work limit or None for the default, phrase): refused before any
    # work. The 1,000 groups' compilations are ~2.4 h (1.2e14 flop-equivalents, each group's
    # work < 1e12), past the 5% of the default limit a sweep may spend compiling; the 10**6
    # points of one shape need ~3e11 flop.
    "1000_shape_groups": (
        "dim = [" + ", ".join(str(3 + i) for i in range(1000)) + "]",
        None,
        "1000 shape groups need 1000 compilations, about 2.4 h",
    ),
    "1e6_points": (
        "lam = [" + ", ".join(f"{0.001 * (i + 1):.4f}" for i in range(1000)) + "]\nseeds = 1000",
        "1e11",
        "1000000 configurations",
    ),
}


@pytest.mark.parametrize("name", sorted(SWEEP_COST_CASES))
def test_sweep_cost_estimated_and_refused_before_work(tmp_path, name):
    """A 10**6-point grid and a 1,000-shape-group sweep started with no estimate, and the
    1,000 groups (~2.4 h of compilation) ran at the default limit (issue 29): configurations'
    work plus one compilation per shape group, under the work limit."""
    table, limit, phrase = SWEEP_COST_CASES[name]
    cfg = tmp_path / "s.toml"
    cfg.write_text(f'flow = "central-path"\nnum_saves = 3\n[sweep]\n{table}\n')
    outcome = run_cli(
        "sweep",
        cfg,
        "--out",
        tmp_path / "run",
        "--quiet",
        tmp_path=tmp_path,
        env={WORK_ENV: limit} if limit else None,
    )
    assert_refused(*outcome, contains=[phrase, WORK_ENV])
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


def test_sweep_compilations_refused_naming_estimate_limit_and_fix(monkeypatch):
    """The compile refusal names the groups, the hours, the flop-equivalents, the limit and
    both fixes; the limit it suggests admits the sweep, and fewer groups pass at the default."""
    from centralpath.sweep._spec import (
        COMPILE_WORK_FRACTION,
        GROUP_COMPILE_FLOP,
        GROUP_COMPILE_SECONDS,
        parse_sweep,
    )

    def sweep(groups):
        return {
            "flow": "central-path",
            "num_saves": 3,
            "sweep": {"dim": list(range(3, 3 + groups))},
        }

    over = int(COMPILE_WORK_FRACTION * 1e15 / GROUP_COMPILE_FLOP) + 1  # 416 at the default
    with pytest.raises(InputError) as info:
        parse_sweep(sweep(over))
    line = str(info.value)
    hours = over * GROUP_COMPILE_SECONDS / 3600
    for part in (
        f"{over} shape groups need {over} compilations, about {hours:.1f} h",
        f"counted as {over * GROUP_COMPILE_FLOP:.2g}".replace("e+", "e"),
        "more than the 5e13 a sweep may spend compiling (5% of the work limit 1e15)",
        "sweep fewer shape groups",
        f"{WORK_ENV}=1e16",
    ):
        assert part in line, (part, line)
    assert "\n" not in line
    assert parse_sweep(sweep(over - 1)).cost[1] == over - 1
    monkeypatch.setenv(WORK_ENV, "1e16")
    assert parse_sweep(sweep(over)).cost[1] == over


def test_sweep_cost_line_counts_groups_and_configurations():
    from centralpath.simulate import as_config, resource_estimate
    from centralpath.sweep._spec import GROUP_COMPILE_FLOP, parse_sweep

    spec = parse_sweep(
        {"flow": "central-path", "num_saves": 3, "sweep": {"dim": [3, 4], "seeds": 3}}
    )
    flop = sum(resource_estimate(as_config(c))[1] for c in spec.configs)
    assert spec.cost == (flop + 2 * GROUP_COMPILE_FLOP, 2)
    assert spec.cost_line().startswith("6 configurations over dim, seed in 2 shape group(s)")


LARGE_N = ["simulate", "--classes", "4", "--per-class", "12500000", "--dim", "8"]


def test_reduced_run_at_large_n_drawing_every_sample_is_refused_before_the_draw(tmp_path):
    """simulate --classes 4 --per-class 12500000 --dim 8 --methods gd reached 6 GB drawing
    every sample (issue 29): `--initial-draw features` still does, and is counted and refused
    where it does not fit."""
    outcome = run_cli(
        *LARGE_N,
        "--methods",
        "gd",
        "--initial-draw",
        "features",
        "--quiet",
        "--no-figures",
        "--out",
        tmp_path / "run",
        tmp_path=tmp_path,
    )
    assert_refused(*outcome, contains=["of memory", "N = 12500000", "--initial-draw statistics"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ~6 s of CPU each: a real run, not a refusal
@pytest.mark.parametrize("flow", ["renormalised", "central-path"])
def test_reduced_run_at_large_n_runs_within_the_limits(tmp_path, flow):
    """The same command, valid, runs (issue 29: a valid input runs within 20 s and 1.5 GB): the
    reduced central-path and renormalised flows draw their statistics directly above
    C·N·p = 2**27 (measured: ~6 s of CPU, ~0.45 GB peak), and the run records it."""
    import json

    out = tmp_path / "run"
    code, err, seconds, peak = run_cli(
        *LARGE_N,
        "--flow",
        flow,
        "--methods",
        "gd",
        "--quiet",
        "--no-figures",
        "--out",
        out,
        tmp_path=tmp_path,
    )
    assert code == 0, err
    assert seconds < TIME_LIMIT and peak < PEAK_LIMIT, (seconds, peak)
    assert json.loads((out / "metadata.json").read_text())["initial_draw"] == "statistics"
    with np.load(out / "results.npz") as results:
        assert np.all(np.isfinite(results["gd/nc1"]))


def test_a_failure_a_resume_cannot_fix_does_not_advise_it(tmp_path, capsys):
    """A numerical failure recurs on --resume (same configuration, bit for bit; changed flags
    are refused): the line says to start afresh instead."""
    out = tmp_path / "run"
    code = main(
        [
            "simulate",
            "--flow",
            "central-path",
            "--classes",
            "3",
            "--per-class",
            "4",
            "--dim",
            "3",
            "--num-saves",
            "4",
            "--methods",
            "ode",
            "--max-steps",
            "2",
            "--quiet",
            "--no-figures",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "continue it with" not in err and "a --resume would meet the same failure" in err
    assert f"--out {out} --overwrite" in err


# ------------------------------------------------------------------ hostile sizes on the command line

SIM = ["simulate", "--quiet", "--no-figures", "--flow", "central-path"]


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--num-saves", "1000000000"], "num-saves"),
        (["--dim", "30000"], "of memory"),
        (["--dim", "100000"], "of memory"),
        (["--dim", "20000", "--num-saves", "2", "--methods", "ode"], "--dim"),
    ],
)
def test_simulate_sizes_refused_under_rlimit(tmp_path, flags, phrase):
    outcome = run_cli(*SIM, *flags, "--out", tmp_path / "run", tmp_path=tmp_path)
    assert_refused(*outcome, contains=[phrase])
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


TRAIN = ["train", "--quiet", "--no-figures", "--epochs", "2"]


@pytest.mark.parametrize(
    ("flags", "phrase"),
    [
        (["--widths", "1000000000"], "--widths"),
        (["--widths", "100000"], "p = 100000"),
        (["--model", "cnn", "--channels", "1000000"], "of memory"),
        (["--model", "cnn", "--channels", "1,1"], "C-1 = 9"),
        (["--widths", "64,5"], "C-1 = 9"),
    ],
)
def test_train_sizes_refused_under_rlimit(tmp_path, flags, phrase):
    outcome = run_cli(*TRAIN, *flags, "--out", tmp_path / "run", tmp_path=tmp_path)
    assert_refused(*outcome, contains=[phrase])
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


def test_train_npz_dataset_bomb_refused_under_rlimit(tmp_path):
    path = write_zip(
        tmp_path / "data.npz",
        {"inputs.npy": bomb((2**20, 2**10)), "labels.npy": arr(np.arange(2**20) % 10)},
    )
    outcome = run_cli(*TRAIN, "--dataset", f"npz:{path}", tmp_path=tmp_path)
    assert_refused(*outcome, contains=["of memory", "inputs"])


def test_train_npz_dataset_huge_label_refused(tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, inputs=np.ones((20, 4), np.float32), labels=np.r_[np.arange(19) % 2, 2**40])
    main_refuses(capsys, [*TRAIN, "--dataset", f"npz:{path}"], contains=["only 20 samples"])


def test_capture_epochs_dense_request_needs_no_memory():
    """--num-checkpoints 1e9 used to allocate a 8 GB geomspace; now every epoch, as before."""
    from centralpath.networks.train import capture_epochs

    start = time.monotonic()
    np.testing.assert_array_equal(capture_epochs(400, 10**9), np.arange(401))
    assert time.monotonic() - start < 1.0


@settings(max_examples=200, deadline=None)
@given(epochs=st.integers(1, 300), num=st.integers(2, 40_000))
def test_capture_epochs_shortcut_is_exact(epochs, num):
    """The shortcut answers exactly what the rounded geomspace answers wherever it applies."""
    from centralpath.networks.train import capture_epochs

    inner = np.unique(np.round(np.geomspace(1, epochs, max(num - 1, 1))).astype(np.int64))
    expected = np.unique(np.concatenate([[0], inner, [epochs]]))
    np.testing.assert_array_equal(capture_epochs(epochs, num), expected)


# ------------------------------------------------------------------ strict values

BAD_FLOATS = ["inf", "-inf", "nan", "1e400"]


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        *[("simulate", "--rtol", v) for v in [*BAD_FLOATS, "0", "1", "-1e-3"]],
        *[("simulate", "--atol", v) for v in [*BAD_FLOATS, "0", "2"]],
        *[("simulate", "--nc1-target", v) for v in [*BAD_FLOATS, "-1"]],
        *[("simulate", flag, v) for flag in ("--t-end", "--eta", "--lam") for v in BAD_FLOATS],
        *[("simulate", "--max-steps", v) for v in ["0", "-1"]],
        *[("simulate", "--seed", v) for v in ["-1", str(2**32), str(2**63), str(2**64)]],
        *[("analyze", "--rtol", v) for v in [*BAD_FLOATS, "0", "1"]],
        *[("analyze", "--weight-decay", v) for v in BAD_FLOATS],
        *[("compare", "--rtol", v) for v in [*BAD_FLOATS, "0", "1"]],
        *[("compare", "--weight-decay", v) for v in BAD_FLOATS],
        *[
            ("train", flag, v)
            for flag in ("--lr", "--momentum", "--weight-decay")
            for v in BAD_FLOATS
        ],
        *[("train", "--seed", v) for v in ["-1", str(2**32), str(2**63)]],
        *[("predict", flag, v) for flag in ("--kappa", "--per-class") for v in BAD_FLOATS],
        # Not integers: argparse refuses them in its own one line.
        ("simulate", "--num-saves", "1e9"),
        ("train", "--num-checkpoints", "1e9"),
        ("train", "--widths", "1e9"),
    ],
)
def test_bad_values_refused(tmp_path, capsys, command, flag, value):
    rng = np.random.default_rng(0)
    features = tmp_path / "f.npz"
    np.savez(
        features,
        features=rng.normal(size=(3, 12, 3)),
        labels=np.repeat(np.arange(3), 4),
        epochs=np.array([0, 5, 10]),
    )
    base = {
        "simulate": [*SIM, "--out", tmp_path / "run"],
        "analyze": ["analyze", features, "--quiet"],
        "compare": ["compare", features, "--quiet"],
        "train": [*TRAIN, "--out", tmp_path / "run"],
        "predict": [
            "predict",
            "--classes",
            "3",
            "--per-class",
            "4",
            "--omega0",
            "1",
            "--times",
            "0,1",
        ],
    }[command]
    err = main_refuses(capsys, [*base, f"{flag}={value}"])
    if flag == "--seed":
        assert "0..4294967295" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rtol", "inf"),
        ("rtol", "nan"),
        ("atol", "1.0"),
        ("nc1_target", "inf"),
        ("nc1_target", "-1.0"),
        ("mean_scale", "inf"),
        ("noise_scale", "nan"),
        ("seed", "-1"),
        ("seed", str(2**40)),
        ("max_steps", "0"),
        ("num_saves", "1000000000"),
        ("dim", "30000"),
        ("bias", '"yes"'),
    ],
)
def test_simulate_config_file_values_refused(tmp_path, capsys, key, value):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'flow = "central-path"\n{key} = {value}\n')
    main_refuses(
        capsys,
        ["simulate", "--config", cfg, "--out", tmp_path / "run", "--quiet", "--no-figures"],
        contains=[key.replace("_", "-")] if key not in ("dim", "bias") else [],
    )


@pytest.mark.parametrize(
    ("key", "value", "phrase"),
    [
        ("seed", "-1", "0..4294967295"),
        ("seed", str(2**32), "0..4294967295"),
        ("lr", "inf", "lr"),
        ("widths", "[1000000000]", "--widths"),
        ("num_checkpoints", "1", "num-checkpoints"),
    ],
)
def test_train_config_file_values_refused(tmp_path, capsys, key, value, phrase):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"epochs = 2\n{key} = {value}\n")
    main_refuses(
        capsys,
        ["train", "--config", cfg, "--out", tmp_path / "run", "--quiet", "--no-figures"],
        contains=[phrase],
    )


@pytest.mark.parametrize(
    ("table", "phrase"),
    [
        ("seeds = 1000000000000", "split it"),
        ("seeds = 10", "2**32"),  # from seed = 4294967290
        ("seed = [0, -1]", "0..4294967295"),
        ("seed = [0, 4294967296]", "0..4294967295"),
    ],
)
def test_sweep_seeds_refused_before_expanding(tmp_path, capsys, table, phrase):
    cfg = tmp_path / "s.toml"
    base = "seed = 4294967290\n" if table == "seeds = 10" else ""
    cfg.write_text(f'flow = "central-path"\nnum_saves = 3\n{base}[sweep]\n{table}\n')
    main_refuses(capsys, ["sweep", cfg, "--out", tmp_path / "run", "--quiet"], contains=[phrase])


VALID_ARGS = {
    "demo": [],
    "simulate": [],
    "sweep": ["s.toml"],
    "predict": ["--classes", "3", "--per-class", "4", "--omega0", "1", "--times", "0,1"],
    "analyze": ["f.npz"],
    "train": [],
    "compare": ["f.npz"],
    "plot": ["run"],
}


@pytest.mark.parametrize("devices", ["0", "-1", "1000000000"])
def test_sweep_devices_refused_before_the_run_directory(tmp_path, capsys, devices):
    cfg = tmp_path / "s.toml"
    cfg.write_text('flow = "central-path"\nnum_saves = 3\n[sweep]\nseeds = 2\n')
    out = tmp_path / "run"
    main_refuses(capsys, ["sweep", cfg, "--out", out, "--devices", devices], contains=["--devices"])
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_rejects_unknown_flags(capsys, command):
    main_refuses(
        capsys,
        [command, *VALID_ARGS[command], "--no-such-flag", "1"],
        contains=["unrecognized arguments: --no-such-flag"],
    )


@pytest.mark.parametrize("abbreviation", ["--kap=2", "--omega=1", "--time=0,1", "--cla=3"])
def test_predict_rejects_abbreviated_flags(capsys, abbreviation):
    """argparse took any unique prefix: `--omega 1` was silently --omega0."""
    main_refuses(
        capsys,
        [
            "predict",
            "--classes",
            "3",
            "--per-class",
            "4",
            "--omega0",
            "1",
            "--times",
            "0,1",
            abbreviation,
        ],
    )


def test_seed_range_is_the_documented_one(tmp_path, capsys):
    """The top of the range is accepted (not just refused around it)."""
    from centralpath.simulate import SimulationConfig, validate

    validate(SimulationConfig(seed=SEED_MAX))
    with pytest.raises(InputError, match="0..4294967295"):
        SimulationConfig(seed=SEED_MAX + 1)  # validated on construction


# ------------------------------------------------------------------ the limits themselves


def test_parse_size_and_format():
    assert parse_size("1024") == 1024
    assert parse_size("64G") == 64 * GiB
    assert parse_size("1.5GiB") == int(1.5 * GiB)
    assert parse_size("512m") == 512 << 20
    for bad in ("", "lots", "-1G", "0", "nan", "inf"):
        with pytest.raises(InputError, match=MEMORY_ENV):
            parse_size(bad)
    assert format_bytes(8 * 20_000**2) == "2.98 GiB"
    assert format_bytes(2**40 * 8) == "8 TiB"


def test_memory_limit_sources(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "3G")
    assert memory_limit() == (3 * GiB, f"set by {MEMORY_ENV}")
    monkeypatch.delenv(MEMORY_ENV)
    limit, source = memory_limit()
    if os.path.exists("/proc/meminfo"):
        assert limit is not None and limit > 0 and source


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(0, 2**40), min_size=1, max_size=4),
    dtype=st.sampled_from(["<f8", "<f4", "<i8", "|u1", "<c16"]),
    declared_extra=st.integers(0, 4096),
    compressed=st.booleans(),
)
def test_forged_headers_never_allocate(tmp_path, shape, dtype, declared_extra, compressed):
    """Any header over any (small) member: loaded when consistent, else one-line InputError."""
    head = npy(shape, dtype)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    data = b"\0" * min(nbytes, 4096)
    image = head + data
    size = len(image) + (declared_extra if nbytes > 4096 else 0)
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    payload = deflate(image) if compressed else image
    if not compressed:
        size = len(image)
    path = write_zip(tmp_path / "h.npz", {"x.npy": (payload, size, method, zlib.crc32(image))})
    if nbytes <= 4096:
        try:  # numpy itself refuses some empty shapes whose other sides overflow its index type
            assert load_npz(path)["x"].shape == tuple(shape)
        except InputError as e:
            assert "\n" not in str(e) and "too big" in str(e)
    else:
        with pytest.raises(InputError) as info:
            load_npz(path)
        assert "\n" not in str(info.value)
