"""benchmarks/bench_train.py: its numpy peer computes the loss torch-svm does, its busy
neighbour really runs and stops, and its small mode runs end to end (so it cannot rot)."""
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_svm.data import load_dataset
from torch_svm.train import TrainConfig, train
from verification.checks.reference import svm_loss_vectorized

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_peer_is_the_svm_loss(dtype):
    rng = np.random.RandomState(0)
    X = rng.randn(50, 12).astype(dtype)
    W = (0.3 * rng.randn(12, 5)).astype(dtype)
    y = rng.randint(5, size=50)
    loss, dW = bench_train.numpy_svm_loss(W, X, y, 0.7)
    ref_loss, ref_dW = svm_loss_vectorized(W.astype(np.float64), X.astype(np.float64), y, 0.7)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert dW.dtype == dtype
    np.testing.assert_allclose(loss, ref_loss, rtol=tol)
    np.testing.assert_allclose(dW, ref_dW, rtol=tol, atol=tol)
    # negative twin: the tolerance sees a 1 % error in reg
    _, off = bench_train.numpy_svm_loss(W, X, y, 0.7 * 1.01)
    assert not np.allclose(off, ref_dW, rtol=tol, atol=tol)


def test_busy_neighbour_spins_while_inside_and_stops_after():
    before = set(multiprocessing.active_children())
    with bench_train.busy_neighbour():
        (child,) = set(multiprocessing.active_children()) - before
        assert child.is_alive()
        time.sleep(0.3)
        stat = Path(f"/proc/{child.pid}/stat")
        if stat.exists():                                       # Linux: it has burnt CPU time
            assert int(stat.read_text().split()[13]) > 0        # utime, in clock ticks
    assert not child.is_alive()


def test_quick_mode_runs_and_matches_the_library(capsys):
    assert bench_train.main(["--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    methods = {(r["method"], r["neighbour"]) for r in rows}
    for method in ("numpy float32", "numpy float64", "torch-svm hand", "torch-svm autograd",
                   "torch-svm mml", "sklearn SGDClassifier(hinge)", "sklearn LinearSVC",
                   "sklearn LinearSVC crammer_singer"):
        assert (method, "quiet") in methods, method
    assert ("torch-svm hand", "busy") in methods and ("numpy float32", "busy") in methods
    floor = [r for r in rows if r["method"] == bench_train.FLOOR]
    assert floor and all(r["val_accuracy"] is None and r["of_floor"] is None for r in floor)
    assert {r["threads"] for r in floor} >= {1}
    for r in (r for r in rows if r["method"] != bench_train.FLOOR):
        assert r["seconds"] > 0 and 0 <= r["val_accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1
        assert r["vs_numpy"] > 0 and (r["busy_vs_quiet"] is None) == (r["neighbour"] == "quiet")
        same = [f for f in floor if f["threads"] == r["threads"]]
        assert (r["of_floor"] is None) == (not same)
        if same:
            assert r["of_floor"] == pytest.approx(same[0]["seconds"] / r["seconds"])
    # the torch-svm rows are the library's runs: same seed, same accuracy
    digits = load_dataset("digits")
    expected = train(digits, TrainConfig(iters=report["meta"]["iters"], device="cpu"))
    hand = [r for r in rows if r["method"] == "torch-svm hand"]
    assert all(r["val_accuracy"] == expected.val_accuracy for r in hand)
    assert hand[0]["threads"] == expected.threads == 1
    # numpy's two thread settings run the same loop: same accuracy
    numpy = [r for r in rows if r["method"] == "numpy float32"]
    assert len({(r["train_accuracy"], r["val_accuracy"]) for r in numpy}) == 1
    assert report["meta"]["optim_import_s"] >= 0 and torch.get_num_threads() == 1
