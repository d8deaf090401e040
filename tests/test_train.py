"""Training, tuning, checkpoints and the train/tune/evaluate CLI, on the embedded digits (CPU, fast)."""
import json
import os
import shutil
import pickle
from pathlib import Path

import pytest
from conftest import run_cli
import torch

import numpy as np
import torch_svm.device
import torch_svm.train
from torch_svm.cli import _COMMANDS, main
from torch_svm.cli._common import command_threads
from torch_svm.data import DataConfig, from_arrays, load_dataset
from torch_svm.losses import svm_loss_and_grad
from torch_svm.checkpoint import load_checkpoint, save_checkpoint
from torch_svm.errors import CheckpointError
from torch_svm.model import LinearSVM
from torch_svm.train import DivergenceError, TrainConfig, batch_indices, train
from torch_svm.tune import TuneConfig, tune
from torch_svm.device import THREAD_GRAIN, CoreWatch, auto_threads, using_threads

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FAST = dict(iters=300, device="cpu")  # enough for digits to pass 0.9


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits64():
    return load_dataset("digits", config=DataConfig(dtype="float64"))


def cli(capsys, *argv):
    """Run ``torch-svm argv`` in-process: (exit code, stdout, stderr lines)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


# --------------------------------------------------------------------------- training


def test_training_decreases_loss_and_classifies_digits(digits):
    result = train(digits, TrainConfig(iters=1500, device="cpu"))
    losses = result.loss_history
    assert len(losses) == 1500
    assert sum(losses[-50:]) / 50 < 0.5 * sum(losses[:10]) / 10
    assert result.train_accuracy > 0.93 and result.val_accuracy > 0.9
    assert result.model.accuracy(digits.tensors("test")[0], digits.tensors("test")[1]) > 0.9
    assert result.config.lr == 1e-3 and result.config.reg == 1.0  # the digits defaults


def test_three_grad_paths_give_the_same_trajectory_float64(digits64):
    runs = {grad: train(digits64, TrainConfig(grad=grad, iters=8, lr=1e-3, reg=0.5, momentum=0.9,
                                              log_every=1, device="cpu"))
            for grad in ("hand", "autograd", "mml")}
    ref = runs["hand"]
    assert ref.model.W.dtype == torch.float64
    start = LinearSVM(65, 10, dtype=torch.float64)  # not the trained W: it moved
    assert not torch.allclose(ref.model.W, start.W)
    for grad in ("autograd", "mml"):
        torch.testing.assert_close(runs[grad].model.W, ref.model.W, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(torch.tensor(runs[grad].loss_history),
                                   torch.tensor(ref.loss_history), rtol=1e-12, atol=0)


def test_same_seed_same_weights_other_seed_other_weights(digits):
    a = train(digits, TrainConfig(seed=3, **FAST))
    b = train(digits, TrainConfig(seed=3, **FAST))
    c = train(digits, TrainConfig(seed=4, **FAST))
    assert torch.equal(a.model.W, b.model.W)
    assert a.loss_history == b.loss_history
    assert not torch.equal(a.model.W, c.model.W)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_schedules_and_momentum_train(digits, schedule):
    result = train(digits, TrainConfig(schedule=schedule, lr_step=100, momentum=0.5, **FAST))
    assert result.val_accuracy > 0.85


def test_divergence_is_detected_with_a_clear_message(digits):
    with pytest.raises(DivergenceError) as info:
        train(digits, TrainConfig(lr=1e6, reg=1e3, iters=200, log_every=10, device="cpu"))
    message = str(info.value)
    assert "became inf" in message or "became nan" in message
    assert f"iteration {info.value.iteration} of 200" in message
    assert "lr=1e+06" in message and "smaller learning rate" in message
    assert info.value.iteration <= 50  # found within log_every of where it happened


def test_plain_sgd_step_is_torch_optim_sgd_bit_for_bit(digits, monkeypatch):
    """momentum 0: the loop updates W as torch.optim.SGD's own step does, bit for bit, with
    the lr the schedule set at that step."""
    import torch_svm.train as train_module

    config = TrainConfig(iters=30, lr=1e-3, schedule="step", lr_step=10, lr_gamma=0.5,
                         device="cpu")
    inline = train(digits, config).model.W.detach().clone()
    rates = []

    def optim_step(W, lr):
        rates.append(lr)
        torch.optim.SGD([W], lr=lr, foreach=False).step()     # momentum 0: no state

    monkeypatch.setattr(train_module, "_plain_sgd_step", optim_step)
    assert torch.equal(train(digits, config).model.W.detach(), inline)
    assert rates == pytest.approx([1e-3] * 10 + [5e-4] * 10 + [2.5e-4] * 10, rel=1e-12)


def test_bad_config_values_are_named(digits):
    for field, value in [("lr", -1.0), ("batch_size", 0), ("sampling", "bogus"), ("grad", "x")]:
        with pytest.raises(ValueError, match=field):
            train(digits, TrainConfig(**{field: value}, **FAST))


def test_epoch_sampling_covers_every_example_once_per_epoch():
    n, batch = 23, 5                                          # 5 batches per epoch, last one 3
    batches = list(batch_indices(n, batch, 10, sampling="epoch",
                                 generator=torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3] * 2
    for epoch in (batches[:5], batches[5:]):
        assert torch.equal(torch.cat(epoch).sort().values, torch.arange(n))
    assert not torch.equal(torch.cat(batches[:5]), torch.cat(batches[5:]))  # reshuffled


def test_replacement_sampling_draws_independent_batches():
    batches = list(batch_indices(10, 50, 3, generator=torch.Generator().manual_seed(0)))
    assert all(len(b) == 50 and int(b.min()) >= 0 and int(b.max()) < 10 for b in batches)


def test_epoch_sampling_trains(digits):
    assert train(digits, TrainConfig(sampling="epoch", **FAST)).val_accuracy > 0.85


def test_hand_loop_is_plain_sgd_on_the_minibatches(digits64):
    """The trainer's step (reused minibatch buffers, a short last batch of an epoch, the
    one-pass hand-written gradient handed to torch.optim.SGD) against a plain loop:
    ``X[idx]``, ``svm_loss_and_grad``, ``W -= lr * dW``."""
    X, y = digits64.tensors("train")[0], digits64.tensors("train")[1]
    n, iters = len(y), 9
    seen = []
    result = train(digits64, TrainConfig(iters=iters, lr=1e-3, reg=0.5, sampling="epoch",
                                         log_every=1, device="cpu"),
                   callback=lambda it, model, Xb, yb: seen.append((Xb.clone(), yb.clone())))
    W = LinearSVM(X.shape[1], 10, dtype=torch.float64,
                  generator=torch.Generator().manual_seed(0)).W.detach().clone()
    losses = []
    batches = batch_indices(n, 200, iters, sampling="epoch",
                            generator=torch.Generator().manual_seed(0))
    for (Xb, yb), idx in zip(seen, batches):
        assert torch.equal(Xb, X[idx]) and torch.equal(yb, y[idx])
        loss, dW = svm_loss_and_grad(W, X[idx], y[idx], 0.5)
        W -= 1e-3 * dW
        losses.append(float(loss))
    per_epoch = [200] * (n // 200) + [n % 200]
    assert [len(b[1]) for b in seen] == (per_epoch * 2)[:iters] and n % 200 != 0
    torch.testing.assert_close(result.model.W.detach(), W, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(torch.tensor(result.loss_history), torch.tensor(losses),
                               rtol=1e-12, atol=0)


def test_threads_chosen_from_the_work_size_and_restored(digits):
    with using_threads(2):
        auto = train(digits, TrainConfig(iters=20, device="cpu"))
        assert torch.get_num_threads() == 2
        asked = train(digits, TrainConfig(iters=20, device="cpu", threads=1))
        assert torch.get_num_threads() == 2
    assert auto.threads == auto_threads(200 * 65 * 10) == 1 and asked.threads == 1
    assert torch.equal(auto.model.W, asked.model.W)


def test_auto_threads_one_for_a_step_every_core_for_a_full_pass(monkeypatch):
    monkeypatch.setattr(torch_svm.device, "cpu_cores", lambda: 4)
    assert auto_threads(0) == 1
    assert auto_threads(200 * 3073 * 10) == 1                  # a CIFAR-10 SGD step
    assert auto_threads(500 * 3073 * 10) == 1                  # verify's CIFAR-10 dev split
    assert auto_threads(200 * 513 * 1000) == 1                 # a linear-probe step: robust when busy
    assert auto_threads(3 * THREAD_GRAIN) == 3
    assert auto_threads(49000 * 3073 * 10) == 4                # a pass over CIFAR-10
    with pytest.raises(ValueError, match="work"):
        auto_threads(-1)


class _FakeProc:
    """What CoreWatch reads from /proc, set by the test: others' running threads at the start,
    then (seconds, busy ticks of the cores, this process's ticks)."""

    def __init__(self, monkeypatch, cores: int, running: int):
        self.now = (0.0, 0, 0)
        monkeypatch.setattr(torch_svm.device, "cpu_set", lambda: list(range(cores)))
        monkeypatch.setattr(torch_svm.device, "_others_running", lambda: running)
        monkeypatch.setattr(torch_svm.device, "_ticks", lambda cpus: self.now)
        monkeypatch.setattr(torch_svm.device.time, "perf_counter", lambda: self.now[0])
        monkeypatch.setattr(torch_svm.device, "_HZ", 100)

    def advance(self, seconds: float, busy_cores: float, own_cores: float) -> None:
        t, busy, own = self.now
        self.now = (t + seconds, busy + round(100 * seconds * busy_cores),
                    own + round(100 * seconds * own_cores))


def test_core_watch_starts_on_the_idle_cores_and_gives_back_a_busy_one(monkeypatch):
    """Threads follow the idle cores: one fewer per core others keep busy, one more once a
    core is idle again; too short an interval, or no /proc, changes nothing."""
    with using_threads(torch.get_num_threads()):
        proc = _FakeProc(monkeypatch, cores=2, running=0)
        watch = CoreWatch(interval=0.1)
        assert watch.start == 2
        proc.advance(0.05, busy_cores=2, own_cores=1)           # too short an interval to judge
        assert watch.threads(2) == 2
        proc.advance(0.2, busy_cores=2, own_cores=1.9)          # quiet: the busy ticks are ours
        assert watch.threads(2) == 2
        proc.advance(0.2, busy_cores=2, own_cores=1.0)          # a neighbour took a core
        assert watch.threads(2) == 1 and torch.get_num_threads() == 1
        proc.advance(0.2, busy_cores=2, own_cores=1.0)          # it stays: so do we
        assert watch.threads(1) == 1
        proc.advance(0.2, busy_cores=0.9, own_cores=0.9)        # it left: two again
        assert watch.threads(1) == 2 and torch.get_num_threads() == 2
        proc.advance(0.2, busy_cores=2, own_cores=1.65)         # a third of a core: keep two
        assert watch.threads(2) == 2
        assert CoreWatch().start == 2
        _FakeProc(monkeypatch, cores=8, running=3)
        assert CoreWatch().start == 5                           # others run on three cores
        _FakeProc(monkeypatch, cores=2, running=5)
        assert CoreWatch().start == 1                           # never fewer than one
        monkeypatch.setattr(torch_svm.device, "_ticks", lambda cpus: None)   # no /proc
        monkeypatch.setattr(torch_svm.device, "_others_running", lambda: None)
        watch = CoreWatch()
        assert watch.start == 2 and watch.threads(2) == 2


def test_proc_readings_on_this_machine():
    """The readers parse this kernel's /proc (skipped where there is none)."""
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc")
    t, busy, own = torch_svm.device._ticks(torch_svm.device.cpu_set())
    assert busy >= own >= 0 and torch_svm.device._others_running() >= 0


def test_train_watches_cores_for_big_steps_only(monkeypatch):
    """A step of SPLIT_WORK or more starts on CoreWatch's count; smaller ones, and a given
    thread count, do not watch."""
    started = []

    class Watch(CoreWatch):
        def __init__(self):
            super().__init__()
            self.start = 1
            started.append(self)

    monkeypatch.setattr(torch_svm.train, "CoreWatch", Watch)
    X = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    data = from_arrays(X.numpy(), np.arange(64) % 8, config=DataConfig(num_val=8, num_test=0))
    monkeypatch.setattr(torch_svm.train, "SPLIT_WORK", 32 * 257 * 8)
    big = train(data, TrainConfig(iters=3, batch_size=32, device="cpu", lr=1e-3, reg=0.0))
    assert len(started) == 1 and big.threads == 1
    train(data, TrainConfig(iters=3, batch_size=16, device="cpu", lr=1e-3, reg=0.0))
    train(data, TrainConfig(iters=3, batch_size=32, device="cpu", lr=1e-3, reg=0.0, threads=1))
    assert len(started) == 1


def test_using_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with using_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with using_threads(0):
            pass


def _aot_eager(monkeypatch):
    """torch.compile through dynamo and AOTAutograd without inductor's C++ build (seconds
    instead of tens of seconds); records the arguments the trainer passed."""
    real, calls = torch.compile, []

    def compile_(fn, **kwargs):
        calls.append(kwargs)
        return real(fn, backend="aot_eager", dynamic=kwargs.get("dynamic"), fullgraph=True)

    monkeypatch.setattr(torch, "compile", compile_)
    return calls


INDUCTOR = pytest.mark.skipif(
    os.environ.get("TORCH_SVM_TEST_INDUCTOR") != "1" or not shutil.which(os.environ.get("CXX", "g++")),
    reason="inductor compiles C++ (about 25 s here); .ci/run runs it after the suite: set "
           "TORCH_SVM_TEST_INDUCTOR=1 with a C++ compiler on PATH")


@INDUCTOR
def test_the_default_compile_users_get_follows_the_eager_trajectory(digits64):
    """``--compile`` as users run it: torch.compile's default backend (inductor, C++ kernels)."""
    config = dict(iters=6, lr=1e-3, reg=0.5, sampling="epoch", batch_size=500, device="cpu")
    eager = train(digits64, TrainConfig(**config))
    compiled = train(digits64, TrainConfig(compile=True, **config))
    torch.testing.assert_close(compiled.model.W, eager.model.W, rtol=1e-9, atol=1e-12)
    assert compiled.loss_history == pytest.approx(eager.loss_history, rel=1e-9)


def test_compiled_step_follows_the_eager_trajectory(digits64, monkeypatch):
    calls = _aot_eager(monkeypatch)
    config = dict(iters=6, lr=1e-3, reg=0.5, sampling="epoch", batch_size=500, device="cpu")
    eager = train(digits64, TrainConfig(**config))
    compiled = train(digits64, TrainConfig(compile=True, **config))
    assert calls == [{"mode": None, "dynamic": False}]
    torch.testing.assert_close(compiled.model.W, eager.model.W, rtol=1e-12, atol=1e-15)
    assert compiled.loss_history == pytest.approx(eager.loss_history, rel=1e-12)


def test_train_config_checks_threads_and_compile():
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=-1)
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="yes")


# --------------------------------------------------------------------------- tuning


def test_tune_picks_best_val_reports_diverged_and_tests_once(digits, monkeypatch):
    seen = []
    accuracy, predict = LinearSVM.accuracy, LinearSVM.predict

    def counting(self, X):                                    # every accuracy predicts once
        seen.append(X.shape[0])
        return predict(self, X)

    monkeypatch.setattr(LinearSVM, "predict", counting)
    result = tune(digits, TuneConfig(lrs=[1e-5, 1e-3, 1e6], regs=[0.1, 1e3], iters=[200],
                                     base=TrainConfig(device="cpu")))
    assert len(result.table) == 6
    diverged = [r for r in result.table if r["diverged"]]
    assert {r["lr"] for r in diverged} == {1e6}
    assert all("smaller learning rate" in r["error"] for r in diverged)
    ok = [r for r in result.table if not r["diverged"]]
    assert result.best["val_accuracy"] == max(r["val_accuracy"] for r in ok)
    assert result.best_result.config.lr == result.best["lr"]
    assert seen.count(len(digits.tensors("test")[1])) == 1                # the test split, once
    assert result.test_accuracy == accuracy(result.best_result.model, digits.tensors("test")[0], digits.tensors("test")[1])


def test_random_search_stays_in_the_ranges(digits):
    result = tune(digits, TuneConfig(lrs=[1e-4, 1e-2], regs=[0.01, 1.0], iters=[100, 200],
                                     random=4, base=TrainConfig(device="cpu")))
    assert len(result.table) == 4
    for row in result.table:
        assert 1e-4 <= row["lr"] <= 1e-2 and 0.01 <= row["reg"] <= 1.0
        assert row["iters"] in (100, 200)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trips_with_weights_only(tmp_path, digits):
    result = train(digits, TrainConfig(**FAST))
    path = save_checkpoint(tmp_path / "m.pt", result.model, {"class_names": ["a", "b"],
                                                               "mean": torch.ones(3)})
    raw = torch.load(path, weights_only=True)
    assert torch.equal(raw["state_dict"]["W"], result.model.W.detach())
    model, meta = load_checkpoint(path)
    assert torch.equal(model.W, result.model.W)
    assert meta["class_names"] == ["a", "b"] and torch.equal(meta["mean"], torch.ones(3))


class _Payload:
    """Unpickling this calls Path.touch(marker): it would run code if a loader allowed it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "torch-svm/linear-svm/1", "state_dict": {"W": torch.zeros(65, 10)},
                "metadata": {"x": _Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    code, out, err = cli(capsys, "evaluate", str(path))
    assert code == 2 and len(err) == 1 and "refused" in err[0]
    assert not marker.exists()
    torch.load(path, weights_only=False)                      # the negative twin: it is live
    assert marker.exists()


def test_corrupt_and_mismatched_checkpoints_exit_2_with_one_line(tmp_path, capsys):
    good = tmp_path / "good.pt"
    save_checkpoint(good, LinearSVM(65, 10), {})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    not_ours = tmp_path / "plain.pt"
    torch.save({"W": torch.zeros(3, 3)}, not_ours)
    plain_pickle = tmp_path / "pickle.pt"
    plain_pickle.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    wrong_shape = tmp_path / "wrong.pt"
    save_checkpoint(wrong_shape, LinearSVM(17, 10), {"dataset": "digits", "image_shape": [8, 8, 1],
                                                     "class_names": [str(i) for i in range(10)],
                                                     "bias": True, "mean_image": torch.zeros(64)})
    for path in (truncated, not_ours, plain_pickle, good, wrong_shape, tmp_path / "missing.pt"):
        code, out, err = cli(capsys, "evaluate", str(path), "--data", "digits")
        assert code == 2 and len(err) == 1 and err[0].startswith("torch-svm evaluate: error:"), \
            (path, err)


# --------------------------------------------------------------------------- CLI


def test_cli_train_out_json_and_evaluate_reproduces(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = cli(capsys, "train", "--iters", "300", "--device", "cpu", "--out", str(out),
                          "--json")
    assert code == 0
    report = json.loads(stdout)
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "seconds"):
        assert isinstance(report[key], float)
    assert report["test_accuracy"] > 0.9
    for name in ("model.pt", "metrics.json", "loss.png", "weights.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == report["test_accuracy"]
    model, meta = load_checkpoint(out / "model.pt")
    assert meta["dataset"] == "digits" and meta["image_shape"] == [8, 8, 1] and meta["bias"]
    assert meta["mean_image"].shape == (64,)
    for split in ("test", "val", "train"):
        code, stdout, _ = cli(capsys, "evaluate", str(out / "model.pt"), "--split", split, "--json")
        assert code == 0
        assert json.loads(stdout)["accuracy"] == report[f"{split}_accuracy"]


def test_cli_evaluate_recentres_on_the_checkpoint_mean(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, "train", "--iters", "300", "--device", "cpu", "--num-train", "800",
               "--out", str(out), "--json")[0] == 0
    # evaluated with another train split size (another mean image): same features, same answer
    code, a, _ = cli(capsys, "evaluate", str(out / "model.pt"), "--json")
    code2, b, _ = cli(capsys, "evaluate", str(out / "model.pt"), "--num-train", "1297", "--json")
    assert code == code2 == 0
    assert json.loads(a)["accuracy"] == pytest.approx(json.loads(b)["accuracy"], abs=1 / 300)


def test_cli_tune_json_and_files(tmp_path, capsys):
    out = tmp_path / "tune"
    code, stdout, _ = cli(capsys, "tune", "--lr", "1e-4:1e-2:3", "--reg", "0.1,1e6", "--iters",
                          "150", "--device", "cpu", "--out", str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert len(report["table"]) == 6
    assert sorted({r["lr"] for r in report["table"]}) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert any(r["diverged"] for r in report["table"])      # reg 1e6 with lr 1e-2 explodes
    assert {"lr", "reg", "iters", "val_accuracy"} <= set(report["best"])
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "seconds"):
        assert isinstance(report[key], float)
    for name in ("model.pt", "metrics.json", "loss.png", "weights.png", "tune.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("command", ["train", "tune"])
def test_cli_dry_run_touches_every_part_in_a_few_steps(tmp_path, capsys, command):
    out = tmp_path / command
    extra = ("--lr", "1e-4,1e-3,1e-2", "--reg", "0.1,1", "--iters", "300") if command == "tune" else ()
    code, stdout, _ = cli(capsys, command, *extra, "--dry-run", "--device", "cpu", "--out", str(out),
                          "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["dry_run"] is True and report["config"]["iters"] == 2
    assert len(json.loads((out / "metrics.json").read_text())["loss_history"]) == 2
    if command == "tune":
        assert len(report["table"]) == 2 and {r["iters"] for r in report["table"]} == {2}
    names = {p.name for p in out.iterdir()}
    assert {"model.pt", "metrics.json", "loss.png", "weights.png"} <= names
    assert ("tune.png" in names) == (command == "tune")
    # without it: the flags as given
    code, stdout, _ = cli(capsys, command, *extra[:2], "--iters", "3", "--device", "cpu", "--json")
    assert code == 0 and json.loads(stdout)["dry_run"] is False


def test_cli_human_output(capsys):
    code, stdout, _ = cli(capsys, "train", "--iters", "100", "--device", "cpu", "--threads", "1")
    assert code == 0 and "test accuracy" in stdout


def test_every_command_takes_threads(capsys):
    for name in _COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "--threads" in capsys.readouterr().out, name


def test_command_threads_from_the_flags(monkeypatch):
    from argparse import Namespace

    monkeypatch.setattr("torch_svm.cli._common.auto_threads", lambda work: work)
    assert command_threads(Namespace(threads=3, batch_size=200)) == 3
    assert command_threads(Namespace(threads=0, batch_size=200, data="cifar10")) == 200 * 3073 * 10
    digits = Namespace(threads=0, batch_size=200, data="digits", data_dir=None)
    assert command_threads(digits) == 200 * 65 * 10
    assert command_threads(Namespace(threads=0, n=50, d=20, c=7)) == 50 * 20 * 7
    assert command_threads(Namespace(threads=0, data_dir="x")) == 500 * 3073 * 10  # kinks on CIFAR


def test_cli_train_reports_threads_and_restores_them(capsys):
    with using_threads(2):
        code, stdout, _ = cli(capsys, "train", "--iters", "20", "--device", "cpu", "--json")
        assert torch.get_num_threads() == 2
    assert code == 0 and json.loads(stdout)["threads"] == 1
    code, stdout, _ = cli(capsys, "train", "--iters", "20", "--device", "cpu", "--threads", "2",
                          "--json")
    assert code == 0 and json.loads(stdout)["threads"] == 2


def test_cli_train_compile(capsys, monkeypatch):
    calls = _aot_eager(monkeypatch)
    code, stdout, _ = cli(capsys, "train", "--iters", "20", "--device", "cpu", "--compile", "--json")
    assert code == 0 and json.loads(stdout)["config"]["compile"] is True and len(calls) == 1


def test_cli_diverging_run_exits_2_with_one_line(capsys):
    code, stdout, err = cli(capsys, "train", "--lr", "1e6", "--reg", "1e3", "--iters", "100",
                            "--device", "cpu")
    assert code == 2 and stdout == "" and len(err) == 1
    assert "diverged" in err[0] and "smaller learning rate" in err[0]


@pytest.mark.parametrize("argv, word", [
    (["train", "--lr", "abc"], "--lr"),
    (["train", "--iters", "0"], "--iters"),
    (["tune", "--lr", "1e-2:1e-4:3"], "--lr"),
    (["train", "--grad", "numeric"], "--grad"),
])
def test_cli_bad_flag_value_exit_2_one_line(capsys, argv, word):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and word in err[0]


@pytest.mark.parametrize("argv, word", [
    (["train", "--lr", "-1", "--device", "cpu"], "--lr"),
    (["train", "--data-dir", "/nowhere"], "--data-dir"),
    (["train", "--data", "cifar10", "--data-dir", "/nowhere/at/all"], "/nowhere/at/all"),
    (["tune", "--random", "-2"], "--random"),
    (["train", "--threads", "-1"], "--threads"),
    (["train", "--device", "cpu:1"], "cpu:1"),
    (["train", "--out", ""], "--out"),
])
def test_cli_bad_value_for_the_library_exit_2_one_line(capsys, argv, word):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err) == 1 and word in err[0], err


def test_cli_out_that_is_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
    target = tmp_path / "file"
    target.write_text("x")
    trained = []
    monkeypatch.setattr("torch_svm.cli.train.train", lambda *a, **k: trained.append(1))
    code, _, err = run_cli(capsys, "train", "--out", str(target))
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "not a folder" in err[0]
    assert trained == [] and target.read_text() == "x"



@pytest.mark.parametrize("length", [200, 255])
def test_cli_a_long_out_name_is_written_or_refused_before_training(tmp_path, capsys, length,
                                                                    monkeypatch):
    """A 200-byte folder name is legal, but ``.<name>.tmp-<pid>-xxxx`` beside it is not: the
    siblings use a hashed stem and the run lands. 255 bytes plus the sibling suffix cannot
    be a name: refused at once (one line naming --out), before any training."""
    out = tmp_path / ("o" * length)
    code, _, err = run_cli(capsys, "train", "--iters", "3", "--out", str(out), "--json")
    assert code == 0, err
    assert (out / "model.pt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]        # no siblings left
    too_long = str(tmp_path / ("o" * 256))
    trained = []
    monkeypatch.setattr("torch_svm.cli.train.train", lambda *a, **k: trained.append(1))
    code, _, err = run_cli(capsys, "train", "--out", too_long)
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "too long" in err[0], err
    assert trained == []


# --------------------------------------------------------------------------- CUDA


@CUDA
def test_cuda_training_matches_cpu_accuracy_and_stays_on_device(digits):
    cpu = train(digits, TrainConfig(iters=1500, device="cpu"))
    gpu = train(digits, TrainConfig(iters=1500, device="cuda"))
    assert gpu.model.W.device.type == "cuda"
    assert abs(gpu.val_accuracy - cpu.val_accuracy) <= 0.03
    assert abs(gpu.train_accuracy - cpu.train_accuracy) <= 0.03


@CUDA
def test_cuda_grad_paths_agree_float64(digits64):
    runs = [train(digits64, TrainConfig(grad=g, iters=5, lr=1e-3, reg=0.5, device="cuda"))
            for g in ("hand", "autograd", "mml")]
    for r in runs[1:]:
        torch.testing.assert_close(r.model.W, runs[0].model.W, rtol=1e-12, atol=1e-15)


@CUDA
def test_cuda_compiled_step_matches_eager(digits):
    """CUDA graphs ("reduce-overhead") and inductor's kernels: float32 rounding may differ
    from eager's, so the two trajectories agree closely, not bit for bit."""
    eager = train(digits, TrainConfig(iters=300, device="cuda"))
    compiled = train(digits, TrainConfig(iters=300, device="cuda", compile=True))
    assert compiled.model.W.device.type == "cuda"
    torch.testing.assert_close(compiled.model.W, eager.model.W, rtol=1e-3, atol=1e-5)
    assert abs(compiled.val_accuracy - eager.val_accuracy) <= 0.01


@CUDA
def test_cuda_loss_and_grad_matches_autograd_on_a_large_batch():
    from verification.checks.reference import autograd_reference

    g = torch.Generator().manual_seed(0)
    W = (torch.randn(3073, 10, generator=g, dtype=torch.float64) * 1e-3).cuda()
    X = (torch.randn(5000, 3073, generator=g, dtype=torch.float64) * 50).cuda()
    y = torch.randint(10, (5000,), generator=g).cuda()
    loss, dW = svm_loss_and_grad(W, X, y, 2.5e4)
    ref_loss, ref_dW = autograd_reference(W, X, y, 2.5e4)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(dW, ref_dW, rtol=1e-10, atol=1e-12)


@CUDA
def test_cuda_divergence_detected(digits):
    with pytest.raises(DivergenceError):
        train(digits, TrainConfig(lr=1e6, reg=1e3, iters=200, device="cuda"))


@pytest.mark.parametrize("argv, words", [
    (["tune", "--lrs", "abc"], "torch-svm tune: error: unrecognized arguments: --lrs abc; did you mean --lr? (see torch-svm tune --help)"),
    (["verify", "x.py:f", "--jsn"], "torch-svm verify: error: unrecognized arguments: --jsn; did you mean --json? (see torch-svm verify --help)"),
    (["train", "--zzzz"], "torch-svm train: error: unrecognized arguments: --zzzz (see torch-svm train --help)"),
])
def test_a_mistyped_flag_gets_the_subcommands_error_and_a_suggestion(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err == [words]
