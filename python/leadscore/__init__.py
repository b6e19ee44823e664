"""leadscore for data scientists: the server's features, scores and reasons, and the
training's point-in-time feature tables, from Python.

Everything here calls the Rust code the server and ``leadscore-train`` run (the native module
``leadscore._native``), so an answer here is the server's answer:

>>> import leadscore
>>> bundle = leadscore.Bundle("registry/propensity/20261201T020000Z")
>>> lead = {"profile": {"country": "DE"}, "created_at": "2026-11-30T09:00:00Z",
...         "events": [{"ts": "2026-11-30T09:05:00Z", "type": "page_view"}]}
>>> bundle.score(lead)["grade"]  # doctest: +SKIP
'B'
>>> bundle.features(lead)  # doctest: +SKIP
{'profile.country=DE': 1.0, ...}
>>> table, plan, cutoffs = leadscore.feature_table("data/spec.toml")  # doctest: +SKIP

An entity is a mapping shaped like the body of the server's ``POST /v1/score/{model}``
(``profile``, ``created_at``, ``events``, ``as_of``, or ``row`` for tabular models). Times may
be RFC 3339 strings, integer milliseconds since 1970, or timezone-aware ``datetime`` objects.
Errors are the exceptions of :mod:`leadscore.errors`, with the server's and the command line's
messages. :mod:`leadscore.spark` builds the feature table of a history too large for one
machine on Spark, through the same code.
"""

from __future__ import annotations

import datetime as _dt
import io as _io
import json as _json
import os as _os
from collections.abc import Mapping as _Mapping
from importlib import util as _importlib_util
from typing import Any, NamedTuple, Union

from . import _native
from .errors import BundleError, DataError, LeadscoreError, RequestError

__all__ = [
    "Bundle",
    "BundleError",
    "DataError",
    "FeatureTable",
    "LeadscoreError",
    "RequestError",
    "feature_table",
    "partition_table",
    "onnxruntime_library",
]

Time = Union[str, int, _dt.datetime]
"""An RFC 3339 string, integer milliseconds since 1970, or a timezone-aware datetime."""


def onnxruntime_library() -> str | None:
    """The ONNX Runtime library scoring loads: ``$LEADSCORE_ORT_LIB`` when set, else the one
    inside the installed ``onnxruntime`` wheel (a dependency of this package), else None."""
    configured = _os.environ.get(_native.ONNXRUNTIME_ENV)
    if configured:
        return configured
    spec = _importlib_util.find_spec("onnxruntime")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = _os.path.join(folder, "capi", _native.onnxruntime_file())
        if _os.path.isfile(candidate):
            return candidate
    return None


def _use_onnxruntime() -> None:
    """Points the native module at the wheel's ONNX Runtime before the first bundle loads."""
    if not _os.environ.get(_native.ONNXRUNTIME_ENV):
        found = onnxruntime_library()
        if found:
            _os.environ[_native.ONNXRUNTIME_ENV] = found


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise RequestError(
                f"{value!r} has no timezone: give an aware datetime, or an RFC 3339 string"
            )
        return value.isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy and pandas scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON: {value!r}")


def _dumps(value: Any) -> str:
    try:
        return _json.dumps(value, default=_json_default, allow_nan=True)
    except TypeError as error:
        raise RequestError(str(error)) from None


def _time_json(now: Time | None) -> str | None:
    return None if now is None else _dumps(now)


class Bundle:
    """A model bundle (a registry's ``<model>/<version>`` folder) loaded as the server loads
    it: the same checks of an entity, features, ONNX Runtime session, thresholds and reasons.

    ``thresholds_file`` is a sales-ops thresholds file (``thresholds.toml``); its section for
    this model is in force over the bundle's own thresholds, as on the server.
    """

    def __init__(
        self, path: str | _os.PathLike[str], thresholds_file: str | _os.PathLike[str] | None = None
    ) -> None:
        _use_onnxruntime()
        self._native = _native.Bundle(
            _os.fspath(path), None if thresholds_file is None else _os.fspath(thresholds_file)
        )
        self._manifest: dict[str, Any] | None = None

    @classmethod
    def served(
        cls,
        registry: str | _os.PathLike[str],
        model: str = "propensity",
        thresholds_file: str | _os.PathLike[str] | None = None,
    ) -> "Bundle":
        """The version of ``model`` a server on ``registry`` serves: the live one (``LIVE``),
        else, in a registry never promoted, the newest."""
        return cls(_native.served_bundle(_os.fspath(registry), model), thresholds_file)

    def __repr__(self) -> str:
        return f"Bundle({self.name}/{self.version}, {self.task})"

    @property
    def path(self) -> str:
        """The bundle's folder."""
        return str(self._native.path)

    @property
    def name(self) -> str:
        """The model's name: ``propensity``, ``churn`` or a segment model's name."""
        return self._native.name

    @property
    def version(self) -> str:
        """The bundle's version (its folder's name)."""
        return self._native.version

    @property
    def task(self) -> str:
        """``propensity`` or ``churn``."""
        return self._native.task

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest: dataset, feature plan, metrics, thresholds, training parameters."""
        if self._manifest is None:
            self._manifest = _json.loads(self._native.manifest_json())
        return self._manifest

    @property
    def thresholds(self) -> dict[str, Any]:
        """The thresholds in force: the sales-ready cut-off and the grade bands."""
        return _json.loads(self._native.thresholds_json())

    @property
    def feature_names(self) -> list[str]:
        """The model's feature columns, in order."""
        return self._native.feature_names()

    def features(self, entity: _Mapping[str, Any], *, now: Time | None = None) -> dict[str, float]:
        """The entity's feature vector, by feature name, at its ``as_of`` (else ``now``, else
        the clock): what the server computes before scoring it."""
        values = self._native.features(_dumps(entity), _time_json(now))
        return dict(zip(self._native.feature_names(), values))

    def score(
        self,
        entity: _Mapping[str, Any],
        *,
        reasons: bool = True,
        max_reasons: int | None = None,
        now: Time | None = None,
    ) -> dict[str, Any]:
        """The server's answer to ``POST /v1/score/{model}`` with ``entity`` as the body:
        ``model``, ``probability`` (calibrated), ``score`` (0-100), ``grade``, ``sales_ready``
        and, with ``reasons``, the top ``max_reasons`` (default 3) groups of each sign with
        their exact contributions to the log-odds."""
        answer = self._native.score_json(_dumps(entity), reasons, max_reasons, _time_json(now))
        return _json.loads(answer)

    def capacity(
        self, capacity_per_week: float | None = None, volume_per_week: float | None = None
    ) -> dict[str, Any]:
        """What the thresholds in force mean for a sales team's week on the held-out
        predictions (the server's ``GET /v1/thresholds/{model}``): leads a week, precision and
        share of conversions for the sales-ready cut-off and each grade; with
        ``capacity_per_week``, also the cut-off that flags that many leads a week.
        ``volume_per_week`` defaults to what the held-out rows stand for."""
        return _json.loads(self._native.capacity_json(capacity_per_week, volume_per_week))

    def held_out(self) -> "pyarrow.Table | None":  # noqa: F821
        """The held-out predictions the bundle kept (``holdout.csv``): one row per validation
        row with its calibrated probability, label and profile, as a pyarrow table."""
        path = self._native.holdout_path()
        if path is None:
            return None
        import pyarrow.csv

        return pyarrow.csv.read_csv(str(path))


class FeatureTable(NamedTuple):
    """A dataset's point-in-time feature table and the feature plan fitted on it."""

    table: "pyarrow.Table"  # noqa: F821
    """One row per entity and cut-off: ``entity_id``, ``cutoff``, ``label``, then the features
    (float32), exactly the columns and values of ``leadscore-train features``."""
    plan: dict[str, Any]
    """The fitted feature plan (vocabularies, windows, scales) as the manifest stores it."""
    cutoffs: Any
    """When rows are taken: ``{"calendar": [ms, ...]}``, ``{"after_creation_ms": ms}`` or
    ``"tabular"``."""

    def to_polars(self) -> "polars.DataFrame":  # noqa: F821
        """The table as a polars DataFrame (needs the ``polars`` extra)."""
        import polars

        return polars.from_arrow(self.table)


def feature_table(
    spec: str | _os.PathLike[str], data_dir: str | _os.PathLike[str] | None = None
) -> FeatureTable:
    """Loads the dataset of ``spec`` (a dataset spec TOML; relative paths against
    ``data_dir`` when given), fits the feature plan and builds the point-in-time feature
    table: the Parquet file ``leadscore-train features`` writes, read by pyarrow."""
    import pyarrow.parquet

    parquet, plan, cutoffs = _native.feature_table(
        _os.fspath(spec), None if data_dir is None else _os.fspath(data_dir)
    )
    table = pyarrow.parquet.read_table(_io.BytesIO(parquet))
    return FeatureTable(table, _json.loads(plan), _json.loads(cutoffs))


def partition_table(
    spec: str | _os.PathLike[str],
    plan: dict[str, Any],
    cutoffs: Any,
    data_dir: str | _os.PathLike[str] | None = None,
) -> "pyarrow.Table":  # noqa: F821
    """The feature table of a part of a larger history (some of its entities, with all their
    events and outcomes, in the files of ``spec`` read from ``data_dir``) with the larger
    history's fitted ``plan`` and ``cutoffs`` (from :func:`feature_table` or fitted
    elsewhere): that history's rows of those entities, bit for bit. What each worker of a
    distributed build runs."""
    import pyarrow.parquet

    parquet = _native.partition_table(
        _os.fspath(spec),
        _json.dumps(plan),
        _json.dumps(cutoffs),
        None if data_dir is None else _os.fspath(data_dir),
    )
    return pyarrow.parquet.read_table(_io.BytesIO(parquet))
