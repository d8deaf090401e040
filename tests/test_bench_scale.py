"""benchmarks/bench_scale.py: its data writer makes what it says, and its quick mode runs end
to end on the CPU (and on CUDA where there is one), so it cannot rot."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_scale  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_data_are_written_in_chunks_as_one_array(tmp_path):
    """Chunked writing is the same draw as one chunk: X (n, d) float32 and labels in [0, c)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    size = bench_scale.write_data(a, 1000, 8, 5, chunk=128)
    bench_scale.write_data(b, 1000, 8, 5, chunk=1000)
    X, y = np.load(a / "X.npy"), np.load(a / "y.npy")
    assert X.shape == (1000, 8) and X.dtype == np.float32 and size == 1000 * 8 * 4 + 1000 * 4 + 256
    assert set(np.unique(y)) == set(range(5))
    np.testing.assert_array_equal(X, np.load(b / "X.npy"))
    # rows sit around their class's mean: the class means differ, the noise is unit
    means = np.stack([X[y == k].mean(axis=0) for k in range(5)])
    assert 0.8 < X[y == 0].std(axis=0).mean() < 1.2 and np.ptp(means, axis=0).max() > 0.5


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_quick_mode_trains_from_the_map_and_reports(capsys, device):
    assert bench_scale.main(["--quick", "--json", "--device", device]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert (report["n"], report["d"], report["c"]) == (20000, 64, 10) and not report["kept"]
    assert not Path(report["folder"]).exists()                 # the data were removed
    assert row["world_size"] == 1 and row["device"].startswith(device)
    assert row["rows_evaluated"] == 20000 and row["examples_per_second"] > 0
    assert row["val_accuracy"] > 0.5                           # 10 classes: chance is 0.1
    if Path("/proc/self/status").exists():
        assert row["memory_mb"]["VmHWM"] >= row["memory_mb"]["RssAnon"] > 0
