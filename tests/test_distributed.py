"""Data-parallel training (torch_svm.distributed): K processes follow one process's trajectory.

The two-process test runs the real CLI in two processes joined by gloo on localhost, started
with the environment torchrun gives its workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). They are forked from the test process, which has torch imported already: two
fresh interpreters would spend about 3.5 s each importing torch and torch.optim's compiler
stack on a 2-core machine, and the forked ones start in milliseconds. (``torchrun`` itself is
run by ``benchmarks/bench_scale.py --procs 2``.) The reference is the same run in this
process, world size 1.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import time

import numpy as np
import pytest
import torch

from torch_svm.data import DataConfig, load_dataset
from torch_svm.data.load import read_digits
from torch_svm.distributed import World, current_world, process_group
from torch_svm.errors import UsageError
from torch_svm.checkpoint import load_checkpoint
from torch_svm.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shares_tile_the_batch_and_differ_by_at_most_one():
    for n in (0, 1, 2, 7, 200, 201):
        for size in (1, 2, 3, 8):
            shares = [World(rank, size).share(n) for rank in range(size)]
            assert shares[0][0] == 0 and shares[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))   # contiguous
            sizes = [hi - lo for lo, hi in shares]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert World(1, 2).share(1) == (1, 1)                    # an empty share


def test_alone_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group("cpu") as world:
        assert world == World(0, 1) and world.main and current_world() == world
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UsageError, match="WORLD_SIZE=2 but .*MASTER_ADDR.* torchrun"):
        with process_group("cpu"):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, argv: list, log: str) -> None:
    """One worker as torchrun starts it: its environment, then the CLI; stdout and stderr to
    ``log``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from torch_svm.cli import main

    with open(log, "w") as fh:
        sys.stdout = sys.stderr = fh
        code = main(argv)
        fh.flush()
    os._exit(code)


def test_two_gloo_processes_train_the_single_process_model(tmp_path):
    """2 processes, global batch 201 (shares 101 + 100) drawn epoch-wise from 1408 rows, so the
    last batch of each epoch has 1 row and rank 1 none: W after 40 steps equals the single
    process's up to float64 summation order (measured: 8e-16 of max |W|; asserted: 1e-10),
    while another seed lands 0.66 of max |W| away (the twin). Rank 0 alone prints and
    writes --out; --json reports world_size 2; accuracies are counted across the ranks."""
    images, labels, _ = read_digits()
    folder = tmp_path / "digits"
    folder.mkdir()
    np.save(folder / "X.npy", images.reshape(len(images), -1))
    np.save(folder / "y.npy", labels)
    out = tmp_path / "run"
    flags = dict(iters=40, batch_size=201, sampling="epoch", seed=3, device="cpu")
    argv = ["train", "--data", str(folder), "--num-train", "1408", "--dtype", "float64",
            "--threads", "1", "--out", str(out), "--json"]
    argv += [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    data = load_dataset(folder, config=DataConfig(num_train=1408, dtype="float64", standardize=True))
    alone = train(data, TrainConfig(**flags))               # also warms up this process
    port = _free_port()
    context = multiprocessing.get_context("fork")
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    workers = [context.Process(target=_rank, args=(r, port, argv, str(logs[r])))
               for r in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    for w in workers:
        if w.is_alive():
            w.kill()
    assert [w.exitcode for w in workers] == [0, 0], [log.read_text()[-2000:] for log in logs]
    report = json.loads(logs[0].read_text())
    assert logs[1].read_text() == ""                         # rank 1 says nothing
    assert report["world_size"] == 2 and alone.world_size == 1
    together, _ = load_checkpoint(out / "model.pt")
    W = alone.model.W.detach()
    scale = float(W.abs().max())
    gap = float((together.W.detach() - W).abs().max())
    assert gap <= 1e-10 * scale, gap
    assert report["train_accuracy"] == pytest.approx(alone.train_accuracy, abs=1 / 1408)
    assert report["val_accuracy"] == pytest.approx(alone.val_accuracy, abs=1 / 179)
    history = json.loads((out / "metrics.json").read_text())["loss_history"]
    np.testing.assert_allclose(history, alone.loss_history, rtol=1e-10)
    other = train(data, TrainConfig(**{**flags, "seed": 4}))
    assert float((other.model.W.detach() - W).abs().max()) > 0.1 * scale


def _launch(tmp_path, argvs, wait=60, target=None):
    """Fork one worker per argv (rank = position) as torchrun would start them, joined on a
    fresh port with WORLD_SIZE 2; returns (exit codes, log texts)."""
    port = _free_port()
    context = multiprocessing.get_context("fork")
    logs = [tmp_path / f"rank{r}.log" for r in range(len(argvs))]
    workers = [context.Process(target=target or _rank, args=(r, port, argv, str(log)))
               for r, (argv, log) in enumerate(zip(argvs, logs))]
    for w in workers:
        w.start()
    deadline, failed = time.monotonic() + wait, None
    try:
        while time.monotonic() < deadline and any(w.is_alive() for w in workers):
            if failed is None and any(w.exitcode not in (None, 0) for w in workers):
                failed = time.monotonic()          # one failed: the rest get 2 s to follow
                deadline = min(deadline, failed + 2)
            time.sleep(0.02)
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join()
    return [w.exitcode for w in workers], [log.read_text() if log.exists() else "" for log in logs]


def test_a_rank_that_never_starts_is_named_within_the_timeout(tmp_path):
    """Rank 0 of 2 alone: one line naming rank 1 after --dist-timeout, exit 2 (gloo alone
    would wait 30 minutes)."""
    argv = ["train", "--iters", "5", "--device", "cpu", "--dist-timeout", "2"]
    codes, logs = _launch(tmp_path, [argv], wait=30)
    assert codes == [2], logs
    assert "rank(s) 1 never started" in logs[0] and "--dist-timeout" in logs[0]
    assert logs[0].count("\n") == 1 and "Traceback" not in logs[0]


def test_ranks_given_different_data_stop_with_one_line(tmp_path):
    """The same command but another --num-train on rank 1: without the check the two would mix
    different rows into one model; both stop, naming what differs. A negative twin (same
    flags) trains: the check is not one that always fires."""
    base = ["train", "--iters", "5", "--device", "cpu", "--dist-timeout", "20",
            "--threads", "1"]
    codes, logs = _launch(tmp_path, [base + ["--num-train", "1000"],
                                     base + ["--num-train", "1001"]])
    assert codes == [2, 2], logs
    for log in logs:
        assert "rank 1's data differ from rank 0's (train rows" in log, log
        assert log.count("\n") == 1
    codes, logs = _launch(tmp_path, [base + ["--num-train", "1000"]] * 2)
    assert codes == [0, 0], logs


def _stopping_rank(rank: int, port: int, argv: list, log: str) -> None:
    """Train in-process; rank 1 stops itself (SIGSTOP) before step 7, as a process does that a
    debugger or ^Z halts."""
    import signal

    from torch_svm.distributed import DistributedError

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

    def halt(it, *_):
        if rank == 1 and it == 7:
            os.kill(os.getpid(), signal.SIGSTOP)

    with open(log, "w") as fh:
        try:
            with process_group("cpu", timeout=2):
                train(load_dataset("digits"), TrainConfig(iters=50, device="cpu"),
                      callback=halt, progress=False)
        except DistributedError as exc:
            fh.write(str(exc))
            fh.flush()
            os._exit(2)
    os._exit(0)


def test_a_stopped_rank_is_named_and_the_others_exit(tmp_path):
    codes, logs = _launch(tmp_path, [[], []], wait=20, target=_stopping_rank)
    assert codes[0] == 2, logs
    assert "rank(s) 1 stopped answering at step 6 (the others reached 7)" in logs[0], logs[0]
    assert codes[1] == -9                                   # still stopped: killed by _launch
