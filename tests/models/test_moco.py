"""MoCo pieces in one process: queue FIFO with wrap-around, momentum update, fallbacks."""

import torch
from earthloop.models.moco import (
    MemoryBankQueue,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    copy_frozen,
    momentum_update,
)
from torch import nn


def test_queue_starts_normalised_and_enqueues_at_pointer() -> None:
    q = MemoryBankQueue(size=5, dim=2)
    torch.testing.assert_close(q.queue.norm(dim=1), torch.ones(5))
    keys = torch.arange(6.0).view(3, 2)
    q.enqueue(keys)
    assert int(q.ptr) == 3
    assert torch.equal(q.queue[:3], keys)


def test_queue_wraps_around() -> None:
    q = MemoryBankQueue(size=5, dim=1)
    q.enqueue(torch.tensor([[1.0], [2.0], [3.0]]))
    q.enqueue(torch.tensor([[4.0], [5.0], [6.0]]))
    # 4 and 5 fill slots 3..4, 6 wraps to slot 0 (overwriting the oldest, 1)
    assert q.queue.flatten().tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    assert int(q.ptr) == 1
    q.enqueue(torch.arange(10.0, 17.0).view(7, 1))  # larger than the queue: keep the newest 5
    assert q.queue.flatten().tolist() == [12.0, 13.0, 14.0, 15.0, 16.0]
    assert int(q.ptr) == 0


def test_queue_is_checkpointed_and_negatives_are_a_copy() -> None:
    q = MemoryBankQueue(4, 3)
    q.enqueue(torch.ones(2, 3))
    state = q.state_dict()
    assert set(state) == {"queue", "ptr"}
    r = MemoryBankQueue(4, 3)
    r.load_state_dict(state)
    assert torch.equal(r.queue, q.queue) and int(r.ptr) == 2
    neg = q.negatives()
    q.enqueue(torch.zeros(2, 3))
    assert not torch.equal(neg, q.queue)


def test_momentum_update_is_ema_of_parameters_only() -> None:
    online = nn.BatchNorm1d(3)
    target = copy_frozen(online)
    assert online.running_mean is not None and target.running_mean is not None
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.fill_(1.0)
        target.weight.fill_(0.0)
        online.running_mean.fill_(5.0)
    momentum_update(online, target, 0.9)
    torch.testing.assert_close(target.weight, torch.full((3,), 0.1))
    assert torch.equal(target.running_mean, torch.zeros(3))  # buffers are the key encoder's own


def test_single_process_fallbacks() -> None:
    x = torch.randn(6, 4, requires_grad=True)
    gathered = concat_all_gather(x)
    assert torch.equal(gathered, x) and not gathered.requires_grad
    g = torch.Generator().manual_seed(0)
    shuffled, idx = batch_shuffle(x.detach(), g)
    assert not torch.equal(shuffled, x.detach())
    assert torch.equal(batch_unshuffle(shuffled * 2, idx), x.detach() * 2)


def test_enqueue_never_reads_the_pointer_back_to_the_host(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Reading ``ptr`` with int() was a device sync per enqueue (three per SeCo step on a GPU)."""
    q = MemoryBankQueue(size=5, dim=1)

    def refuse(*_: object) -> None:
        raise AssertionError("enqueue read a tensor back to the host")

    for name in ("__int__", "__index__", "item", "tolist", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    q.enqueue(torch.tensor([[1.0], [2.0], [3.0]]))
    q.enqueue(torch.tensor([[4.0], [5.0], [6.0]]))  # wraps around
    monkeypatch.undo()
    assert q.queue.flatten().tolist() == [6.0, 2.0, 3.0, 4.0, 5.0] and int(q.ptr) == 1
