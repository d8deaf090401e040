"""Your own data through training and the CLI: ``train`` on a data file reads minibatches from
the memory map and matches the run on the same arrays in memory bit for bit; ``--data PATH`` for train, tune and
evaluate; the default lr / reg for features of any scale."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from torch_svm.data import DataConfig, Dataset, from_arrays, load_dataset
from torch_svm.data.load import read_digits
from torch_svm.checkpoint import load_checkpoint
from torch_svm.evaluate import accuracy
from torch_svm.defaults import USER_DECAY, default_hypers, default_init_scale
from torch_svm.train import TrainConfig, batch_indices, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory) -> Path:
    """The embedded digits as a user's .npz: X (1797, 64) uint8 pixels, y, class names."""
    images, labels, _ = read_digits()
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, X=images.reshape(len(images), -1), y=labels,
             class_names=np.array([f"digit {d}" for d in range(10)]))
    return path


@pytest.mark.parametrize("sampling", ["replacement", "epoch"])
def test_training_from_the_map_is_the_in_memory_run(digits_file, sampling, monkeypatch):
    """Same indices (drawn on the CPU either way), same batches: the same W, bit for bit, and
    the same losses and accuracies; the streamed run (in_memory=False) reads only the
    minibatches' rows, and the default (the file fits: read into memory once) is the same W."""
    data = load_dataset(digits_file, config=DataConfig(in_memory=False))
    config = TrainConfig(iters=150, batch_size=128, sampling=sampling, momentum=0.5, seed=2,
                         device="cpu")
    with np.load(digits_file) as z:
        in_memory = train(from_arrays(z["X"], z["y"]), config)
    rows = []
    batch = Dataset.batch

    def counting(self, split, idx, **kwargs):
        rows.append(len(idx))
        return batch(self, split, idx, **kwargs)

    monkeypatch.setattr(Dataset, "batch", counting)
    monkeypatch.setattr(Dataset, "tensors", lambda self, *a, **k: pytest.fail("loaded whole"))
    mapped = train(data, config)
    monkeypatch.undo()
    held = train(load_dataset(digits_file), config)
    assert data.trains_in_memory("train") is False and held.model.W is not None
    assert torch.equal(held.model.W, in_memory.model.W)
    assert torch.equal(mapped.model.W, in_memory.model.W)
    assert mapped.loss_history == in_memory.loss_history
    assert (mapped.train_accuracy, mapped.val_accuracy) == (in_memory.train_accuracy,
                                                             in_memory.val_accuracy)
    drawn = batch_indices(data.num_examples("train"), 128, 150, sampling=sampling)
    assert rows == [1] + [len(idx) for idx in drawn]        # a check row, then the batches
    other = train(data, TrainConfig(iters=150, batch_size=128, sampling=sampling, seed=3,
                                    device="cpu"))
    assert not torch.equal(other.model.W, mapped.model.W)   # the twin: the seed matters


def test_default_hypers_follow_the_scale_of_the_features(tmp_path, digits_file):
    """lr = 1 / E||x~||^2 and 2 lr reg = USER_DECAY, in 2 significant digits, the same for the
    file and its in-memory copy; features 1000x larger get a 1e6x smaller lr, a 1e6x larger
    reg and a 1000x smaller init_scale, and train to the same accuracies (with a literal
    init_scale of 0.001 they do not: the twin); the built-in names keep their recipes."""
    data = load_dataset(digits_file, config=DataConfig(dtype="float64", standardize=False))
    X = data.tensors("train")[0]
    power = float((X ** 2).sum(dim=1).mean())
    lr, reg = default_hypers(data)
    assert lr == pytest.approx(1 / power, rel=0.05) and 2 * lr * reg == pytest.approx(USER_DECAY, rel=0.05)
    with np.load(digits_file) as z:
        same = from_arrays(z["X"], z["y"], config=DataConfig(dtype="float64", standardize=False))
    assert default_hypers(same) == (lr, reg)
    with np.load(digits_file) as z:
        np.savez(tmp_path / "big.npz", X=z["X"] * 1000.0, y=z["y"])
    big = load_dataset(tmp_path / "big.npz", config=DataConfig(dtype="float64", standardize=False))
    big_lr, big_reg = default_hypers(big)
    assert big_lr == pytest.approx(lr * 1e-6, rel=0.02) and big_reg == pytest.approx(reg * 1e6, rel=0.02)
    assert default_init_scale(big) == pytest.approx(default_init_scale(data) / 1000, rel=0.05)
    runs = [train(d, TrainConfig(iters=300, device="cpu")) for d in (data, big)]
    assert runs[0].val_accuracy > 0.9
    for split in ("train_accuracy", "val_accuracy"):       # the same up to rounding: a row or two
        assert getattr(runs[1], split) == pytest.approx(getattr(runs[0], split), abs=0.005)
    literal = train(big, TrainConfig(iters=300, device="cpu", init_scale=0.001))
    assert literal.val_accuracy < runs[0].val_accuracy - 0.3
    digits = load_dataset("digits")
    assert default_hypers(digits) == (1e-3, 1.0) and default_init_scale(digits) == 0.001


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_training_and_evaluating_from_the_map_keep_the_resident_set_bounded(tmp_path, digits_file):
    """A 160 MiB X (sparse on disk, so quick to make): loading, 50 steps and the train and val
    accuracies (a pass over every row) grow the peak resident set by a few chunks, not by
    the file (test_arrays' twin shows a plain np.load(mmap_mode="r") pass growing by all of it)."""
    from test_data_files import _peak_growth

    folder = tmp_path / "big"
    folder.mkdir()
    n, d = 160 * 2**20 // (256 * 4), 256
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    X[::1000] = 1.0
    X.flush()
    del X
    np.save(folder / "y.npy", np.arange(n) % 3)
    config = DataConfig(chunk_bytes=4 * 2**20, num_test=0, in_memory=False)   # streamed
    train(load_dataset(digits_file), TrainConfig(iters=5, device="cpu"))  # imports, allocator
    result = {}
    growth = _peak_growth(lambda: result.update(run=train(load_dataset(folder, config=config),
                                                          TrainConfig(iters=50, device="cpu"))))
    assert growth < 48, growth                                # measured: 30; without releasing pages: 170
    assert 0 <= result["run"].val_accuracy <= 1


# ----------------------------------------------------------------------------- CLI


def test_cli_train_data_path_out_and_evaluate_reproduces(tmp_path, digits_file, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--data", str(digits_file), "--iters", "200",
                              "--device", "cpu", "--num-train", "1200", "--out", str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["data"] == str(digits_file) and report["world_size"] == 1
    standardized = load_dataset(digits_file, config=DataConfig(num_train=1200, standardize=True))
    assert (report["lr"], report["reg"]) == default_hypers(standardized)   # the CLI standardizes
    assert report["test_accuracy"] > 0.9
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "metrics.json", "model.pt"]
    _, meta = load_checkpoint(out / "model.pt")
    assert meta["dataset"] == str(digits_file.resolve())
    torch.testing.assert_close(meta["feature_scale"], standardized.preprocessing.scale, rtol=0, atol=0)
    assert meta["data_config"]["num_train"] == 1200 and meta["class_names"][0] == "digit 0"
    for split in ("train", "val", "test"):                  # the saved config cuts the same splits
        code, stdout, _ = run_cli(capsys, "evaluate", str(out / "model.pt"), "--split", split,
                                  "--json")
        assert code == 0 and json.loads(stdout)["accuracy"] == report[f"{split}_accuracy"]
    # another train size: other train rows and mean, but the checkpoint's mean preprocesses,
    # and val / test (drawn first) are the same rows: the same test accuracy
    code, stdout, _ = run_cli(capsys, "evaluate", str(out / "model.pt"), "--num-train", "600",
                              "--data", str(digits_file), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == report["test_accuracy"]


def test_cli_images_in_keras_layout_train_draw_templates_and_evaluate(tmp_path, capsys):
    """x_train (N, 8, 8, 1) uint8 under Keras' names: trained as the flattened file would be,
    the checkpoint records the image shape, --out holds the class templates (a row of plain
    features gets none: the twin in test_cli_train_data_path_out_and_evaluate_reproduces)."""
    images, labels, _ = read_digits()
    path = tmp_path / "mnist_like.npz"
    np.savez(path, x_train=images[:1497], y_train=labels[:1497], x_test=images[1497:],
             y_test=labels[1497:])
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--data", str(path), "--iters", "200", "--device",
                              "cpu", "--out", str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["test_accuracy"] > 0.9
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "metrics.json", "model.pt",
                                                     "weights.png"]
    assert load_checkpoint(out / "model.pt")[1]["image_shape"] == [8, 8, 1]
    code, stdout, _ = run_cli(capsys, "evaluate", str(out / "model.pt"), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == report["test_accuracy"]


def test_cli_standardize_is_recorded_and_reapplied(tmp_path, digits_file, capsys):
    """The scale a run standardized with is the one evaluate applies (and --no-standardize
    records none): on unscaled inputs the same W predicts other labels (the twin)."""
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--data", str(digits_file), "--iters", "200",
                              "--device", "cpu", "--out", str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    standardized = load_dataset(digits_file)
    model, meta = load_checkpoint(out / "model.pt")
    torch.testing.assert_close(meta["feature_scale"], standardized.preprocessing.scale, rtol=0, atol=0)
    assert accuracy(model, standardized, "test") == report["test_accuracy"]
    raw = torch.cat([model.predict(X) for X, _ in load_dataset(digits_file, config=DataConfig(standardize=False)).chunks("test")])
    scaled = torch.cat([model.predict(X) for X, _ in standardized.chunks("test")])
    assert (raw != scaled).sum() >= 3
    code, stdout, _ = run_cli(capsys, "train", "--data", str(digits_file), "--iters", "200",
                              "--device", "cpu", "--no-standardize", "--out", str(out), "--json")
    assert code == 0
    report = json.loads(stdout)
    assert (report["lr"], report["reg"]) == default_hypers(load_dataset(digits_file, config=DataConfig(standardize=False)))
    assert load_checkpoint(out / "model.pt")[1]["feature_scale"] is None
    code, stdout, _ = run_cli(capsys, "evaluate", str(out / "model.pt"), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == report["test_accuracy"]


def test_cli_tune_data_path(tmp_path, digits_file, capsys):
    code, stdout, _ = run_cli(capsys, "tune", "--data", str(digits_file), "--iters", "100",
                              "--device", "cpu", "--reg", "0.01,1", "--json")
    assert code == 0
    report = json.loads(stdout)
    lr = default_hypers(load_dataset(digits_file))[0]
    assert sorted({r["lr"] for r in report["table"]}) == pytest.approx(
        [float(f"{lr * f:.2g}") for f in (1 / 3, 1, 3)])
    assert len(report["table"]) == 6 and report["test_accuracy"] > 0.85


def _bad_file(tmp_path: Path) -> Path:
    X = np.random.default_rng(0).normal(size=(50, 3))
    X[7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.arange(50) % 2)
    return tmp_path / "nan.npz"


@pytest.mark.parametrize("argv, message", [
    (["--data", "no/such.npz"], "data 'no/such.npz' is neither digits, cifar10 nor an existing"),
    (["--data", "{file}", "--data-dir", "x"], "--data-dir and --download only apply to --data cifar10"),
    (["--data", "{nan}"], r"nan.npz:X: row 7 holds NaN or inf"),
    (["--data", "{file}", "--num-train", "5000"], "--num-train .* must be <= its 1797 rows"),
])
def test_cli_data_errors_are_one_line_exit_2(tmp_path, digits_file, capsys, argv, message):
    argv = [a.format(file=digits_file, nan=_bad_file(tmp_path)) for a in argv]
    for command in ("train", "tune"):
        code, stdout, err = run_cli(capsys, command, *argv, "--iters", "5", "--device", "cpu")
        assert code == 2 and stdout == "" and len(err) == 1, err
        assert err[0].startswith(f"torch-svm {command}: error: ") and \
            __import__("re").search(message, err[0]), err[0]


def test_long_passes_over_a_file_show_progress_and_json_stays_quiet(digits_file, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_SVM_PROGRESS", "1")          # as if stderr were a terminal
    code, _, err = run_cli(capsys, "train", "--data", str(digits_file), "--iters", "5", "--device", "cpu")
    text = "\n".join(err)
    assert code == 0 and "scan:" in text and "test accuracy:" in text and "val accuracy:" in text
    code, _, err = run_cli(capsys, "train", "--data", str(digits_file), "--iters", "5", "--device", "cpu",
                           "--json")
    assert code == 0 and not any("scan:" in line or "accuracy:" in line for line in err)


def test_standardize_applies_to_the_built_in_data_too(capsys):
    """One preprocessing for every source: --standardize on digits scales its pixels, and the
    assignment's lr / reg recipe gives way to the rule for scaled features (the twin: without
    the flag, digits keep the recipe and their unscaled pixels)."""
    code, out, _ = run_cli(capsys, "train", "--data", "digits", "--standardize", "--iters", "100",
                           "--device", "cpu", "--json")
    scaled = json.loads(out)
    code2, out2, _ = run_cli(capsys, "train", "--iters", "100", "--device", "cpu", "--json")
    plain = json.loads(out2)
    assert code == code2 == 0 and (plain["lr"], plain["reg"]) == (1e-3, 1.0)
    standardized = load_dataset("digits", config=DataConfig(standardize=True))
    assert standardized.preprocessing.scale is not None
    assert (scaled["lr"], scaled["reg"]) == default_hypers(standardized) != (1e-3, 1.0)
    assert scaled["val_accuracy"] > 0.9


def test_a_checkpoint_whose_W_does_not_fit_a_data_file_is_refused(tmp_path, digits_file, capsys):
    """The check every source shares: W must be (D + 1, C) of the data it is evaluated on. A
    file with the same D but 9 classes (a column short) is refused, as digits refuse it; the
    twin, the checkpoint's own file, evaluates."""
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", str(digits_file), "--iters", "50", "--device",
                   "cpu", "--out", str(out), "--json")[0] == 0
    with np.load(digits_file) as z:
        keep = z["y"] < 9
        np.savez(tmp_path / "nine.npz", X=z["X"][keep], y=z["y"][keep],
                 class_names=z["class_names"][:9])
    code, _, err = run_cli(capsys, "evaluate", str(out / "model.pt"), "--data",
                           str(tmp_path / "nine.npz"))
    assert code == 2 and len(err) == 1 and "W must be (65, 9)" in err[0], err
    code, stdout, _ = run_cli(capsys, "evaluate", str(out / "model.pt"), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] > 0.8
    # a W with an extra column and the file's own metadata (class names, scale): refused too
    from torch_svm.checkpoint import save_checkpoint
    from torch_svm.model import LinearSVM

    model, meta = load_checkpoint(out / "model.pt")
    wide = LinearSVM(65, 11)
    with torch.no_grad():
        wide.W[:, :10] = model.W
        wide.W[:, 10] = 1e3                                  # argmax would pick it every time
    save_checkpoint(tmp_path / "wide.pt", wide, meta)
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "wide.pt"))
    assert code == 2 and len(err) == 1 and "W must be (65, 10)" in err[0], err


def test_features_of_any_magnitude_are_standardized(tmp_path, digits_file):
    """Constant columns are found relative to their own scale: the digits scaled by 1e-16 (or
    1e16) standardize to the same inputs as the digits themselves and train to the same
    accuracy, through a file and through the estimator; a truly constant column keeps scale 1."""
    from torch_svm.sklearn import LinearSVMClassifier

    with np.load(digits_file) as z:
        X, y = z["X"].astype(np.float64), z["y"]
    runs = {}
    for factor in (1.0, 1e-16, 1e16):
        np.savez(tmp_path / f"x{factor}.npz", X=X * factor, y=y)
        data = load_dataset(tmp_path / f"x{factor}.npz", config=DataConfig(dtype="float64"))
        runs[factor] = train(data, TrainConfig(iters=300, device="cpu"))
        scale = data.preprocessing.scale
        constant = X[data.splits["train"].rows].std(axis=0) == 0
        assert bool((scale[torch.from_numpy(constant)] == 1).all())       # pixels always 0
        assert bool((scale[torch.from_numpy(~constant)] != 1).all())
    for factor in (1e-16, 1e16):
        assert runs[factor].val_accuracy == pytest.approx(runs[1.0].val_accuracy, abs=0.01)
    assert runs[1.0].val_accuracy > 0.9
    tiny = LinearSVMClassifier(random_state=0).fit(X * 1e-16, y)
    plain = LinearSVMClassifier(random_state=0).fit(X, y)
    assert tiny.score(X * 1e-16, y) == pytest.approx(plain.score(X, y), abs=0.01)
    assert plain.score(X, y) > 0.9
