"""A plain recency-frequency-monetary churn baseline on the very rows of one of our hold-out
splits (issue 20's yardstick).

Reads the CSV that `leadscore-train evaluate --export-csv` writes (entity_id, cutoff, label,
split, features: the `split` column says which rows train and which validate), computes for
each (entity, cutoff) row, from the purchase log and strictly before the cutoff: recency,
tenure, distinct purchase days, lifetime spend and line count, and the count and spend of the
last 30, 90 and 180 days; fits scikit-learn's scaled logistic regression and LightGBM's
defaults on the training rows and prints their ROC AUC on the validation rows, beside ours.

Usage: python rfm_baseline.py ROWS.csv EVENTS.parquet --id COL --time COL
           (--value COL | --value-product A B) [--type-col COL --types t1,t2]
           [--drop-prefix COL PREFIX] [--ours "logistic 0.73,gbdt 0.75"]
"""
import argparse
import json

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

DAY_MS = 86_400_000
WINDOWS = (30, 90, 180)


def epoch_ms(values):
    """Milliseconds since the epoch, UTC (naive times taken as UTC), whatever the unit the
    column is stored in."""
    times = pd.to_datetime(values, utc=True)
    return (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)

parser = argparse.ArgumentParser()
parser.add_argument("rows")
parser.add_argument("events")
parser.add_argument("--id", required=True)
parser.add_argument("--time", required=True)
parser.add_argument("--value")
parser.add_argument("--value-product", nargs=2)
parser.add_argument("--type-col")
parser.add_argument("--types")
parser.add_argument("--drop-prefix", nargs=2, metavar=("COL", "PREFIX"))
parser.add_argument("--ours", default="")
args = parser.parse_args()

rows = pd.read_csv(args.rows, usecols=["entity_id", "cutoff", "label", "split"],
                   dtype={"entity_id": str})
if np.issubdtype(rows["cutoff"].dtype, np.number):
    rows["cutoff_ms"] = rows["cutoff"].astype("int64")
else:
    rows["cutoff_ms"] = epoch_ms(rows["cutoff"])

events = pd.read_parquet(args.events)
events = events[events[args.id].notna()]
if args.drop_prefix:
    column, prefix = args.drop_prefix
    events = events[~events[column].astype(str).str.startswith(prefix)]
if args.type_col:
    events = events[events[args.type_col].isin(args.types.split(","))]
ids = events[args.id]
if pd.api.types.is_float_dtype(ids):
    ids = ids.astype("int64")
events = pd.DataFrame({
    "entity_id": ids.astype(str),
    "ts": epoch_ms(events[args.time]).to_numpy(),
    "value": (events[args.value_product[0]] * events[args.value_product[1]]
              if args.value_product else events[args.value]).fillna(0.0).astype(float),
})

parts = []
for cutoff, group in rows.groupby("cutoff_ms"):
    before = events[events["ts"] < cutoff]
    by = before.groupby("entity_id")
    f = pd.DataFrame({
        "recency_days": (cutoff - by["ts"].max()) / DAY_MS,
        "tenure_days": (cutoff - by["ts"].min()) / DAY_MS,
        "distinct_days": by["ts"].apply(lambda t: (t // DAY_MS).nunique()),
        "lifetime_spend": by["value"].sum(),
        "lines": by["ts"].size(),
    })
    for days in WINDOWS:
        recent = before[before["ts"] >= cutoff - days * DAY_MS].groupby("entity_id")
        f[f"count_{days}d"] = recent["ts"].size()
        f[f"spend_{days}d"] = recent["value"].sum()
    f = f.reset_index()
    parts.append(group.merge(f, on="entity_id", how="left"))
table = pd.concat(parts, ignore_index=True)
features = [c for c in table.columns
            if c not in ("entity_id", "cutoff", "cutoff_ms", "label", "split")]
for c in features:
    if c.startswith(("count_", "spend_", "lines", "lifetime", "distinct")):
        table[c] = table[c].fillna(0.0)
train = (table["split"] == "train").to_numpy()
valid = (table["split"] == "valid").to_numpy()
if not train.any() or not valid.any():
    raise SystemExit("the CSV has no `train` or no `valid` rows: export it with a hold-out split")
x, y = table[features].to_numpy(np.float64), table["label"].astype(int).to_numpy()

results = {"train_rows": int(train.sum()), "valid_rows": int(valid.sum())}
models = [("rfm logistic", Pipeline([("impute", SimpleImputer(strategy="median")),
                                     ("scale", StandardScaler()),
                                     ("model", LogisticRegression(max_iter=5000))]))]
import lightgbm  # noqa: E402

models.append(("rfm lightgbm", lightgbm.LGBMClassifier(verbose=-1)))
for name, model in models:
    model.fit(x[train], y[train])
    results[name] = round(float(roc_auc_score(y[valid], model.predict_proba(x[valid])[:, 1])), 5)
for item in filter(None, args.ours.split(",")):
    name, auc = item.rsplit(" ", 1)
    results[f"ours {name}"] = float(auc)
print(json.dumps(results))
