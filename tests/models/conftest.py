"""Keep model tests to one intra-op thread: the tensors are tiny, and on a shared 2-core machine
extra OpenMP threads only spin against other jobs. The previous setting is restored afterwards."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
