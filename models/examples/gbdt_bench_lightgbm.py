"""LightGBM side of gbdt_bench: trains LGBMClassifier() with default
parameters on the rows `gbdt_bench --write-data PATH` wrote.

    python gbdt_bench_lightgbm.py PATH [--threads 2]
"""
import argparse
import time

import lightgbm as lgb
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("path")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

with open(args.path, "rb") as f:
    n_rows, n_features = np.frombuffer(f.read(16), "<u8")
    data = np.frombuffer(f.read(), "<f4")
x = data[: n_rows * n_features].reshape(n_rows, n_features)
y = data[n_rows * n_features :]

start = time.perf_counter()
model = lgb.LGBMClassifier(n_jobs=args.threads, verbose=-1).fit(x, y)
seconds = time.perf_counter() - start
print(
    f"lightgbm {lgb.__version__}: rows {n_rows} features {n_features} "
    f"threads {args.threads} seconds {seconds:.2f} trees {model.booster_.num_trees()}"
)
