"""Shared by the device-sync tests of pretraining and fine-tuning (tests/pretrain/,
tests/finetune/): a torch-function mode that records blocking host-to-device copies.

Why at the top of tests/: pytest puts tests/ on ``sys.path`` for every test (it holds the root
conftest), as for infra_helpers.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode


class BlockingUploads(TorchFunctionMode):
    """Records every host-to-device copy made without ``non_blocking=True``."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_):
            copy = func is torch.Tensor.copy_
            src = args[1] if copy else args[0]
            dst = args[0] if copy else out
            if (
                isinstance(src, torch.Tensor)
                and isinstance(dst, torch.Tensor)
                and src.device.type == "cpu"
                and dst.device.type != "cpu"
                and not kwargs.get("non_blocking", False)
            ):
                self.found.append("".join(traceback.format_stack(limit=6)[:-1]))
        return out
