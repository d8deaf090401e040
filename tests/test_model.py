"""Checkpoints that are broken or hostile: refused with one short line naming what is wrong,
never with advice to load them unsafely; evaluate_checkpoint from Python, without the CLI."""
import pickle

import pytest
import torch
from conftest import run_cli

from torch_svm.data import load_dataset
from torch_svm.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from torch_svm.errors import CheckpointError
from torch_svm.evaluate import evaluate_checkpoint
from torch_svm.model import LinearSVM


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _save(path, digits, W=None, **metadata):
    model = LinearSVM(digits.num_features, digits.num_classes)
    if W is not None:
        with torch.no_grad():
            model.W.copy_(W)
    return save_checkpoint(path, model, {**checkpoint_metadata(digits), **metadata})


def test_evaluate_checkpoint_from_python_matches_the_model(tmp_path, digits):
    W = torch.randn(digits.num_features, digits.num_classes, generator=torch.Generator().manual_seed(0))
    path = _save(tmp_path / "m.pt", digits, W)
    result = evaluate_checkpoint(path, split="val")
    expected = float(((digits.tensors("val")[0] @ W).argmax(1) == digits.tensors("val")[1]).double().mean())
    assert (result.dataset, result.split, result.n) == ("digits", "val", 200)
    assert result.accuracy == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_W_is_refused_naming_the_tensor(tmp_path, digits, capsys, value):
    W = torch.zeros(digits.num_features, digits.num_classes)
    W[3, 4] = value
    path = _save(tmp_path / "m.pt", digits, W)
    with pytest.raises(CheckpointError, match="tensor W holds NaN or inf"):
        load_checkpoint(path)
    code, _, err = run_cli(capsys, "evaluate", str(path))
    assert code == 2 and len(err) == 1 and "tensor W" in err[0]


def test_non_finite_mean_image_is_refused(tmp_path, digits, capsys):
    path = _save(tmp_path / "m.pt", digits, mean_image=torch.full((64,), float("nan")))
    code, _, err = run_cli(capsys, "evaluate", str(path))
    assert code == 2 and len(err) == 1 and "mean_image holds NaN or inf" in err[0]
    good = _save(tmp_path / "good.pt", digits)               # the twin: a finite mean is fine
    assert run_cli(capsys, "evaluate", str(good))[0] == 0


def test_huge_echoed_values_are_clipped(tmp_path, digits, capsys):
    names = ["x" * 100_000 for _ in range(10)]
    path = _save(tmp_path / "m.pt", digits, class_names=names)
    code, _, err = run_cli(capsys, "evaluate", str(path))
    assert code == 2 and len(err) == 1 and len(err[0]) < 1500 and "classes" in err[0]


class _Payload:
    def __reduce__(self):
        return (print, ("ran",))


@pytest.mark.parametrize("make", [
    lambda: pickle.dumps([1, 2, 3], protocol=2),                   # a plain pickle
    lambda: pickle.dumps({"W": _Payload()}, protocol=4),           # a plain pickle with a call
    lambda: _torch_bytes({"format": "torch-svm/linear-svm/1", "state_dict": {"W": torch.zeros(65, 10)},
                          "metadata": {"x": _Payload()}}),         # torch.save with a call inside
])
def test_unsafe_files_get_one_line_without_unsafe_advice(tmp_path, capsys, make):
    path = tmp_path / "evil.pt"
    path.write_bytes(make())
    code, out, err = run_cli(capsys, "evaluate", str(path))
    assert code == 2 and len(err) == 1 and "refused" in err[0]
    assert "weights_only=False" not in err[0] and "ran" not in out


def _torch_bytes(obj):
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_fifo_is_not_read(tmp_path, capsys):
    import os
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "evaluate", str(fifo))             # would block if opened
    assert code == 2 and len(err) == 1 and "not a regular file" in err[0]


def test_out_with_foreign_files_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, _, err = run_cli(capsys, "train", "--iters", "5", "--out", str(out))
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "thesis.tex" in err[0]
    assert (out / "thesis.tex").read_text() == "precious"


def test_a_run_replaces_its_folder_whole_and_leaves_no_temporaries(tmp_path, capsys):
    out = tmp_path / "run"
    for iters in ("5", "6"):
        assert run_cli(capsys, "train", "--iters", iters, "--out", str(out), "--json")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "metrics.json", "model.pt", "weights.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]          # no .run.tmp-* / .run.trash-*
    import json
    assert json.loads((out / "metrics.json").read_text())["iters"] == 6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_file_checkpoint_evaluates_whatever_its_reading_settings_and_w_dtype(tmp_path, dtype):
    """A checkpoint trained on a data file is evaluated with this run's chunk size, not the
    one it stores (2**62 would ask for exabytes), and with W in any floating dtype: the
    accuracy is the float32 model's, within the rounding of W's dtype (one example in 179
    may flip)."""
    import numpy as np
    from torch_svm.data.load import read_digits
    from torch_svm.train import TrainConfig, train

    images, labels, _ = read_digits()
    folder = tmp_path / "digits"
    folder.mkdir()
    np.save(folder / "X.npy", images.reshape(len(images), -1))
    np.save(folder / "y.npy", labels)
    data = load_dataset(folder)
    result = train(data, TrainConfig(iters=200, device="cpu"), progress=False)
    metadata = checkpoint_metadata(data)
    metadata["data_config"]["chunk_bytes"] = 2**62
    import copy
    save_checkpoint(tmp_path / "m.pt", copy.deepcopy(result.model).to(dtype), metadata)
    got = evaluate_checkpoint(tmp_path / "m.pt", split="test")
    from torch_svm.evaluate import accuracy
    expected = accuracy(result.model, data, "test")
    assert got.n == data.num_examples("test")
    assert got.accuracy == pytest.approx(expected, abs=1 / got.n + 1e-12)
