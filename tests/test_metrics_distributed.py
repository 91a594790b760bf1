"""all_reduce across a real 2-process gloo group equals one process seeing all the data."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bidense.metrics import DepthMetric, RoadMetric, SaliencyMetric, SegmentationMetric


def _data(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Four images per task; rank r takes images 2r and 2r + 1."""
    rng = np.random.default_rng(seed)
    seg_gt = rng.integers(0, 4, (4, 6, 7))
    seg_gt[:, 0] = 255
    depth_gt = rng.uniform(0.5, 9.0, (4, 6, 7))
    sal_gt = rng.uniform(size=(4, 6, 7)) < 0.4
    road_gt = (rng.uniform(size=(4, 6, 7)) < 0.5).astype(np.int64)
    return {
        "seg": (rng.integers(0, 4, (4, 6, 7)), seg_gt),
        "depth": (depth_gt * rng.uniform(0.8, 1.3, depth_gt.shape), depth_gt),
        "sal": (rng.uniform(size=(4, 6, 7)), sal_gt),
        "road": (rng.uniform(size=(4, 6, 7)), road_gt),
    }


def _metrics() -> dict:
    return {
        "seg": SegmentationMetric(4),
        "depth": DepthMetric(0.1, 10.0),
        "sal": SaliencyMetric(),
        "road": RoadMetric(),
    }


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = _data()
        metrics = _metrics()
        for name, m in metrics.items():
            pred, gt = data[name]
            m.update(pred[2 * rank : 2 * rank + 2], gt[2 * rank : 2 * rank + 2])
            m.all_reduce()
            m.sync()  # a second sync must not count the other rank twice
        refused = False
        try:
            metrics["road"].update(*(a[:1] for a in data["road"]))
        except RuntimeError:
            refused = True
        results = {name: m.compute() for name, m in metrics.items()}
        results["refused"] = refused
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, nan_ok=True), k


def test_all_reduce_two_process_gloo(tmp_path):
    out = tmp_path / "results.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    assert got["refused"] is True
    data = _data()
    for name, m in _metrics().items():
        m.update(*data[name])
        _assert_same(got[name], m.compute())


def test_all_reduce_is_noop_without_process_group():
    assert not dist.is_initialized()
    data = _data()
    m = SegmentationMetric(4)
    m.update(*data["seg"])
    before = m.compute()
    m.all_reduce()
    _assert_same(m.compute(), before)
    m.update(*data["seg"])  # still accepts updates: nothing was synced
    assert int(m.confusion_matrix.sum()) == 2 * int((data["seg"][1] != 255).sum())


def test_merge_simulates_sum_and_state_dict_roundtrip():
    data = _data(1)
    for name in ("seg", "depth", "sal", "road"):
        whole, r0, r1 = _metrics()[name], _metrics()[name], _metrics()[name]
        pred, gt = data[name]
        whole.update(pred, gt)
        r0.update(pred[:2], gt[:2])
        r1.update(pred[2:], gt[2:])
        restored = _metrics()[name]
        restored.load_state_dict(r0.state_dict())
        _assert_same(restored.merge(r1).compute(), whole.compute())
    with pytest.raises(TypeError, match="cannot merge"):
        RoadMetric().merge(SaliencyMetric())
