"""leadscore.spark against the command line, on the generator data scripts/test-python
prepares (10,000 leads and 5,000 customers): PySpark in local mode with two cores (Java from
Debian's openjdk package, checked by the script) builds each history's feature table, which
must equal ``leadscore-train features`` bit for bit, and a model trained from the Spark table
with ``leadscore-train train --prepared`` must be the model trained from the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import leadscore
import leadscore.spark

WORK = Path(os.environ["LEADSCORE_TEST_WORK"])
TRAIN = os.environ["LEADSCORE_TRAIN_BIN"]

# (folder, spec's entities / events / outcomes files, the CLI's table)
HISTORIES = {
    "leads": ("leads.parquet", "events.parquet", "conversions.parquet"),
    "customers": ("customers.parquet", "events.parquet", "churn.parquet"),
}


@pytest.fixture(scope="module")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("leadscore-test")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.local.dir", str(WORK / "spark-local"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def frames(spark, folder: str) -> dict:
    entities, events, outcomes = HISTORIES[folder]
    read = lambda name: spark.read.parquet(str(WORK / folder / name))  # noqa: E731
    return {"entities": read(entities), "events": read(events), "outcomes": read(outcomes)}


def sorted_table(path: Path) -> pa.Table:
    table = pq.read_table(path)
    # The CLI's Parquet has string views; Spark's plain strings.
    table = table.set_column(0, "entity_id", table["entity_id"].cast(pa.string()))
    return table.sort_by([("entity_id", "ascending"), ("cutoff", "ascending")])


def assert_bit_for_bit(ours: pa.Table, theirs: pa.Table) -> None:
    assert ours.column_names == theirs.column_names
    assert ours.num_rows == theirs.num_rows > 0
    for name in theirs.column_names:
        a, b = ours[name].to_numpy(), theirs[name].to_numpy()
        if b.dtype == np.float32:
            assert a.dtype == np.float32, name
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), name
        elif b.dtype.kind in "iu":
            assert np.array_equal(a.astype(np.int64), b.astype(np.int64)), name
        else:
            assert list(a) == list(b), name


@pytest.mark.parametrize("folder", sorted(HISTORIES))
def test_the_spark_table_is_the_command_line_table_bit_for_bit(spark, folder: str) -> None:
    spec = WORK / folder / "spec.toml"
    cli = WORK / f"{folder}-features.parquet"
    if not cli.exists():
        subprocess.run([TRAIN, "features", "--spec", str(spec), "--out", str(cli)], check=True,
                       capture_output=True)
    built = leadscore.spark.feature_table(spec, frames(spark, folder), partitions=3)
    out = WORK / f"spark-{folder}"
    built.write(out)
    spark_table = sorted_table(out / "features")
    assert_bit_for_bit(spark_table, sorted_table(cli))
    # The plan and cutoffs are those of one load of the whole history.
    whole = leadscore.feature_table(spec)
    assert built.plan == whole.plan
    assert json.loads(built.cutoffs_json) == whole.cutoffs
    assert built.entities == len(set(spark_table["entity_id"].to_pylist()))
    print(f"{folder}: Spark's {spark_table.num_rows} rows x {spark_table.num_columns - 3} "
          f"features equal leadscore-train features bit for bit ({built.events} events)")
    built.unpersist()


def test_a_model_trained_from_the_spark_table_is_the_model_trained_from_the_files(
    spark,
) -> None:
    # test-python trained registry/propensity/py-gbdt from the files: --family gbdt, seed 42.
    prepared = WORK / "spark-leads"
    if not prepared.exists():
        built = leadscore.spark.feature_table(WORK / "leads" / "spec.toml", frames(spark, "leads"))
        built.write(prepared)
    registry = WORK / "spark-registry"
    subprocess.run([TRAIN, "train", "--prepared", str(prepared), "--registry", str(registry),
                    "--family", "gbdt", "--model", "propensity", "--version", "from-spark"],
                   check=True, capture_output=True)
    ours = registry / "propensity" / "from-spark"
    theirs = WORK / "registry" / "propensity" / "py-gbdt"
    for name in ("model.onnx", "explainer.json", "holdout.csv"):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    a = json.loads((ours / "manifest.json").read_text())
    b = json.loads((theirs / "manifest.json").read_text())
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    # Only when, under which version and from which files.
    assert differ == ["created_at", "dataset", "version"], differ
    assert {k for k in a["dataset"] if a["dataset"][k] != b["dataset"].get(k)} == {"fingerprint"}
    assert a["drift"] == b["drift"] and a["thresholds"] == b["thresholds"]
    print("a model trained from the Spark table: model.onnx, explainer and held-out rows equal "
          "the files' model's")


def test_a_spec_section_without_its_dataframe_is_refused(spark) -> None:
    given = frames(spark, "leads")
    del given["outcomes"]
    with pytest.raises(leadscore.DataError, match="outcomes"):
        leadscore.spark.feature_table(WORK / "leads" / "spec.toml", given)
    given = frames(spark, "leads")
    given["events"] = given["events"].withColumnRenamed("lead_id", "who")
    with pytest.raises(leadscore.DataError, match="lead_id"):
        leadscore.spark.feature_table(WORK / "leads" / "spec.toml", given)
