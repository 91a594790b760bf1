"""The fast runtime pieces: threshold packing with DAB statistics, channel sums, bilinear resize,
fused epilogues, channels-last execution and ``bidense export CHECKPOINT --verify``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense.export import export, max_relative_error
from bidense.nn import BinaryConv2d, RPReLU
from bidense.runtime import kernels
from bidense.runtime.runner import Runtime


@pytest.mark.parametrize("tau_kind", ["none", "channel", "sample"])
@pytest.mark.parametrize("threads", [1, 2])
def test_pack_thresh_bits_ties_and_deviation(tau_kind, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 130)).astype(np.float32)
    tau = {"none": None, "channel": rng.standard_normal(130).astype(np.float32) * 0.1,
           "sample": rng.standard_normal((2, 130)).astype(np.float32) * 0.1}[tau_kind]
    t4 = np.zeros(130, np.float32) if tau is None else (tau if tau.ndim == 1 else
                                                         tau[:, None, None, :])
    x[0, 0, 0, :7] = np.broadcast_to(t4, x.shape)[0, 0, 0, :7]  # exact ties
    bits, ties, dev = kernels.pack_threshold(x, tau, absdev=True, threads=threads)
    # independent: sign bits of x - tau one channel at a time, LSB-first
    neg = (x.astype(np.float64) - t4) < 0
    for c in (0, 63, 64, 129):
        got = (bits[..., c // 64] >> np.uint64(c % 64)) & np.uint64(1)
        np.testing.assert_array_equal(got.astype(bool), neg[..., c])
    assert ties == int(np.count_nonzero(x.astype(np.float64) == t4)) >= 7
    ref = np.abs(x.astype(np.float64) - t4.astype(np.float64)).sum(axis=(1, 2))
    np.testing.assert_allclose(dev, ref, rtol=1e-12)
    assert int(bits[..., -1].max() >> np.uint64(2)) == 0  # channels 130..191 stay zero


def test_chan_sum_and_thread_independence():
    x = np.random.default_rng(1).standard_normal((2, 33, 17, 70)).astype(np.float32)
    s1 = kernels.channel_sum(x, threads=1)
    s2 = kernels.channel_sum(x, threads=2)
    np.testing.assert_array_equal(s1, s2)  # fixed chunk order, not a thread reduction
    np.testing.assert_allclose(s1, x.astype(np.float64).sum(axis=(1, 2)), rtol=1e-12)
    _, _, d1 = kernels.pack_threshold(x, None, absdev=True, threads=1)
    _, _, d2 = kernels.pack_threshold(x, None, absdev=True, threads=2)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("size", [(13, 21), (4, 4), (1, 7)])
def test_runtime_bilinear_matches_torch(tmp_path, align, size):
    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=size, mode="bilinear", align_corners=align)

    x = torch.randn(2, 5, 6, 9)
    export(Up(), tmp_path / "u.bdn", x)
    got = Runtime(tmp_path / "u.bdn", threads=2)(x.numpy())
    ref = F.interpolate(x.double(), size=size, mode="bilinear", align_corners=align).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def _react_block(c_in: int, c_out: int) -> nn.Module:
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = BinaryConv2d(c_in, c_out, 3, padding=1, act_binarizer="rsign",
                                     weight_binarizer="mean_abs")
            self.bn = nn.BatchNorm2d(c_out)
            self.act = RPReLU(c_out)

        def forward(self, x):
            return self.act(self.bn(self.conv(x)) + x)

    return Block()


def test_fused_epilogue_matches_float64_reference(tmp_path):
    torch.manual_seed(7)
    block = _react_block(70, 70)
    with torch.no_grad():
        block.conv.act_binarizer.threshold.normal_(0, 0.1)
        block.bn.running_mean.normal_(0, 0.1)
        block.bn.running_var.uniform_(0.5, 2)
        block.act.gamma.normal_(0, 0.1)
        block.act.beta.uniform_(0.1, 0.4)
        if block.act.zeta is not None:
            block.act.zeta.normal_(0, 0.1)
    block.eval()
    x = torch.randn(1, 70, 9, 11)
    export(block, tmp_path / "b.bdn", x)
    rt = Runtime(tmp_path / "b.bdn", threads=2)
    got = rt(x.numpy())
    rep = rt.report()
    assert len(rep) == 1 and rep[0]["fused"] == ["add", "rprelu"]
    assert rep[0]["path"] == "packed"
    # independent float64 computation of the block
    c = block.conv
    thr = c.act_binarizer.threshold.detach().double().view(1, -1, 1, 1)
    s = torch.sign(x.double() - thr)
    w = c.weight_binarizer(c.weight.detach()).double()
    d = F.conv2d(s, w, padding=1)
    bn = block.bn
    z = (d - bn.running_mean.double().view(1, -1, 1, 1)) / torch.sqrt(
        bn.running_var.double().view(1, -1, 1, 1) + bn.eps) * bn.weight.double().view(
        1, -1, 1, 1) + bn.bias.double().view(1, -1, 1, 1)
    y = z + x.double()
    a = block.act
    t = y - a.gamma.detach().double().view(1, -1, 1, 1)
    t = torch.where(t > 0, t, a.beta.detach().double().view(1, -1, 1, 1) * t)
    if a.zeta is not None:
        t = t + a.zeta.detach().double().view(1, -1, 1, 1)
    assert max_relative_error(got, t.detach().numpy()) < 1e-5


def test_channels_last_inside_contiguous_outside(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 1)).eval()
    x = torch.randn(1, 3, 10, 10)
    export(model, tmp_path / "m.bdn", x)
    rt = Runtime(tmp_path / "m.bdn")
    rt._keep = True
    got = rt(x.numpy())
    assert got.flags.c_contiguous and got.shape == (1, 8, 5, 5)
    inner = [v for k, v in rt._env.items() if k != "input" and np.ndim(v) == 4]
    assert inner and all(v.transpose(0, 2, 3, 1).flags.c_contiguous for v in inner)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=0, atol=1e-5)


def test_export_checkpoint_verify(tmp_path, monkeypatch, capsys):
    from bidense.cli import main as cli_main
    from bidense.engine.config import load_config
    from bidense.engine.trainer import train

    monkeypatch.setenv("BIDENSE_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    tiny = ["name=tiny", "device=cpu", "model.name=upernet_convnext_micro",
            "model.method=bidense", "data.dataset=synthetic", "data.batch_size=4",
            "data.kwargs={size: [32, 32]}", "data.train_kwargs={num_images: 8}",
            "data.val_kwargs={num_images: 4}", "train.epochs=1", "train.lr=0.002",
            "train.progress=off"]
    train(load_config(overrides=tiny), run_dir=tmp_path / "run", quiet=True)
    ckpt = tmp_path / "run" / "last.pt"
    assert ckpt.is_file()
    assert cli_main(["export", str(ckpt), "-o", str(tmp_path / "m.bdn"), "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = next(line for line in lines if line.startswith("total"))
    assert os.path.getsize(tmp_path / "m.bdn") == int(total.split()[-1].replace(",", ""))
    (verified,) = [line for line in lines if line.startswith("verify: max relative error")]
    assert float(verified.split("=")[-1]) < 1e-4


@pytest.mark.parametrize("m,k,o", [(1, 1, 1), (7, 5, 3), (130, 33, 17), (200, 64, 19),
                                   (70, 20, 40), (64, 9, 64)])
def test_fp_gemm_matches_float64_and_is_thread_independent(m, k, o):
    rng = np.random.default_rng(m * 1000 + o)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, o)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, o).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    ref = a.astype(np.float64) @ w.astype(np.float64)
    # float32 accumulation over k terms: error bounded by about k ulps of the absolute sum
    tol = 4 * k * np.finfo(np.float32).eps * (np.abs(a).astype(np.float64) @ np.abs(w))
    variants = list(range(kernels.gemm_kind() + 1)) or [-1]  # every code this CPU can run
    for v in variants:
        plain = kernels.fp_gemm(a, w, threads=1, variant=v)
        assert plain.dtype == np.float32 and plain.shape == (m, o)
        assert np.all(np.abs(plain - ref) <= tol + 1e-30)
        y1 = kernels.fp_gemm(a, w, scale, bias, threads=1, variant=v)
        # the epilogue is two float32 roundings after the sum: (sum * scale) + bias
        np.testing.assert_array_equal(y1, (plain * scale) + bias)
        for t in (2, 3):
            np.testing.assert_array_equal(
                kernels.fp_gemm(a, w, scale, bias, threads=t, variant=v), y1)
    if kernels.gemm_kind() >= 0:
        with pytest.raises(ValueError, match="cannot run here"):
            kernels.fp_gemm(a, w, variant=3)
    with pytest.raises(ValueError, match="do not match"):
        kernels.fp_gemm(a, w[:-1] if k > 1 else np.ones((2, o), np.float32))


@pytest.mark.parametrize("cin,cout", [(8, 24), (24, 8), (10, 23), (12, 5), (7, 3), (70, 70)])
@pytest.mark.parametrize("grouping", ["strided", "contiguous"])
def test_cfb_nhwc_matches_hand_computation(cin, cout, grouping):
    x = np.random.default_rng(cin * 100 + cout).standard_normal((2, 3, 4, cin)).astype(
        np.float32)
    got = kernels.cfb_nhwc(x, cout, grouping, threads=1)
    assert got is not None and got.shape == (2, 3, 4, cout) and got.dtype == np.float32
    # independent: the CFB rule channel by channel in float64 (Yin et al., arXiv 2411.10346)
    x64 = x.astype(np.float64)
    r, m = divmod(cout, cin)
    want = [x64[..., c] for _ in range(r) for c in range(cin)]
    if m:
        g = cin // m
        for j in range(m - 1):
            idx = [j * g + i for i in range(g)] if grouping == "contiguous" else \
                [i * (m - 1) + j for i in range(g)]
            want.append(sum(x64[..., c] for c in idx) / g)
        rest = list(range(g * (m - 1), cin))
        want.append(sum(x64[..., c] for c in rest) / len(rest))
    want = np.stack(want, axis=-1).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(kernels.cfb_nhwc(x, cout, grouping, threads=2), got)


def test_runtime_bit_identical_across_threads(tmp_path):
    # FP stem/classifier GEMMs, CFB bypasses, DAB statistics and packed convs: the thread
    # count may change the speed, never a bit of the output
    from bidense.benchmark.models import _make_model

    torch.manual_seed(0)
    model = _make_model("upernet_convnext_micro", "bidense:shared")
    x = torch.randn(1, 3, 32, 32)
    export(model, tmp_path / "m.bdn", x)
    outs = {t: Runtime(tmp_path / "m.bdn", threads=t)(x.numpy()) for t in (1, 2, 3)}
    np.testing.assert_array_equal(outs[1], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])
    with torch.inference_mode():
        ref = model(x).numpy()
    assert max_relative_error(outs[2], ref) < 1e-4


def test_reuse_heap_memory_respects_user_malloc_settings(monkeypatch):
    from bidense import _system

    monkeypatch.setitem(_system._MALLOC, "done", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123456")
    assert _system.reuse_heap_memory() is False  # the user's own malloc setting wins
    assert _system._MALLOC["done"] is True
    assert _system.reuse_heap_memory() is False  # once per process


@pytest.mark.parametrize("user", [None, "OMP_WAIT_POLICY=ACTIVE", "GOMP_SPINCOUNT=5"])
def test_openmp_wait_defaults(user):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if user:
        k, v = user.split("=")
        env[k] = v
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"),
                                         env.get("PYTHONPATH", "")])
    code = ("import os, bidense.runtime.kernels; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    want = {None: ["30000", "PASSIVE"], "OMP_WAIT_POLICY=ACTIVE": ["None", "ACTIVE"],
            "GOMP_SPINCOUNT=5": ["5", "PASSIVE"]}[user]
    assert out == want
