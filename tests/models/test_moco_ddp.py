"""Real 2-process DDP (gloo on CPU): all-gather, shuffle-BN across ranks, SeCo queue sync."""

import datetime
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        from earthloop.models.backbones import build_backbone
        from earthloop.models.methods.seco import SeCo
        from earthloop.models.moco import batch_shuffle, batch_unshuffle, concat_all_gather

        x = (torch.arange(4.0) + 10 * rank).view(4, 1)  # rank 0: 0..3, rank 1: 10..13
        gathered = concat_all_gather(x)
        uneven = concat_all_gather(x[: 4 - 2 * rank])  # rank 1 contributes only 2 rows
        g = torch.Generator().manual_seed(0)
        shuffled, idx = batch_shuffle(x, g)
        restored = batch_unshuffle(shuffled * 2 + 1, idx)  # "encode" then unshuffle
        uneven_shuffled, uidx = batch_shuffle(x[: 4 - 2 * rank], g)
        uneven_restored = batch_unshuffle(uneven_shuffled, uidx)

        torch.manual_seed(0)  # identical initial model (and queue) on both ranks, as DDP ensures
        model = SeCo(build_backbone("resnet_tiny", 2), feature_dim=8, queue_size=16, seed=rank)
        torch.manual_seed(1 + rank)  # different data per rank
        out = model({"images": torch.randn(2, 3, 2, 32, 32)})
        out["loss"].backward()
        queue = model.subspace_queues()[0]
        torch.save(
            {
                "x": x,
                "gathered": gathered,
                "uneven": uneven,
                "shuffled": shuffled,
                "restored": restored,
                "uneven_restored": uneven_restored,
                "queue": queue.queue.clone(),
                "ptr": int(queue.ptr),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_gather_and_shuffle_bn_across_two_ranks(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(WORLD)]
    expected = torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13]).view(8, 1)
    for i in range(WORLD):
        assert torch.equal(r[i]["gathered"], expected)  # keys from both ranks, in rank order
        assert r[i]["uneven"].flatten().tolist() == [0.0, 1, 2, 3, 10, 11]
        assert torch.equal(r[i]["restored"], r[i]["x"] * 2 + 1)  # unshuffle restores order
        assert torch.equal(r[i]["uneven_restored"], r[i]["x"][: 4 - 2 * i])
    # the shuffled local batches partition the global batch and mix ranks
    all_shuffled = torch.cat([r[0]["shuffled"], r[1]["shuffled"]]).flatten().sort().values
    assert torch.equal(all_shuffled, expected.flatten())
    assert any(v >= 10 for v in r[0]["shuffled"].flatten().tolist())
    assert any(v < 10 for v in r[1]["shuffled"].flatten().tolist())
    # SeCo enqueued the keys of both ranks (2 x 2) and the queues are identical everywhere
    assert r[0]["ptr"] == r[1]["ptr"] == 4
    assert torch.equal(r[0]["queue"], r[1]["queue"])
