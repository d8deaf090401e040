"""The kink analysis (verification.kinks), the study (verification.study) and ``torch-svm kinks``.

References are plain: loops over terms for the crossing prediction and exact ties, the
standard normal density for the margin density estimate, and hand-computed values (0, 1/2, 1)
for the one-dimensional example.
"""
import json
import math

import pytest
import torch

from torch_svm.cli import main
from verification.kinks import (count_ties, margin_density_at_zero, one_dimensional_example,
                                predict_crossings, predict_terms_near_kink, term_margins,
                                terms_near_kink)
from verification.study import FIGURES, StudyConfig, run_study, write_report

F64 = torch.float64


# -- kinks ------------------------------------------------------------------------------------

def test_one_dimensional_example_is_exactly_half_and_one_against_zero():
    ex = one_dimensional_example()
    for form in ("scalar", "svm"):
        assert ex[form]["central"] == 0.5
        assert ex[form]["forward"] == 1.0
        assert ex[form]["backward"] == 0.0
    assert ex["scalar"]["subgradient"] == 0.0
    assert ex["svm"]["margin"] == 0.0
    assert ex["svm"]["analytic"] == {"0.0": 0.0, "0.5": 0.5, "1.0": 1.0}
    assert [r["central"] for r in ex["near"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [r["subgradient"] for r in ex["near"]] == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_term_margins_and_exact_ties_match_a_loop():
    X = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]], dtype=F64)
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], dtype=F64)
    y = torch.tensor([0, 2, 1])
    S = X @ W
    expected = [S[i, j] - S[i, y[i]] + 1.0 for i in range(3) for j in range(3) if j != y[i]]
    assert term_margins(W, X, y, 1.0).tolist() == [float(v) for v in expected]
    assert count_ties(W, X, y, 1.0) == sum(float(v) == 0.0 for v in expected) == 1
    # a term is near a kink for step h when |m| < h max_k |X_ik|
    near = sum(abs(float(v)) < 0.5 * float(X[i].abs().max())
               for i in range(3) for v in [S[i, j] - S[i, y[i]] + 1.0 for j in range(3) if j != y[i]])
    assert terms_near_kink(W, X, y, 1.0, 0.5) == near


def test_predict_crossings_matches_a_loop_over_terms():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 4, generator=g, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    C, h, f0 = 3, 0.3, 0.8
    pred = predict_crossings(X, y, C, h, f0)
    expected = torch.zeros(4, C, dtype=F64)
    for i in range(7):
        for c in range(C):
            if c == y[i]:
                continue
            for k in range(4):
                p = min(1.0, 2 * h * f0 * abs(float(X[i, k])))
                expected[k, c] += p                  # term (i, c) moves with W[k, c]
                expected[k, y[i]] += p               # and with W[k, y_i]
    torch.testing.assert_close(pred, expected, rtol=1e-12, atol=1e-12)
    terms = sum((C - 1) * min(1.0, 2 * h * f0 * float(X[i].abs().max())) for i in range(7))
    assert predict_terms_near_kink(X, C, h, f0) == pytest.approx(terms, rel=1e-12)


def test_margin_density_at_zero_of_a_normal_sample():
    m = torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert margin_density_at_zero(m) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=0.03)
    assert margin_density_at_zero(m + 10) < 1e-12                 # no mass near 0
    assert margin_density_at_zero(torch.zeros(5)) == math.inf
    assert margin_density_at_zero(torch.ones(5)) == 0.0
    with pytest.raises(ValueError, match="bandwidth"):
        margin_density_at_zero(m, bandwidth=0.0)


# -- the study --------------------------------------------------------------------------------

TINY = dict(deltas=(1.0, 1000.0), hs=(1e-3, 1e-7), ns=(10, 50), burn_in_iters=20,
            batch_size=50, tie_iters=20, tie_seeds=2, tie_dtypes=("bfloat16", "float64"),
            device="cpu")


@pytest.fixture(scope="module")
def tiny_results():
    return run_study(StudyConfig.quick(**TINY))


def test_study_rates_are_shares_and_exact_differences_are_explained(tiny_results):
    r = tiny_results
    assert len(r["sweep"]) == 2 * 2 * 2                           # delta x h x method
    for row in r["sweep"] + r["where"]:
        assert 0.0 <= row["mismatch_rate"] <= 1.0
        assert 0.0 <= row["straddle_rate"] <= 1.0
        assert row["kink_share"] is None or 0.0 <= row["kink_share"] <= 1.0
        assert row["mismatches_straddling"] <= row["mismatches"] <= row["coordinates"]
        if row["method"] == "exact":
            assert row["unexplained"] == 0                        # the hand-written gradient is right
            # every exact mismatch is a kink or rounding at a zero coordinate
            assert row["mismatches_straddling"] + row["mismatches_rounding"] == row["mismatches"]
    rate = {(s["method"], s["delta"], s["h"]): s["mismatch_rate"] for s in r["sweep"]}
    # measured on digits: at the check point no margin is near a kink, so exact differences
    # mismatch equally for every delta, while the naive ones suffer rounding ~ eps L / h,
    # and L grows with delta
    for h in TINY["hs"]:
        assert rate["exact", 1000.0, h] <= rate["exact", 1.0, h]
    assert rate["naive", 1000.0, 1e-7] > rate["exact", 1000.0, 1e-7]
    assert {w["point"] for w in r["where"]} == {"init", "burn_in"}


def test_study_ties_and_trajectories(tiny_results):
    rows = tiny_results["ties"]
    assert len(rows) == 2 * 2 * 3                                 # dtype x seed x kink
    for t in rows:
        assert t["ties"] >= 0 and 0.0 <= t["tie_rate"] <= 1.0
        assert 0.0 <= t["val_accuracy"] <= 1.0
        first = next(u for u in rows if u["dtype"] == t["dtype"] and u["seed"] == t["seed"]
                     and u["kink"] == 0.0)
        if first["ties"] == 0:                                    # the kink value was never used
            assert t["identical_to_first_kink"] and t["max_abs_diff_to_first_kink"] == 0.0
        if t["kink"] == 0.0:
            assert t["identical_to_first_kink"]


def test_write_report_files(tiny_results, tmp_path):
    paths = write_report(tiny_results, tmp_path)
    names = {p.name for p in paths}
    assert {"report.md", "results.json", *FIGURES} <= names
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["one_d"]["svm"]["central"] == 0.5
    assert "_margins" not in saved
    md = (tmp_path / "report.md").read_text()
    assert "central difference (f(h) - f(-h)) / 2h = **0.5**" in md
    assert "| delta \\ h |" in md


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="deltas"):
        run_study(StudyConfig(deltas=()))
    with pytest.raises(ValueError, match="dtype"):
        run_study(StudyConfig(tie_dtypes=("float8",)))
    with pytest.raises(TypeError, match="StudyConfig"):
        run_study({"dataset": "digits"})


# -- the CLI ----------------------------------------------------------------------------------

def test_cli_quick_smoke(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["kinks", "--quick", "--out", str(out), "--json", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data"] == "digits"
    assert set(summary["mismatch"]) == {"exact", "naive"}
    for rows in summary["mismatch"].values():
        for cells in rows.values():
            assert all(0.0 <= c["mismatch_rate"] <= 1.0 for c in cells.values())
    assert summary["one_d"] == {"central": 0.5, "forward": 1.0,
                                "analytic": {"0.0": 0.0, "0.5": 0.5, "1.0": 1.0}}
    assert {p.name for p in out.iterdir()} >= {"report.md", "results.json", *FIGURES}


def test_cli_missing_cifar_is_one_line(tmp_path, capsys):
    code = main(["kinks", "--out", str(tmp_path), "--data-dir", str(tmp_path / "nope"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("torch-svm kinks: error:") and err.count("\n") == 1
