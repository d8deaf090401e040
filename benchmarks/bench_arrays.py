"""Memory and speed of :mod:`torch_svm.data` on a file larger than one would load whole.

Usage: ``python benchmarks/bench_arrays.py [--mb 1024] [--format npz|folder] [--json]``

Writes a synthetic data file of about ``--mb`` MiB (float32 ``X: (N, 3072)``, CIFAR-sized
rows, random values, 10 classes) into a temporary folder, then in a fresh child process
measures, each from the child's own ``/proc/self/status``:

* ``load``: :func:`torch_svm.data.load_dataset` (one streaming pass: finite check and train mean);
* ``features``: one :meth:`ArrayDataset.features` pass over train (what an accuracy costs);
* ``batches``: 200 random minibatches of 200 rows through :meth:`ArrayDataset.batch`;
* ``plain read`` (folder only): for contrast, summing the same ``X.npy`` through
  ``np.load(mmap_mode="r")``, which releases nothing: the resident set grows by the whole file.

It prints the time of each step and the growth of the peak resident set (VmHWM) and of the
anonymous (RssAnon: really allocated) and file-backed (RssFile: mapped page cache) parts over
the baseline taken after imports. Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, sys, time
import numpy as np, torch
from torch_svm.data import DataConfig, load_dataset

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields

path, out = sys.argv[1], {}
base = status()
def step(name, fn):
    start = time.perf_counter()
    fn()
    now = status()
    out[name] = {"seconds": time.perf_counter() - start,
                 **{k + "_growth_mb": now[k] - base[k] for k in now}}

holder = {}
step("load", lambda: holder.update(ds=load_dataset(path, config=DataConfig(chunk_bytes=8 * 2**20))))
ds = holder["ds"]
step("features", lambda: sum(int(y.shape[0]) for _, y in ds.chunks("train")))
gen = torch.Generator().manual_seed(0)
n = ds.num_examples("train")
def batches():
    for _ in range(200):  # each batch dropped before the next, as a training loop does
        ds.batch("train", torch.randint(n, (200,), generator=gen))
step("batches", batches)
if not path.endswith(".npz"):  # a folder: the same X.npy, read the plain way
    X = np.load(path + "/X.npy", mmap_mode="r")
    step("plain read", lambda: float(X.sum(dtype=np.float64)))
print(json.dumps(out))
"""


def _write(folder: Path, mb: int, fmt: str) -> Path:
    D, C = 3072, 10
    n = max(1000, mb * 2**20 // (D * 4))
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, D))
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        X[start:stop] = rng.standard_normal((stop - start, D), dtype=np.float32)
    X.flush()
    del X
    np.save(folder / "y.npy", rng.integers(0, C, n))
    if fmt == "folder":
        return folder
    import zipfile  # np.savez would need X in memory: stream the .npy files into a stored zip
    out = folder / "data.npz"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in ("X", "y"):
            with open(folder / f"{name}.npy", "rb") as src, \
                    zf.open(f"{name}.npy", "w", force_zip64=True) as dst:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    (folder / "X.npy").unlink()
    (folder / "y.npy").unlink()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of X in MiB (default: 1024)")
    parser.add_argument("--format", choices=("npz", "folder"), default="folder",
                        help="an uncompressed .npz or a folder of .npy (default: folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = _write(Path(tmp), args.mb, args.format)
        written = time.perf_counter() - start
        run = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                             text=True, check=True)
    result = {"mb": args.mb, "format": args.format, "write_seconds": written,
              **json.loads(run.stdout)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.format}, X {args.mb} MiB float32 (N x 3072); growth over the baseline after imports:")
    print(f"{'step':<12}{'seconds':>9}{'VmHWM MiB':>11}{'RssAnon MiB':>13}{'RssFile MiB':>13}")
    for name in ("load", "features", "batches", "plain read"):
        if name in result:
            r = result[name]
            print(f"{name:<12}{r['seconds']:>9.2f}{r['VmHWM_growth_mb']:>11.1f}"
                  f"{r['RssAnon_growth_mb']:>13.1f}{r['RssFile_growth_mb']:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
