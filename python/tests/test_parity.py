"""The package against the server and the command line, on generator data that
scripts/test-python prepares: bundles of both families (and a churn model), a leadscore-serve on
them at LEADSCORE_TEST_URL, score requests and the CLI's feature table in LEADSCORE_TEST_WORK.

Tolerances: a probability may differ from the server's by at most PROBABILITY_TOLERANCE and a
reason's contribution (or the baseline) by REASON_TOLERANCE; everything else (grade, score,
sales-ready flag, reason names and values in words, features, thresholds tables) is equal.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import leadscore

PROBABILITY_TOLERANCE = 1e-6
REASON_TOLERANCE = 1e-9

WORK = Path(os.environ["LEADSCORE_TEST_WORK"])
URL = os.environ["LEADSCORE_TEST_URL"]
AUTH = {"authorization": "Bearer " + os.environ["LEADSCORE_TEST_KEY"]}
REGISTRY = WORK / "registry"

# (model name, bundle version, the requests it scores)
MODELS = [
    ("propensity", "py-gbdt", "leads-requests.jsonl"),
    ("propensity-scorecard", "py-logistic", "leads-requests.jsonl"),
    ("churn", "py-churn", "customers-requests.jsonl"),
]


def post(path: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **AUTH},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def get(path: str) -> dict:
    request = urllib.request.Request(URL + path, headers=AUTH)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def requests(name: str) -> list[dict]:
    lines = (WORK / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def bundles() -> dict[str, leadscore.Bundle]:
    return {model: leadscore.Bundle(REGISTRY / model / version) for model, version, _ in MODELS}


def test_the_server_serves_the_bundles_under_test() -> None:
    # The server must be serving the very versions the package loads, or nothing below means
    # anything.
    for model, version, requests_file in MODELS:
        status, answer = post(f"/v1/score/{model}", requests(requests_file)[0])
        assert status == 200, answer
        assert answer["model"] == {"name": model, "task": answer["model"]["task"], "version": version}
        # ... and the one the package finds live in the registry.
        assert leadscore.Bundle.served(REGISTRY, model).version == version
    with pytest.raises(leadscore.BundleError, match="no-such-model"):
        leadscore.Bundle.served(REGISTRY, "no-such-model")


@pytest.mark.parametrize("model,version,requests_file", MODELS)
def test_scores_and_reasons_equal_the_servers(
    bundles: dict[str, leadscore.Bundle], model: str, version: str, requests_file: str
) -> None:
    bundle = bundles[model]
    assert (bundle.name, bundle.version) == (model, version)
    bodies = requests(requests_file)
    assert len(bodies) >= 50
    worst_p = worst_reason = 0.0
    reasons_seen = 0
    for body in bodies:
        status, served = post(f"/v1/score/{model}", body)
        assert status == 200, served
        mine = bundle.score(body)
        assert mine["model"] == served["model"]
        assert mine.get("id") == served.get("id") == body.get("id")
        worst_p = max(worst_p, abs(mine["probability"] - served["probability"]))
        assert abs(mine["probability"] - served["probability"]) <= PROBABILITY_TOLERANCE
        for key in ("score", "grade", "sales_ready", "ignored_fields"):
            assert mine.get(key) == served.get(key), (key, body.get("id"))
        ours, theirs = mine["reasons"], served["reasons"]
        diff = abs(ours["baseline_log_odds"] - theirs["baseline_log_odds"])
        assert diff <= REASON_TOLERANCE
        for sign in ("positive", "negative"):
            assert [(r["feature"], r["value"]) for r in ours[sign]] == [
                (r["feature"], r["value"]) for r in theirs[sign]
            ], (sign, body.get("id"))
            for a, b in zip(ours[sign], theirs[sign]):
                worst_reason = max(worst_reason, abs(a["contribution"] - b["contribution"]))
                assert abs(a["contribution"] - b["contribution"]) <= REASON_TOLERANCE
            reasons_seen += len(ours[sign])
        # Without reasons: the same score, no reasons key (as the server's ?reasons=false).
        bare = bundle.score(body, reasons=False)
        assert "reasons" not in bare and bare["probability"] == mine["probability"]
    assert reasons_seen > len(bodies)  # the comparison compared reasons
    print(f"{model}: {len(bodies)} entities, largest probability difference {worst_p:.3g}, "
          f"largest contribution difference {worst_reason:.3g}")


def as_ms(time: str | int) -> int:
    if isinstance(time, int):
        return time
    return int(dt.datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp() * 1000)


def test_feature_vectors_equal_the_feature_table(bundles: dict[str, leadscore.Bundle]) -> None:
    built = leadscore.feature_table(WORK / "leads" / "spec.toml")
    # The package's table is the command line's: the same Parquet bytes, and so the same
    # columns (NaN, a missing value, in the same places).
    cli_file = WORK / "leads-features.parquet"
    parquet, _, _ = leadscore._native.feature_table(str(WORK / "leads" / "spec.toml"))
    assert parquet == cli_file.read_bytes()
    cli = pq.read_table(cli_file)
    assert built.table.schema.equals(cli.schema)
    for name in built.table.column_names:
        ours, theirs = built.table[name].to_numpy(), cli[name].to_numpy()
        if ours.dtype.kind == "f":
            assert np.array_equal(ours, theirs, equal_nan=True), name
        else:
            assert (ours == theirs).all(), name
    # ... and the plan it was built with is the one the bundle carries (same data, same fit).
    bundle = bundles["propensity"]
    assert built.plan == bundle.manifest["feature_plan"]
    assert built.table.column_names[3:] == bundle.feature_names
    frame = built.to_polars()
    assert frame.shape == (built.table.num_rows, built.table.num_columns)

    rows = {
        (entity, cutoff): i
        for i, (entity, cutoff) in enumerate(
            zip(built.table["entity_id"].to_pylist(), built.table["cutoff"].to_pylist())
        )
    }
    compared = 0
    for body in requests("leads-requests.jsonl"):
        key = (body["id"], as_ms(body["as_of"]))
        # The requests score each lead at the last cutoff; the table has a row there only
        # for leads still open with a closed label window.
        if key not in rows:
            continue
        i = rows[key]
        expected = [built.table[name][i].as_py() for name in bundle.feature_names]
        features = bundle.features(body)
        assert list(features) == bundle.feature_names
        got = list(features.values())
        # float32 values on both sides: equal bit for bit (NaN where a value is missing).
        assert all(
            (math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, expected)
        ), body["id"]
        compared += 1
    print(f"feature vectors compared with the table: {compared}")
    assert compared >= 30


def test_request_errors_carry_the_servers_message_and_field(
    bundles: dict[str, leadscore.Bundle],
) -> None:
    good = requests("leads-requests.jsonl")[0]
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).isoformat()
    bad_bodies = [
        {k: v for k, v in good.items() if k != "created_at"},
        {**good, "events": [{"ts": future, "type": "page_view"}]},
        {**good, "as_of": "yesterday"},
        {**good, "row": {"x": 1}},
        {**good, "surprise": 1},
    ]
    for body in bad_bodies:
        status, served = post("/v1/score/propensity", body)
        assert status == 400, served
        with pytest.raises(leadscore.RequestError) as caught:
            bundles["propensity"].score(body)
        assert str(caught.value) == served["error"]["message"]
        assert caught.value.field == served["error"]["field"]
        assert isinstance(caught.value, ValueError)
        with pytest.raises(leadscore.RequestError) as caught_features:
            bundles["propensity"].features(body)
        assert str(caught_features.value) == served["error"]["message"]


def test_naive_datetimes_are_refused_and_aware_ones_taken(
    bundles: dict[str, leadscore.Bundle],
) -> None:
    body = requests("leads-requests.jsonl")[0]
    as_of = dt.datetime.fromtimestamp(as_ms(body["as_of"]) / 1000, dt.timezone.utc)
    aware = {**body, "as_of": as_of}
    assert bundles["propensity"].score(aware) == bundles["propensity"].score(body)
    with pytest.raises(leadscore.RequestError, match="no timezone"):
        bundles["propensity"].score({**body, "as_of": as_of.replace(tzinfo=None)})


@pytest.mark.parametrize("query,kwargs", [("", {}), ("?capacity_per_week=40", {"capacity_per_week": 40.0})])
def test_capacity_table_equals_the_servers(
    bundles: dict[str, leadscore.Bundle], query: str, kwargs: dict
) -> None:
    served = get(f"/v1/thresholds/propensity{query}")
    mine = bundles["propensity"].capacity(**kwargs)
    assert mine == served
    assert mine["thresholds"] == bundles["propensity"].thresholds
    held = bundles["propensity"].held_out()
    assert held is not None and held.num_rows == mine["held_out"]["rows"]


def test_errors_of_loading_name_the_file() -> None:
    missing = WORK / "registry" / "propensity" / "no-such-version"
    with pytest.raises(leadscore.BundleError, match="no-such-version"):
        leadscore.Bundle(missing)
    spec = WORK / "no-such-spec.toml"
    with pytest.raises(leadscore.DataError) as caught:
        leadscore.feature_table(spec)
    # The command line's message for the same fault.
    cli = subprocess.run(
        [os.environ["LEADSCORE_TRAIN_BIN"], "features", "--spec", str(spec), "--out", str(WORK / "x.parquet")],
        capture_output=True,
        text=True,
    )
    assert cli.returncode != 0
    assert str(caught.value) in cli.stderr.replace("\n\nCaused by:\n    ", ": ")
    assert str(spec) in str(caught.value)


def test_onnxruntime_comes_from_the_onnxruntime_wheel() -> None:
    library = leadscore.onnxruntime_library()
    assert library is not None and "site-packages" in library and os.path.isfile(library)


def test_partitions_built_apart_equal_the_whole_table() -> None:
    # A distributed build's workers: the leads split three ways by entity (every event and
    # outcome with its lead), each part's table built with the whole history's plan and
    # cutoffs; together, sorted alike, they are the whole table bit for bit.
    whole = leadscore.feature_table(WORK / "leads" / "spec.toml")
    files = {name: pl.read_parquet(WORK / "leads" / name)
             for name in ("leads.parquet", "events.parquet", "conversions.parquet")}
    ids = sorted(files["leads.parquet"]["lead_id"].to_list())
    parts = []
    for k in range(3):
        folder = WORK / "partitions" / f"part-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in files.items():
            frame.filter(pl.col("lead_id").is_in(ids[k::3])).write_parquet(folder / name)
        part = leadscore.partition_table(WORK / "leads" / "spec.toml", whole.plan,
                                         whole.cutoffs, data_dir=folder)
        assert part.schema.equals(whole.table.schema)
        parts.append(pl.from_arrow(part))
    order = ["entity_id", "cutoff"]
    together = pl.concat(parts).sort(order)
    expected = pl.from_arrow(whole.table).sort(order)
    assert together.columns == expected.columns
    assert together.height == expected.height > 0
    for name in expected.columns:
        ours, theirs = together[name].to_numpy(), expected[name].to_numpy()
        if ours.dtype.kind == "f":
            assert np.array_equal(ours, theirs, equal_nan=True), name
        else:
            assert (ours == theirs).all(), name
    print(f"3 partitions: {together.height} rows equal the whole table's")
    with pytest.raises(leadscore.DataError, match="cutoffs"):
        leadscore.partition_table(WORK / "leads" / "spec.toml", whole.plan, {"weekly": 1})
