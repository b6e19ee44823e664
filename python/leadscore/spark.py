"""Point-in-time feature tables on Spark, through the same Rust kernel as everything else.

A history too large for one machine is given as Spark DataFrames, one per section of an
event-form dataset spec (``entities``, ``events``, ``outcomes``, with the spec's column
names). :func:`feature_table` then

1. tags each section's rows and groups every entity's rows into one part
   (``repartition`` by the entity id, as the loader reads ids: ``13085.0`` is ``13085``);
2. summarises each part with ``mapInArrow``: the part's rows are written as Parquet files and
   read by the Rust loader every other path uses, which reports counts, data bounds, each
   profile column's levels and kind evidence, event types and channels;
3. adds the summaries up with a Spark ``groupBy`` and fits the plan and the cutoffs from the
   sums in Rust (what one load of the whole history would have fitted);
4. builds each part's rows with that plan and those cutoffs (``mapInArrow`` again), the rows
   ``leadscore-train features`` writes for those entities, bit for bit.

The result's :meth:`SparkFeatureTable.write` writes a folder ``leadscore-train train
--prepared`` trains from. The workers import this package: in local mode set
``PYSPARK_PYTHON`` to this interpreter; on a cluster install the wheel on the executors.
Tested with PySpark 4.3.0 and pyarrow; it uses only ``unionByName(allowMissingColumns)``,
``repartition``, ``mapInArrow`` and ``groupBy``, which Spark 3.5 has too (untested there).
pandas is needed only because PySpark's Arrow functions ask for it.
"""

from __future__ import annotations

import json as _json
import math
import os
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _native
from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

_SECTION = "__leadscore_section"
_KEY = "__leadscore_key"
#: Entities per part when the caller does not say how many parts.
ENTITIES_PER_PART = 25_000
_SUMMARY_SCHEMA = "kind string, name string, level string, count long, entity string"


def _column_name(section: int, name: str) -> str:
    return f"s{section}__{name}"


@dataclass(frozen=True)
class _Layout:
    """What a worker needs to rebuild a part's files: the spec's text and, per section,
    its index and columns."""

    spec_text: str
    sections: tuple[tuple[int, str, tuple[str, ...]], ...]

    def write_part(self, batches: Iterator[pa.RecordBatch], folder: str) -> dict[str, str] | None:
        """Writes the part's rows of each section as ``<section>.parquet`` in ``folder``;
        ``None`` when the part has no rows."""
        batches = list(batches)
        if not batches or sum(b.num_rows for b in batches) == 0:
            return None
        table = pa.Table.from_batches(batches)
        files = {}
        for index, section, columns in self.sections:
            rows = table.filter(pc.equal(table[_SECTION], index))
            rows = rows.select([_column_name(index, c) for c in columns])
            rows = rows.rename_columns(list(columns))
            path = os.path.join(folder, f"{section}.parquet")
            pq.write_table(rows, path)
            files[section] = path
        Path(folder, "spec.toml").write_text(self.spec_text)
        return files


def _summaries(layout: _Layout, categorical: list[str]):
    def summarise(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with tempfile.TemporaryDirectory(prefix="leadscore-part-") as folder:
            files = layout.write_part(batches, folder)
            if files is None:
                return
            data = _native.part_summary(os.path.join(folder, "spec.toml"), files, categorical)
        yield from pq.read_table(BytesIO(data)).to_batches()

    return summarise


def _tables(layout: _Layout, plan_json: str, cutoffs_json: str, schema: pa.Schema):
    def build(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with tempfile.TemporaryDirectory(prefix="leadscore-part-") as folder:
            files = layout.write_part(batches, folder)
            if files is None:
                return
            data = _native.partition_table(
                os.path.join(folder, "spec.toml"), plan_json, cutoffs_json, files=files
            )
        table = pq.read_table(BytesIO(data))
        yield from table.cast(schema).to_batches()

    return build


def _entity_key(frame: "DataFrame", column: str):
    """The entity id as the loader reads it: integral numbers without a fraction, and text
    like ``13085.0`` likewise, so an entity's rows meet whatever each section's type."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    value = F.col(f"`{column}`")
    dtype = frame.schema[column].dataType
    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        integral = value == F.floor(value)
        return F.when(integral, value.cast("long").cast("string")).otherwise(value.cast("string"))
    if isinstance(dtype, T.StringType):
        return F.regexp_replace(value, r"^(-?[0-9]+)\.0+$", "$1")
    return value.cast("string")


@dataclass
class SparkFeatureTable:
    """A feature table built on Spark, and what training needs besides its rows."""

    #: ``entity_id``, ``cutoff`` (ms), ``label`` (byte), then one float column per feature.
    df: "DataFrame"
    #: ``entity_id``, ``field``, ``value``: each entity's categorical profile values.
    profiles: "DataFrame"
    #: The fitted plan, as JSON text (the ``feature_plan`` of a bundle's manifest).
    plan_json: str
    #: The cutoffs, as JSON text (``{"calendar": [ms, ...]}`` or ``{"after_creation_ms": ms}``).
    cutoffs_json: str
    #: What the plan was fitted from: every profile level with its count, event types, channels.
    inputs: dict[str, Any]
    entities: int
    events: int
    #: The loader's warnings (blank-like values read as missing...).
    warnings: list[str]
    spec_text: str
    _persisted: tuple["DataFrame", ...] = ()

    @property
    def plan(self) -> dict[str, Any]:
        return _json.loads(self.plan_json)

    @property
    def feature_names(self) -> list[str]:
        return list(self.plan["feature_names"])

    def write(self, path: str | os.PathLike[str], mode: str = "error") -> None:
        """Writes the folder ``leadscore-train train --prepared`` reads: ``features/`` and
        ``profiles/`` (Parquet, Spark's writer), ``prepared.json`` and ``spec.toml``.
        ``mode`` is Spark's save mode (``error``, ``overwrite``)."""
        folder = Path(path)
        self.df.write.mode(mode).parquet(str(folder / "features"))
        self.profiles.write.mode(mode).parquet(str(folder / "profiles"))
        manifest = {
            "format": 1,
            "plan": self.plan,
            "cutoffs": _json.loads(self.cutoffs_json),
            "inputs": self.inputs,
            "entities": self.entities,
            "events": self.events,
            "warnings": self.warnings,
        }
        (folder / "prepared.json").write_text(_json.dumps(manifest))
        (folder / "spec.toml").write_text(self.spec_text)

    def unpersist(self) -> None:
        """Frees the grouped rows and summaries Spark keeps for the build."""
        for frame in self._persisted:
            frame.unpersist()


def feature_table(
    spec: str | os.PathLike[str],
    frames: Mapping[str, "DataFrame"],
    *,
    partitions: int | None = None,
) -> SparkFeatureTable:
    """Builds the point-in-time feature table of the event-form dataset spec at ``spec``
    from Spark DataFrames, one per section the spec reads from a file (``entities``,
    ``events``, ``outcomes``; the spec's column names). ``partitions``: how many parts the
    entities are grouped into (default: one per 25,000 entities, or per 500,000 events when
    the spec derives its entities from the events; at least the default parallelism). Raises :class:`leadscore.errors.DataError` with the loader's message."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spec_path = Path(spec)
    spec_text = spec_path.read_text()
    sections = _native.part_sections(str(spec_path))
    wanted = [section for section, _ in sections]
    if sorted(frames) != sorted(wanted):
        raise DataError(
            f"{spec_path}: the spec reads {', '.join(wanted)} from files: give a DataFrame for "
            f"each (got {', '.join(sorted(frames)) or 'none'})",
            None,
        )
    tagged = []
    layout_sections = []
    for index, (section, id_column) in enumerate(sections):
        frame = frames[section]
        if id_column not in frame.columns:
            raise DataError(
                f"{section} DataFrame: no column `{id_column}` (the spec's entity id); it has "
                f"{', '.join(frame.columns)}",
                id_column,
            )
        layout_sections.append((index, section, tuple(frame.columns)))
        tagged.append(
            frame.select(
                F.lit(index).alias(_SECTION),
                _entity_key(frame, id_column).alias(_KEY),
                *[F.col(f"`{c}`").alias(_column_name(index, c)) for c in frame.columns],
            )
        )
    union = tagged[0]
    for frame in tagged[1:]:
        union = union.unionByName(frame, allowMissingColumns=True)
    spark = union.sparkSession
    if partitions is None:
        first = frames[wanted[0]]
        per_part = ENTITIES_PER_PART if wanted[0] == "entities" else 20 * ENTITIES_PER_PART
        partitions = max(spark.sparkContext.defaultParallelism, math.ceil(first.count() / per_part))
    grouped = union.repartition(partitions, _KEY).persist(StorageLevel.DISK_ONLY)
    layout = _Layout(spec_text, tuple(layout_sections))

    categorical: list[str] = []
    while True:
        summaries = grouped.mapInArrow(_summaries(layout, categorical), _SUMMARY_SCHEMA)
        summaries = summaries.persist(StorageLevel.MEMORY_AND_DISK)
        sums = (
            summaries.where(F.col("entity").isNull())
            .groupBy("kind", "name", "level")
            .agg(F.sum("count").alias("sum"), F.min("count").alias("min"), F.max("count").alias("max"))
            .collect()
        )
        rows = [[r["kind"], r["name"], r["level"], r["sum"], r["min"], r["max"]] for r in sums]
        merged = _json.loads(_native.merge_parts(str(spec_path), _json.dumps(rows)))
        if not merged["recount_as_categorical"]:
            break
        # Some part read a column as numbers that the whole reads as words: count again.
        summaries.unpersist()
        categorical = sorted(set(categorical) | set(merged["recount_as_categorical"]))

    plan = merged["plan"]
    plan_json = _json.dumps(plan)
    cutoffs_json = _json.dumps(merged["cutoffs"])
    fields = [
        p["name"] for p in plan["profile"] if isinstance(p["kind"], dict) and "categorical" in p["kind"]
    ]
    profiles = summaries.where(
        (F.col("kind") == "profile") & F.col("name").isin(fields)
    ).select(
        F.col("entity").alias("entity_id"), F.col("name").alias("field"), F.col("level").alias("value")
    )
    names = plan["feature_names"]
    arrow_schema = pa.schema(
        [("entity_id", pa.string()), ("cutoff", pa.int64()), ("label", pa.int8())]
        + [(name, pa.float32()) for name in names]
    )
    spark_schema = T.StructType(
        [
            T.StructField("entity_id", T.StringType()),
            T.StructField("cutoff", T.LongType()),
            T.StructField("label", T.ByteType()),
        ]
        + [T.StructField(name, T.FloatType()) for name in names]
    )
    table = grouped.mapInArrow(_tables(layout, plan_json, cutoffs_json, arrow_schema), spark_schema)
    return SparkFeatureTable(
        df=table,
        profiles=profiles,
        plan_json=plan_json,
        cutoffs_json=cutoffs_json,
        inputs=merged["inputs"],
        entities=merged["entities"],
        events=merged["events"],
        warnings=merged["warnings"],
        spec_text=spec_text,
        _persisted=(grouped, summaries),
    )
