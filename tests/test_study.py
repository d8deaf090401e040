"""The kink analysis (verification.study.kinks), the study (verification.study.run*) and ``torch-svm kinks``.

References are plain: loops over terms, numpy quantiles, the standard normal density, the
crossings that :func:`verification.checks.numeric.svm_finite_differences` counts on its own, and
hand-computed values (0, 1/2, 1) for the one-dimensional example. The study itself is run
once, as ``StudyConfig.dry_run()`` (what ``torch-svm kinks --dry-run`` runs).
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from torch_svm.cli import main
from torch_svm.data import DataConfig, load_dataset
from torch_svm.losses import svm_coefficients, svm_loss_and_grad, svm_margins
from torch_svm.train import TrainConfig
from verification.study.kinks import (count_ties, crossing_terms, expected_crossing_terms,
                                margin_density_at_zero, one_dimensional_example, scaled_margins,
                                simulate_crossed_rates, term_margins)
from verification.checks.numeric import svm_finite_differences
from verification.study.run import DRY_RUN, QUICK, StudyConfig, run_study
from verification.checks.tolerance import relative_errors
from verification.study.checks import draw_point
from verification.study.figures import FIGURES
from verification.study.report import write_report
from verification.study.results import Distribution
from verification.study.ties import TF32, measure_ties, precisions

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


def test_term_margins_crossing_terms_and_ties_match_a_loop():
    X = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]], dtype=F64)
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], dtype=F64)
    y = torch.tensor([0, 2, 1])
    S = X @ W
    terms = [(i, float(S[i, j] - S[i, y[i]] + 1.0)) for i in range(3) for j in range(3) if j != y[i]]
    assert term_margins(W, X, y, 1.0).tolist() == [m for _, m in terms]
    assert scaled_margins(W, X, y, 1.0).tolist() == [m / float(X[i].abs().max()) for i, m in terms]
    assert count_ties(W, X, y, 1.0) == sum(m == 0.0 for _, m in terms) == 1
    for h in (0.1, 0.5, 2.0):   # crossing: |m| < h max_k |X_ik|
        assert crossing_terms(W, X, y, 1.0, h) == sum(abs(m) < h * float(X[i].abs().max())
                                                      for i, m in terms)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_count_ties_counts_the_terms_whose_kink_value_the_gradient_uses(dtype):
    # One-hot rows make S = X W and dW = X^T B exact in any dtype (one product each), so the
    # change of dW between kink values 0 and 1 shows exactly the terms that took the kink value.
    g = torch.Generator().manual_seed(0)
    N, C = 16, 4
    X = torch.eye(N, dtype=dtype)
    W = (torch.randint(-4, 5, (N, C), generator=g) / 4).to(dtype)      # margins in steps of 1/4
    y = torch.randint(C, (N,), generator=g)
    ties = svm_margins(W, X, y, delta=1.0) == 0                          # (N, C)
    assert count_ties(W, X, y, 1.0) == int(ties.sum()) > 0
    grads = [svm_loss_and_grad(W, X, y, 0.0, delta=1.0, kink=k)[1].double() for k in (0.0, 1.0)]
    expected = X.double().T @ svm_coefficients(ties.double(), y) / N
    torch.testing.assert_close(grads[1] - grads[0], expected, rtol=0, atol=0)
    wrong = svm_margins(W, X, y, delta=1.0).abs() <= 0.25                # a mask that is not the ties
    assert not torch.equal(grads[1] - grads[0], X.double().T @ svm_coefficients(wrong.double(), y) / N)


def test_margin_density_at_zero_of_a_normal_sample():
    m = torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert margin_density_at_zero(m) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=0.03)
    assert margin_density_at_zero(m + 10) < 1e-12                 # no mass near 0
    assert margin_density_at_zero(torch.zeros(5)) == math.inf
    assert margin_density_at_zero(torch.ones(5)) == 0.0
    with pytest.raises(ValueError, match="bandwidth"):
        margin_density_at_zero(m, bandwidth=0.0)


def test_simulated_rates_at_the_extremes():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 8, generator=g, dtype=F64)
    y = torch.randint(3, (30,), generator=g)
    assert simulate_crossed_rates(X, y, 3, 1e-3, 0.0, samples=5, generator=g).tolist() == [0.0] * 5
    # every term crossing at its kink: every coordinate with a nonzero x_ik is crossed
    assert simulate_crossed_rates(X, y, 3, 1e-3, math.inf, samples=3, generator=g).tolist() == [1.0] * 3
    assert expected_crossing_terms(90, 0.01, 5.0) == pytest.approx(9.0)
    assert expected_crossing_terms(90, 1.0, 5.0) == 90.0          # capped: every term crosses
    with pytest.raises(ValueError, match="h"):
        simulate_crossed_rates(X, y, 3, 0.0, 1.0, samples=1, generator=g)


def test_prediction_matches_numeric_crossings_when_its_assumptions_hold(one_thread):
    # Margins built so that the scaled margins u = m / max_k |x_ik| are iid U(-A, A): density
    # 1 / (2A) at 0, independent of the row. Then the mean share of crossed coordinates that
    # numeric.svm_finite_differences counts must match the simulation's, within sampling error.
    N, D, C, A, h, delta = 20, 40, 4, 1.0, 0.03, 1.0
    g = torch.Generator().manual_seed(0)
    measured, terms, predicted = [], [], []
    for _ in range(150):
        X = torch.randn(N, D, generator=g, dtype=F64)
        y = torch.randint(C, (N,), generator=g)
        u = (2 * torch.rand(N, C, generator=g, dtype=F64) - 1) * A
        S = (u * X.abs().amax(1, keepdim=True) - delta).scatter(1, y[:, None], 0.0)   # m = S_ij - S_iy + delta
        W = torch.linalg.lstsq(X, S).solution                                         # X W = S (D > N)
        fd = svm_finite_differences(W, X, y, 0.0, delta=delta, h=h)
        measured.append(float((fd.crossings > 0).double().mean()))
        terms.append(crossing_terms(W, X, y, delta, h))
        predicted += simulate_crossed_rates(X, y, C, h, 1 / (2 * A), samples=20, generator=g).tolist()
    lam = expected_crossing_terms(N * (C - 1), h, 1 / (2 * A))
    assert abs(np.mean(terms) - lam) < 4 * math.sqrt(lam / len(terms))
    se = math.sqrt(np.var(measured) / len(measured) + np.var(predicted) / len(predicted))
    assert abs(np.mean(measured) - np.mean(predicted)) < 4 * se
    assert np.mean(measured) > 10 * se                            # a real quantity, not ~0


# -- distributions ----------------------------------------------------------------------------

def test_distribution_is_numpys_quantiles():
    values = [0.3, 0.0, 0.1, 0.9, 0.5, 0.2, 0.0, 0.7, 0.4, 0.05, 0.6]
    d = Distribution.of(values)
    q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
    assert (d.draws, d.median, d.q10, d.q90, d.min, d.max) == (11, q50, q10, q90, 0.0, 0.9)
    assert d.values == values
    assert d.share_within(0.0, 0.2) == 5 / 11
    empty = Distribution.of([])
    assert empty.draws == 0 and empty.median is None and empty.share_within(0, 1) is None


# -- the study --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_run():
    return run_study(StudyConfig.dry_run(device="cpu"))


def test_every_cell_is_a_distribution_over_the_configured_draws(dry_run):
    r = dry_run
    assert {(c.delta, c.h, c.method) for c in r.sweep} == {
        (d, h, m) for d in DRY_RUN["deltas"] for h in DRY_RUN["hs"] for m in ("exact", "naive")}
    for c in r.sweep:
        assert c.mismatch_rate.draws == (DRY_RUN["draws"] if c.method == "exact" else DRY_RUN["naive_draws"])
        for d in (c.mismatch_rate, c.crossed_rate, c.crossed_mismatch_rate):
            assert all(0.0 <= v <= 1.0 for v in d.values)
            assert d.min <= d.q10 <= d.median <= d.q90 <= d.max
        assert all(a <= b for a, b in zip(c.crossed_mismatch_rate.values, c.mismatch_rate.values))
        if c.method == "exact":
            assert c.unexplained == 0                             # the hand-written gradient is right
            # every exact mismatch is at a crossing or rounding at a zero coordinate
            for crossed, rounding in zip(c.crossed_share.values, c.rounding_share.values):
                assert crossed + rounding == pytest.approx(1.0)
    for p in r.prediction:
        assert p.predicted_rate.draws == DRY_RUN["draws"] * DRY_RUN["prediction_samples"]
        assert p.measured_rate is r.cell(p.delta, p.h).crossed_mismatch_rate
    assert {(w.point, w.n) for w in r.where} == {(p, n) for p in ("init", "burn_in") for n in DRY_RUN["ns"]}
    assert all(w.check.mismatch_rate.draws == DRY_RUN["where_draws"] for w in r.where)


def test_the_study_reports_what_an_independent_check_measures(dry_run):
    data = load_dataset("digits", None, DataConfig(dtype="float64"))
    _, X, y, W = draw_point(data.tensors("train")[0], data.tensors("train")[1], data.config.num_dev, dry_run.config["init_scale"], 10, seed=1)
    for h in DRY_RUN["hs"]:
        fd = svm_finite_differences(W, X, y, 0.0, delta=1.0, h=h)
        _, dW = svm_loss_and_grad(W, X, y, 0.0, delta=1.0)
        a, b = dW.numpy(), fd.grad.numpy()
        denom = np.maximum(np.abs(a), np.abs(b))
        rel = np.divide(np.abs(a - b), denom, out=np.zeros_like(denom), where=denom > 0)
        assert dry_run.cell(1.0, h).mismatch_rate.values[1] == (rel > 1e-7).mean()
    assert torch.equal(relative_errors(dW, fd.grad), torch.from_numpy(rel))


def test_ties_are_counted_and_only_ties_let_the_kink_value_matter():
    data = load_dataset("digits", None, DataConfig(dtype="float64"))
    config = TrainConfig(lr=1e-3, reg=1.0, iters=30, device="cpu")
    cells = measure_ties(data, precisions=("float64", "bfloat16"), kinks=(0.0, 1.0), seeds=(0, 1),
                         config=config, init_scale=1e-3, tick=lambda what: None)
    for t in cells:
        same, other = t.kink_values
        assert same.identical == same.runs == 2
        for ties, diff in zip(t.ties.values, other.max_abs_diff.values):
            if ties == 0:                                         # the kink value was never used
                assert diff == 0.0
    bf16 = next(t for t in cells if t.precision == "bfloat16")
    # measured: digits in bfloat16 tie a few times per step, so 30 steps always see some,
    # and the kink value then changes the trajectory
    assert min(bf16.ties.values) > 0 and bf16.kink_values[1].identical == 0


def test_tf32_runs_on_cuda_only_next_to_float32():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert precisions(("float64", "float32", "bfloat16"), cuda, True) == ["float64", "float32", TF32, "bfloat16"]
    assert precisions(("float64", "float32"), cpu, True) == ["float64", "float32"]
    assert precisions(("float64", "float32"), cuda, False) == ["float64", "float32"]
    assert precisions(("float16",), cuda, True) == ["float16"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ties_on_cuda_with_tf32_on_and_off():
    data = load_dataset("digits", None, DataConfig(dtype="float64")).to("cuda")
    before = torch.backends.cuda.matmul.allow_tf32
    cells = measure_ties(data, precisions=precisions(("float32",), data.tensors("train")[0].device, True),
                         kinks=(0.0, 1.0), seeds=(0,), config=TrainConfig(lr=1e-3, reg=1.0, iters=10, device="cuda"),
                         init_scale=1e-3, tick=lambda what: None)
    assert [t.precision for t in cells] == ["float32", TF32]
    assert all(t.device.startswith("cuda") and t.ties.draws == 1 for t in cells)
    assert torch.backends.cuda.matmul.allow_tf32 == before        # the setting is restored


def test_write_report_files(dry_run, tmp_path):
    paths = write_report(dry_run, tmp_path)
    assert {p.name for p in paths} == {"report.md", "results.json", *FIGURES}
    for name in FIGURES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(dataclasses.asdict(dry_run)))
    cell = saved["sweep"][0]["mismatch_rate"]
    assert set(cell) == {"draws", "median", "q10", "q90", "min", "max", "values"}
    assert saved["one_d"]["svm"]["central"] == 0.5
    md = (tmp_path / "report.md").read_text()
    assert "central difference (f(h) - f(-h)) / 2h = **0.5**" in md
    assert "| delta \\ h |" in md
    with pytest.raises(TypeError, match="StudyResults"):
        write_report(saved, tmp_path)


@pytest.mark.parametrize("changes, match", [
    (dict(deltas=()), "deltas"), (dict(tie_dtypes=("float8",)), "dtype"),
    (dict(draws=0), "draws"), (dict(naive_draws=5, draws=2), "naive_draws"),
    (dict(point_h=2e-5), "point_h"), (dict(hs=(1e-5, -1.0)), "hs"),
    (dict(dataset="mnist"), "dataset"), (dict(data_dir="x"), "data_dir"),
])
def test_bad_config_is_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        StudyConfig(**changes)


def test_run_study_takes_a_config_only():
    with pytest.raises(TypeError, match="StudyConfig"):
        run_study({"dataset": "digits"})


# -- the CLI ----------------------------------------------------------------------------------

def test_cli_dry_run_smoke(tmp_path, capsys):
    out = tmp_path / "report"
    threads = torch.get_num_threads()
    assert main(["kinks", "--dry-run", "--out", str(out), "--json", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data"] == "digits"
    assert set(summary["mismatch"]) == {"exact", "exact_kinks", "exact_rounding", "naive"}
    for rows in summary["mismatch"].values():
        for cells in rows.values():
            assert all(0.0 <= c["q10"] <= c["median"] <= c["q90"] <= 1.0 for c in cells.values())
    assert summary["check_point"]["measured"]["draws"] == DRY_RUN["draws"]
    assert summary["one_d"] == {"central": 0.5, "forward": 1.0,
                                "analytic": {"0.0": 0.0, "0.5": 0.5, "1.0": 1.0}}
    assert {p.name for p in out.iterdir()} == {"report.md", "results.json", *FIGURES}
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["threads"] == 1                          # --threads' default
    assert torch.get_num_threads() == threads                     # and restored afterwards


def test_cli_help_says_how_many_draws_each_size_uses(capsys):
    with pytest.raises(SystemExit):
        main(["kinks", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for preset in (StudyConfig(), StudyConfig.quick(), StudyConfig.dry_run()):
        assert f"{preset.draws} draws of the dev set and W at the check point ({preset.naive_draws} with naive" in text
    assert QUICK["draws"] < StudyConfig().draws


def test_cli_missing_cifar_is_one_line(tmp_path, capsys):
    code = main(["kinks", "--out", str(tmp_path), "--data-dir", str(tmp_path / "nope"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("torch-svm kinks: error:") and err.count("\n") == 1


def test_exact_mismatches_split_into_kinks_and_rounding_and_kinks_fade_with_delta(dry_run):
    """kinks --quick used to show a flat 1% "mismatch" at every delta and h on digits: rounding
    at coordinates whose gradient is 0 up to cancellation, beside "measured median 0%" for the
    kinks. Each exact mismatch is now either at a crossing or rounding, and the two are apart."""
    for c in (c for c in dry_run.sweep if c.method == "exact"):
        for total, kinks, rounding in zip(c.mismatch_rate.values, c.crossed_mismatch_rate.values,
                                          c.rounding_rate.values):
            assert kinks + rounding == pytest.approx(total)
    kinks = {(c.delta, c.h): max(c.crossed_mismatch_rate.values) for c in dry_run.sweep
             if c.method == "exact"}
    # digits' check point spreads the margins as CIFAR-10's does: kinks at delta 1, none at 1000
    assert kinks[1.0, 1e-3] > 0 and kinks[1000.0, 1e-3] == 0
    rounding = next(c for c in dry_run.sweep if c.method == "exact" and c.delta == 1000.0)
    assert max(rounding.rounding_rate.values) > 0          # the flat 1%: counted, and apart
