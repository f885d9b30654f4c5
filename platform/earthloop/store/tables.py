"""Every Delta table of the loop: its name, its key and its schema, in one place.

Why one module: a table is a contract between the stage that writes it and every stage (and
user notebook) that reads it. With the schemas next to their writers, a reader had to import a
pipeline to learn a column's type, and nothing stopped two writers from disagreeing. Writers
build rows with ``spec.schema``; readers and docs look here. The labeling loop's tables are
declared before their writers exist so that their shape is decided with the rest.

Storage knows nothing of training: this module names columns, it imports no stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A table under ``<workdir>/tables/<name>``, upserted by ``key`` (MERGE)."""

    name: str
    key: tuple[str, ...]
    schema: pa.Schema
    written_by: str

    def __post_init__(self) -> None:
        missing = [k for k in self.key if k not in self.schema.names]
        if missing:
            raise ValueError(f"table {self.name}: key columns {missing} are not in its schema")

    @property
    def keys(self) -> list[str]:
        """The key as the list ``merge_rows`` takes."""
        return list(self.key)


def table_uri(workdir: str, table: TableSpec | str) -> str:
    """URI of a table under a resolved workdir (a local path or an ``s3://`` prefix)."""
    name = table.name if isinstance(table, TableSpec) else table
    return f"{workdir.rstrip('/')}/tables/{name}"


CHIPS = TableSpec(
    "chips",
    ("chip_id",),
    pa.schema(
        [
            ("chip_id", pa.string()),
            ("location_id", pa.string()),
            ("item_id", pa.string()),
            ("tile", pa.string()),
            ("grid_key", pa.string()),
            ("datetime", _TS),
            ("season", pa.int32()),
            ("lon", pa.float64()),
            ("lat", pa.float64()),
            ("crs", pa.string()),
            ("minx", pa.float64()),
            ("miny", pa.float64()),
            ("maxx", pa.float64()),
            ("maxy", pa.float64()),
            ("col_off", pa.int32()),
            ("row_off", pa.int32()),
            ("chip_size", pa.int32()),
            ("bands", pa.list_(pa.string())),
            ("hrefs", pa.list_(pa.string())),
            ("scales", pa.list_(pa.float64())),
            ("offsets", pa.list_(pa.float64())),
            ("nodata", pa.float64()),
            ("scl_href", pa.string()),
            ("cloud_fraction", pa.float64()),
            ("shadow_fraction", pa.float64()),
            ("nodata_fraction", pa.float64()),
            ("scene_cloud_cover", pa.float64()),
            ("processing_baseline", pa.string()),
            ("split", pa.string()),
            ("row_hash", pa.string()),
        ]
    ),
    "ingest",
)

INGEST_RUNS = TableSpec(
    "ingest_runs",
    ("run_id",),
    pa.schema(
        [
            ("run_id", pa.string()),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("params", pa.string()),  # JSON; URLs redacted
            ("source", pa.string()),  # redacted
            ("cloud_filter_mode", pa.string()),
            ("scenes", pa.int64()),
            ("locations", pa.int64()),
            ("chips_written", pa.int64()),
            ("chips_inserted", pa.int64()),
            # chips found but not committed: the table kept conflicting with other writers
            ("chips_failed", pa.int64()),
            ("rejected", pa.string()),  # JSON {reason: count}
            ("chips_table_version", pa.int64()),
        ]
    ),
    "ingest",
)

PRETRAIN_RUNS = TableSpec(
    "pretrain_runs",
    ("run_name",),
    pa.schema(
        [
            ("run_name", pa.string()),
            ("method", pa.string()),
            ("backbone", pa.string()),
            ("bands", pa.list_(pa.string())),
            ("config", pa.string()),
            ("chips_table", pa.string()),
            ("chips_table_version", pa.int64()),
            ("checkpoint", pa.string()),
            ("backbone_path", pa.string()),
            ("final_step", pa.int64()),
            ("resumed_from_step", pa.int64()),
            ("world_size", pa.int64()),
            ("knn_accuracy", pa.float64()),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("status", pa.string()),  # running | finished | failed | interrupted
            ("error", pa.string()),
        ]
    ),
    "pretrain",
)

PRETRAIN_METRICS = TableSpec(
    "pretrain_metrics",
    ("run_name", "epoch"),
    pa.schema(
        [
            ("run_name", pa.string()),
            ("epoch", pa.int64()),
            ("step", pa.int64()),
            ("loss", pa.float64()),
            ("knn_accuracy", pa.float64()),
            ("embedding_std", pa.float64()),
            ("data_wait_fraction", pa.float64()),
            ("samples_per_s", pa.float64()),
            ("collapsed", pa.bool_()),
            ("metrics", pa.string()),  # JSON of every epoch metric
        ]
    ),
    "pretrain (rank 0)",
)

FINETUNE_TRIALS = TableSpec(
    "finetune_trials",
    ("sweep", "trial_id"),
    pa.schema(
        [
            ("sweep", pa.string()),
            ("trial_id", pa.string()),
            ("cell", pa.string()),
            ("task", pa.string()),
            ("init", pa.string()),
            ("init_kind", pa.string()),
            ("init_path", pa.string()),
            ("init_method", pa.string()),
            ("backbone", pa.string()),
            ("bands", pa.list_(pa.string())),
            ("mode", pa.string()),
            ("fraction", pa.float64()),
            ("seed", pa.int64()),
            ("lr", pa.float64()),
            ("weight_decay", pa.float64()),
            ("encoder_lr_mult", pa.float64()),
            ("n_labelled", pa.int64()),
            ("label_set_id", pa.string()),
            ("label_chip_ids", pa.list_(pa.string())),
            ("chips_table", pa.string()),
            ("chips_table_version", pa.int64()),
            ("labels_source", pa.string()),
            ("status", pa.string()),
            ("iterations", pa.int64()),
            ("steps", pa.int64()),
            ("stopped_early", pa.bool_()),
            ("metric", pa.string()),
            ("val_metric", pa.float64()),
            ("best_val_metric", pa.float64()),
            ("best_iteration", pa.int64()),
            ("test_metric", pa.float64()),
            ("test_miou", pa.float64()),
            ("test_accuracy", pa.float64()),
            ("test_macro_f1", pa.float64()),
            ("test_boundary_miou", pa.float64()),
            ("test_map", pa.float64()),
            ("test_per_class", pa.string()),
            ("selected", pa.bool_()),
            ("checkpoint", pa.string()),
            ("config", pa.string()),
            ("error", pa.string()),
            ("finished_at", _TS),
        ]
    ),
    "finetune",
)

# --- the labeling loop (issue 12): decided now, written by active/ and labeling/ -------------

TASK_MODELS = TableSpec(
    "task_models",
    ("model_version",),
    pa.schema(
        [
            ("model_version", pa.string()),
            ("task", pa.string()),  # segmentation | classification | multilabel
            ("arch", pa.string()),
            ("path", pa.string()),  # encoder + head + classes + bands + normalisation
            ("classes", pa.list_(pa.string())),
            ("bands", pa.list_(pa.string())),
            ("source_sweep", pa.string()),
            ("source_trial", pa.string()),
            ("checkpoint_step", pa.int64()),
            # what it was trained on: a version means nothing without its table
            ("chips_table", pa.string()),
            ("chips_table_version", pa.int64()),
            ("labels_source", pa.string()),
            ("labels_table_version", pa.int64()),
            ("val_metric", pa.float64()),
            ("created_at", _TS),
        ]
    ),
    "finetune (export)",
)

EMBEDDINGS = TableSpec(
    "embeddings",
    ("chip_id", "model_version"),
    pa.schema(
        [
            ("chip_id", pa.string()),
            ("model_version", pa.string()),
            ("location_id", pa.string()),
            ("season", pa.int32()),
            ("embedding", pa.list_(pa.float32())),  # pooled; fixed length per model version
            ("grid", pa.list_(pa.float32())),  # coarse per-pixel grid, flattened (C, h, w)
            ("grid_shape", pa.list_(pa.int32())),
            ("created_at", _TS),
        ]
    ),
    "embed job",
)

PREDICTIONS = TableSpec(
    "predictions",
    ("chip_id", "model_version"),
    pa.schema(
        [
            ("chip_id", pa.string()),
            ("model_version", pa.string()),
            ("mean_entropy", pa.float64()),
            ("mean_margin", pa.float64()),
            ("class_histogram", pa.list_(pa.float64())),  # predicted-class fractions
            ("mask_href", pa.string()),  # optional per-pixel prediction raster
            ("created_at", _TS),
        ]
    ),
    "embed job",
)

LABELS = TableSpec(
    "labels",
    ("chip_id", "annotation_id"),
    pa.schema(
        [
            ("chip_id", pa.string()),
            ("annotation_id", pa.string()),  # Label Studio annotation id (tasks ids are reused)
            ("project", pa.string()),
            ("kind", pa.string()),  # segmentation | classification
            ("mask_href", pa.string()),  # label raster for segmentation
            ("classes", pa.list_(pa.string())),  # scene labels for classification
            # fraction of the labelled pixels (or of the chosen scene labels) per class id:
            # what knn selection compares without opening every mask
            ("class_histogram", pa.list_(pa.float64())),
            ("annotator", pa.string()),
            ("lead_time_s", pa.float64()),
            ("al_round", pa.int64()),
            ("updated_at", _TS),
            ("row_hash", pa.string()),
        ]
    ),
    "labeling sync",
)

AL_ROUNDS = TableSpec(
    "al_rounds",
    ("round", "chip_id"),
    pa.schema(
        [
            ("round", pa.int64()),
            ("chip_id", pa.string()),
            ("strategy", pa.string()),
            ("score", pa.float64()),
            ("rank", pa.int64()),
            ("model_version", pa.string()),
            ("embeddings_table_version", pa.int64()),
            ("queued_at", _TS),
        ]
    ),
    "active learning",
)

ALL_TABLES: tuple[TableSpec, ...] = (
    CHIPS,
    INGEST_RUNS,
    PRETRAIN_RUNS,
    PRETRAIN_METRICS,
    FINETUNE_TRIALS,
    TASK_MODELS,
    EMBEDDINGS,
    PREDICTIONS,
    LABELS,
    AL_ROUNDS,
)
