"""LightGBM on the very rows and splits of one of our evaluations (issue 19's yardstick).

Reads the CSV that `leadscore-train evaluate --export-csv` writes (entity_id, cutoff, label,
split, features; `split` is `fold0`..`foldK-1` for k-fold, `train`/`valid`/`unused` for a
hold-out split) and runs LightGBM two ways, timing only the fitting and predicting:
  - defaults: `LGBMClassifier()` (100 trees) on each fold's training rows, scored on its
    held-out rows; with k-fold, one more fit on all rows (as `evaluate` ships one);
  - our protocol: each fit holds back a seeded 20 % of its training *entities*, grows up to
    1,000 trees until that inner log loss has not improved for 50 rounds, then refits on all
    its training rows with the best number of trees (what `evaluate --family gbdt` does for
    one start; ours tries two starts).
Prints one JSON line: rows, features, threads, and for each way the seconds and the pooled
held-out ROC AUC.

Usage: python lgbm_protocols.py ROWS.csv [--threads N]
"""
import argparse
import warnings
import hashlib
import json
import time

import lightgbm
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

parser = argparse.ArgumentParser()
parser.add_argument("rows")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
# eval_set is deprecated in newer LightGBM for eval_X/eval_y; both give the same fit.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*eval_set.*")

# Features read as float32 straight away (what LightGBM gets either way): a float64 table of
# the 1,000,000-lead generator's 6M rows would take 13 GB before the conversion.
columns = pd.read_csv(args.rows, nrows=0).columns
features = [c for c in columns if c not in ("entity_id", "cutoff", "label", "split")]
table = pd.read_csv(args.rows, dtype={"entity_id": str, **{c: np.float32 for c in features}})
x = table[features].to_numpy(np.float32)
table = table.drop(columns=features)
y = table["label"].astype(int).to_numpy()
split = table["split"].astype(str).to_numpy()
entity = table["entity_id"].to_numpy()

if any(s.startswith("fold") for s in split):
    folds = sorted(set(split))
    fits = [(split != f, split == f) for f in folds]
    final = np.ones(len(y), dtype=bool)
else:
    fits = [(split == "train", split == "valid")]
    final = None


def inner_share(ids, share=0.2):
    """A seeded ~20 % of the entities, by a hash of the id (stable across runs)."""
    digest = np.array([int(hashlib.blake2b(i.encode(), digest_size=8).hexdigest(), 16)
                       for i in ids], dtype=np.float64)
    return digest / 2.0**64 < share


inner_by_row = inner_share(entity)


def fit_defaults(train):
    return lightgbm.LGBMClassifier(n_jobs=args.threads, verbose=-1).fit(x[train], y[train])


def fit_like_ours(train):
    inner = train & inner_by_row
    outer = train & ~inner_by_row
    probe = lightgbm.LGBMClassifier(n_estimators=1000, n_jobs=args.threads, verbose=-1)
    probe.fit(x[outer], y[outer], eval_set=[(x[inner], y[inner])], eval_metric="binary_logloss",
              callbacks=[lightgbm.early_stopping(50, verbose=False)])
    best = max(probe.best_iteration_ or probe.n_estimators, 1)
    return lightgbm.LGBMClassifier(n_estimators=best, n_jobs=args.threads,
                                   verbose=-1).fit(x[train], y[train])


result = {"rows": int(len(y)), "features": len(features), "threads": args.threads}
for name, fit in (("lightgbm defaults", fit_defaults), ("lightgbm our protocol", fit_like_ours)):
    started = time.perf_counter()
    scores = np.full(len(y), np.nan)
    for train, held in fits:
        model = fit(train)
        scores[held] = model.predict_proba(x[held])[:, 1]
    if final is not None:
        fit(final)
    seconds = time.perf_counter() - started
    held_any = ~np.isnan(scores)
    result[name] = {"seconds": round(seconds, 2),
                    "roc_auc": round(float(roc_auc_score(y[held_any], scores[held_any])), 4)}
print(json.dumps(result))
