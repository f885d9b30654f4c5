"""Streaming chips from COGs into training with Ray Data."""

from earthloop.stream.dataset import chip_dataset, load_index, seco_dataset
from earthloop.stream.index import count_index, rows_with_ids, sample_index, snapshot
from earthloop.stream.reader import plan_groups, read_group, read_group_arrays, read_location

__all__ = [
    "chip_dataset",
    "count_index",
    "load_index",
    "plan_groups",
    "read_group",
    "read_group_arrays",
    "read_location",
    "rows_with_ids",
    "sample_index",
    "seco_dataset",
    "snapshot",
]
