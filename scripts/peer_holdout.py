"""The peer's models (../shared/peer/train_peer.py: LightGBM defaults, scikit-learn's scaled
logistic regression) on the very rows of one of our hold-out splits.

Reads a CSV written by `leadscore-train evaluate --export-csv` (its `split` column says which
rows are `train` and which `valid`), fits on the training rows, prints the validation ROC AUC.
Used by scripts/bench-training on generator data, where the split is in time and by entity.
Usage: python peer_holdout.py CSV"""
import json
import sys
import time

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

frame = pd.read_csv(sys.argv[1])
split = frame.pop("split")
labels = frame.pop("label").astype(int)
for column in ("entity_id", "cutoff"):
    frame.pop(column)
features = frame.astype(np.float32)
train, valid = (split == "train").to_numpy(), (split == "valid").to_numpy()
if not train.any() or not valid.any():
    sys.exit("the CSV has no `train` or no `valid` rows: export it with a hold-out split")

results = {"train_rows": int(train.sum()), "valid_rows": int(valid.sum())}
models = [("logreg", Pipeline([("impute", SimpleImputer(strategy="median")),
                               ("scale", StandardScaler()),
                               ("model", LogisticRegression(max_iter=2000))]))]
try:
    import lightgbm

    models.append(("lightgbm", lightgbm.LGBMClassifier(verbose=-1)))
except ImportError:
    pass
for name, model in models:
    started = time.time()
    model.fit(features[train], labels[train])
    scores = model.predict_proba(features[valid])[:, 1]
    results[name] = {"valid_roc_auc": float(roc_auc_score(labels[valid], scores)),
                     "fit_seconds": time.time() - started}
print(json.dumps(results, indent=1))
