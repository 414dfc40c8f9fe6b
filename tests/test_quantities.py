"""The quantities declared once in `centralpath._quantities`: the JSON Schema of `analyze --json`
read from them describes what `analyze` writes, key for key and in order, and the schema rejects
records that break it (so a passing validation says something)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from centralpath._quantities import (
    BY_NAME,
    JSON_RECORD_KEYS,
    QUANTITIES,
    RECORD_EXTRAS,
    RECORD_FROM_FILE,
    RECORD_KEYS,
    record_schema,
)

jsonschema = pytest.importorskip("jsonschema")
DIGITS = Path(__file__).parent / "data" / "digits_mlp_final.npz"


def _two_checkpoint_file(path: Path, *, with_classifier: bool = True) -> Path:
    """The committed digits checkpoint twice, with the training record's per-checkpoint keys."""
    with np.load(DIGITS) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["features"] = np.concatenate([arrays["features"]] * 2)
    arrays["epochs"] = np.array([100, 200])
    if with_classifier:
        arrays["W"] = np.concatenate([arrays["W"]] * 2)
        arrays["b"] = np.concatenate([arrays["b"]] * 2)
    else:
        del arrays["W"], arrays["b"]
    arrays["train_accuracy"] = np.array([0.9, 1.0])
    arrays["test_accuracy"] = np.array([0.85, 0.95])
    arrays["test_loss"] = np.array([0.2, 0.1])
    np.savez(path, **arrays)
    return path


def _analyze_json(tmp_path: Path, features: Path) -> dict:
    out = tmp_path / "analysis.json"
    run = subprocess.run(
        [sys.executable, "-m", "centralpath", "analyze", str(features), "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())


def test_every_key_is_declared_once():
    names = [q.name for q in (*QUANTITIES, *RECORD_EXTRAS)]
    assert len(names) == len(set(names))
    assert set(JSON_RECORD_KEYS) <= set(BY_NAME)
    assert JSON_RECORD_KEYS[: len(RECORD_KEYS)] == RECORD_KEYS
    assert RECORD_FROM_FILE == ("train_accuracy", "test_accuracy", "test_loss")


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(record_schema())


@pytest.mark.parametrize("with_classifier", [True, False])
def test_analyze_json_matches_its_schema_key_for_key(tmp_path, with_classifier):
    """What `analyze --json` writes validates, and its records carry exactly the declared keys in
    the declared order (a key written but not declared, or declared but not written, fails)."""
    data = _analyze_json(
        tmp_path, _two_checkpoint_file(tmp_path / "f.npz", with_classifier=with_classifier)
    )
    jsonschema.validate(data, record_schema())
    assert len(data["checkpoints"]) == 2
    for record in data["checkpoints"]:
        assert tuple(record) == JSON_RECORD_KEYS
    assert data["checkpoints"][1]["train_accuracy"] == 1.0
    if not with_classifier:
        assert data["checkpoints"][0]["nc3"] is None


def test_schema_rejects_what_analyze_never_writes(tmp_path):
    data = _analyze_json(tmp_path, _two_checkpoint_file(tmp_path / "f.npz"))
    schema = record_schema()
    broken = {
        "a required key missing": lambda r: r.pop("nc1"),
        "a number as text": lambda r: r.update(nc3="0.3"),
        "a flag as a number": lambda r: r.update(ls_singular=0),
        "omega as a number": lambda r: r.update(snr=1.0),
        "omega holding text": lambda r: r.update(snr=["inf"]),
    }
    for why, breaking in broken.items():
        bad = copy.deepcopy(data)
        breaking(bad["checkpoints"][0])
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
            pytest.fail(f"the schema accepted {why}")


def test_docs_table_and_schema_come_from_the_declarations():
    sys.path.insert(0, str(Path(__file__).parents[1] / "docs"))
    try:
        import hooks
    finally:
        sys.path.pop(0)
    table = hooks.quantities_table()
    for key in JSON_RECORD_KEYS:
        assert f"| `{key}` | {BY_NAME[key].description}" in table
    assert json.loads(hooks.schema_json()) == record_schema()
    page = (Path(__file__).parents[1] / "docs" / "reference" / "file-formats.md").read_text()
    assert hooks.QUANTITIES_MARKER in page
