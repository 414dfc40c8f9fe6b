"""The demo report: one table per section, captions computed from the numbers (never fixed text
that a run could contradict), the drift and the NC1 exponent read against their reference
values."""

from __future__ import annotations

import copy

import pytest

from centralpath import demo

SUMMARY = {
    "simulation": {
        "ode_vs_closed_form_max_rel": 3e-10,
        "gd_vs_closed_form_final_rel": 4e-3,
        "omega_ratio_start": 2.31,
        "omega_ratio_end": 1.0002,
        "nc1_start": 1.5,
        "nc1_end": 2e-3,
        "loss_start": 0.4,
        "loss_end": 0.001,
        "t_end": 1e7,
        "perp_rel_max_ode": 1e-30,
    },
    "convergence": {"t": 2e4, "eta": [800.0, 400.0], "error": [0.02, 0.01], "slope": 1.01},
    "training": {
        "dataset": "digits",
        "model": "mlp",
        "epochs": 400,
        "weight_decay": 2e-4,
        "final_train_accuracy": 1.0,
        "final_test_accuracy": 0.98,
        "first_zero_error_epoch": 15,
        "nc1_first": 1.06,
        "nc1_last": 9e-4,
        "nc1_drop_from_first_zero_error": 120.0,
        "perp_rel_first": 0.41,
        "perp_rel_last": 0.003,
    },
    "comparison": {
        "variance_explained": 0.999,
        "drift_relative": 0.985,
        "relative_error_median": 0.1,
        "relative_error_max": 0.28,
        "time_map_monotone": True,
        "nc1_exponent": -0.475,
    },
    "prediction": {  # centralpath.measurement.predictive.report_numbers
        "verdict": "consistent",
        "reason": "median relative error 4.75% <= 5% and skill 0.887 >= 0.7 over 32 "
        "checkpoint(s) after epoch 14",
        "verdict_of": "central-path",
        "start": "auto: epoch 14 is the first checkpoint with L_perp/L <= 0.1 (0.0938)",
        "clock": "monotone",
        "closed-form": "median error 9.41%, skill 0.777: inconsistent",
        "central-path": "median error 4.75%, skill 0.887: consistent",
        "ufm": "median error 24.41%, skill 0.421: inconsistent",
    },
}

STEMS = [s for _, _, stems in demo.SECTIONS for s in stems]


def _report(tmp_path, summary, stems=STEMS):
    (tmp_path / "figures").mkdir(exist_ok=True)
    for stem in stems:
        (tmp_path / "figures" / f"{stem}.png").write_bytes(b"\x89PNG fake")
    demo.write_report(tmp_path, summary)
    return (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()


def test_one_table_per_section(tmp_path):
    md, html = _report(tmp_path, SUMMARY)
    assert md.count("| quantity | value |") == len(demo.SECTIONS)
    assert html.count("<table>") == len(demo.SECTIONS)
    # Every figure once, each under its section.
    for stem in STEMS:
        assert md.count(f"figures/{stem}.png") == 1
    sections = md.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [title for _, title, _ in demo.SECTIONS]


def test_captions_follow_the_numbers(tmp_path):
    md, _ = _report(tmp_path, SUMMARY)
    assert "L_⊥LS/L fell from 0.41 to 0.003 (137-fold)" in md
    assert "ends close to the central path" in md
    assert "NC1 fell from 1.06 to 0.0009 (1,178-fold) over 400 epochs" in md
    assert "training accuracy reached 100% at epoch 15 (held-out accuracy 0.980" in md
    assert "ω_max/ω_min fell from 2.31 to 1 (2.31-fold): the ω_j equalise" in md
    # The same figure with numbers that go the other way says so: no fixed text.
    worse = copy.deepcopy(SUMMARY)
    worse["training"].update(perp_rel_first=0.5, perp_rel_last=0.70, first_zero_error_epoch=None)
    worse["training"]["final_train_accuracy"] = 0.97
    md, _ = _report(tmp_path, worse)
    assert "L_⊥LS/L rose from 0.5 to 0.7" in md
    assert "stays away from the least-squares one" in md and "close to the central path" not in md
    assert "training accuracy ended at 0.9700 (never 100%)" in md


def test_drift_and_exponent_are_read_against_the_theory(tmp_path):
    md, _ = _report(tmp_path, SUMMARY)
    assert "does not keep the invariant (drift 0.98" in md and "against 0 along" in md
    assert "late NC1 ∝ τ^-0.475, consistent with the theory's −1/2" in md
    steep = copy.deepcopy(SUMMARY)
    steep["comparison"].update(drift_relative=0.01, nc1_exponent=-1.2)
    md, _ = _report(tmp_path, steep)
    assert "keeps the theory's invariant (drift 0.01" in md
    assert "steeper than the theory's −1/2 (by 0.7)" in md
    assert "late NC1 exponent against τ (theory: -0.5) | -1.2 |" in md


@pytest.mark.parametrize(
    "first, last, text",
    [
        (0.41, 0.003, "x fell from 0.41 to 0.003 (137-fold)"),
        (0.5, 0.7, "x rose from 0.5 to 0.7"),
        (1.0, 1.0, "x stayed at 1"),
        (2.0, 1.9, "x fell from 2 to 1.9"),
    ],
)
def test_change_words(first, last, text):
    assert demo.change("x", first, last) == text


def test_without_figures_the_captions_remain(tmp_path):
    md, _ = _report(tmp_path, SUMMARY, stems=[])
    assert "![" not in md and "L_⊥LS/L fell from 0.41 to 0.003" in md
    assert md.count("| quantity | value |") == len(demo.SECTIONS)


def test_the_prediction_section_states_the_verdict_and_the_ladder(tmp_path):
    md, _ = _report(tmp_path, SUMMARY)
    section = md.split("## Does the theory predict the network?")[1]
    assert "Verdict (central-path): consistent — median relative error 4.75% <= 5%" in section
    for row in ("median error 9.41%, skill 0.777: inconsistent", "skill 0.421: inconsistent"):
        assert row in section
    assert "a monotone clock maps epochs to its time" in section
