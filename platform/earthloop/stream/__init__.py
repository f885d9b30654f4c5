"""Streaming chips from COGs into training with Ray Data."""

from earthloop.stream.dataset import chip_dataset, load_index, seco_dataset
from earthloop.stream.reader import plan_groups, read_group, read_location

__all__ = [
    "chip_dataset",
    "load_index",
    "plan_groups",
    "read_group",
    "read_location",
    "seco_dataset",
]
