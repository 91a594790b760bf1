"""Tests of the Ding et al. 2024 layers (our design D0-D2) and the ``ding`` models (D4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense.nn import (
    UPSAMPLE_BRANCHES,
    BinaryConv2d,
    BinaryConvTranspose2d,
    BinaryDualAttention,
    DingUnit,
    FullPrecisionDualAttention,
    MultiBranchUpsample,
    channel_adaptive_bypass,
    hard_row_threshold,
)
from bidense.profile import (
    attention_cost_comparison,
    binary_attention_sa_ops,
    full_precision_attention_ops,
    module_ops,
    self_reported_counter,
)

torch.manual_seed(0)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _conv_macs_by_hooks(module: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(binary, fp) conv MACs of one forward, counted independently from the tensors seen."""
    counts = {"bin": 0, "fp": 0}

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        kh, kw = mod.kernel_size
        if isinstance(mod, nn.ConvTranspose2d):
            macs = inp[0].numel() * mod.out_channels * kh * kw // mod.groups
        else:
            macs = out.numel() * (mod.in_channels // mod.groups) * kh * kw
        key = "bin" if isinstance(mod, BinaryConv2d | BinaryConvTranspose2d) else "fp"
        counts[key] += macs

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        module.eval()(x)
    for h in handles:
        h.remove()
    return counts["bin"], counts["fp"]


def _randomize_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


# ------------------------------------------------------------------------------------------
# MultiBranchUpsample: shapes, gradients, gates
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("cin,cout", [(4, 4), (4, 6), (6, 4), (3, 8), (5, 1)])
def test_mbu_shapes_and_gradients(scale: int, cin: int, cout: int) -> None:
    gate = "conditioned" if (cin + scale) % 2 else "static"
    m = MultiBranchUpsample(cin, cout, scale, gate=gate)
    x = torch.randn(2, cin, 3, 2, requires_grad=True)
    y = m(x)
    assert y.shape == (2, cout, 3 * scale, 2 * scale)
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert m.gate_logits.grad is not None and m.gate_logits.grad.abs().sum() > 0
    for name in UPSAMPLE_BRANCHES:
        w = m.branches[name][0].weight
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0, name
    if gate == "conditioned":
        assert m.gate_proj is not None and m.gate_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", UPSAMPLE_BRANCHES)
@pytest.mark.parametrize("binary", [True, False])
def test_mbu_single_branch(name: str, binary: bool) -> None:
    m = MultiBranchUpsample(3, 5, 2, branches=(name,), binary=binary)
    x = torch.randn(1, 3, 4, 3, requires_grad=True)
    y = m(x)
    assert y.shape == (1, 5, 8, 6)
    y.sum().backward()
    assert m.gate_logits.shape == (1, 5) and m.gate_logits.grad.abs().sum() > 0
    conv = m.branches[name][0]
    assert isinstance(conv, BinaryConv2d | BinaryConvTranspose2d) == binary


def test_mbu_output_formula_float64() -> None:
    """y = RPReLU(sum_b sigmoid(theta_b) * Branch_b(x) + CFB(nearest(x))), by hand."""
    m = MultiBranchUpsample(3, 5, 2).double().eval()
    _randomize_bn(m)
    with torch.no_grad():
        m.gate_logits.copy_(torch.randn_like(m.gate_logits))
        m.act.gamma.uniform_(-0.2, 0.2)
        m.act.beta.uniform_(0.1, 0.4)
        m.act.zeta.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        outs = m.branch_outputs(x)
        acc = np.zeros((2, 5, 6, 8))
        g = 1.0 / (1.0 + np.exp(-m.gate_logits.numpy()))
        for b, o in enumerate(outs):
            acc += g[b][None, :, None, None] * o.numpy()
        xn = x.numpy().repeat(2, axis=2).repeat(2, axis=3)  # nearest x2
        # CFB 3 -> 5: channels 0..2 tiled, then m = 2, g = 1: [x0], then mean(x1, x2)
        byp = np.concatenate([xn, xn[:, :1], xn[:, 1:].mean(axis=1, keepdims=True)], axis=1)
        s = acc + byp - m.act.gamma.numpy()[None, :, None, None]
        ref = np.where(s > 0, s, m.act.beta.numpy()[None, :, None, None] * s)
        ref = ref + m.act.zeta.numpy()[None, :, None, None]
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_mbu_gates_start_at_half_and_are_learned() -> None:
    torch.manual_seed(1)
    for gate in ("static", "conditioned"):
        m = MultiBranchUpsample(4, 4, 2, gate=gate)
        x = torch.randn(4, 4, 4, 4)
        g0 = m.gates(x).detach().clone()
        assert torch.equal(g0, torch.full_like(g0, 0.5))
        theta0 = m.gate_logits.detach().clone()
        target = torch.randn(4, 4, 8, 8)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            F.mse_loss(m(x), target).backward()
            opt.step()
        moved = (m.gate_logits.detach() - theta0).abs()
        assert moved.max() > 1e-3, gate
        assert not torch.allclose(m.gates(x), g0)
        if gate == "conditioned":
            assert m.gate_proj.weight.detach().abs().max() > 1e-3


def test_mbu_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        MultiBranchUpsample(2, 2, 1)
    with pytest.raises(ValueError, match="scale"):
        MultiBranchUpsample(2, 2, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown branch"):
        MultiBranchUpsample(2, 2, 2, branches=("cubic",))
    with pytest.raises(ValueError, match="gate"):
        MultiBranchUpsample(2, 2, 2, gate="dynamic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expects input"):
        MultiBranchUpsample(2, 2, 2)(torch.randn(1, 3, 2, 2))


# ------------------------------------------------------------------------------------------
# DingUnit
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cin,cout,stride,sc", [(4, 4, 1, "fp"), (4, 6, 1, "fp"),
                                                 (4, 8, 2, "fp"), (4, 8, 2, "cfb")])
def test_unit_shapes_gradients(cin: int, cout: int, stride: int, sc: str) -> None:
    u = DingUnit(cin, cout, 3, stride, sc)  # type: ignore[arg-type]
    x = torch.randn(2, cin, 6, 4, requires_grad=True)
    y = u(x)
    assert y.shape == (2, cout, 6 // stride, 4 // stride)
    y.sum().backward()
    assert u.conv.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    assert u.conv.act_binarizer.threshold.grad is not None
    assert u.conv.weight_binarizer.scale.grad is not None


def test_unit_formula_float64() -> None:
    u = DingUnit(3, 5, 3, 1).double().eval()
    _randomize_bn(u)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = u(x)
        conv = u.conv
        xb = torch.sign(x - conv.act_binarizer.threshold.view(1, -1, 1, 1))
        w = conv.weight
        wc = w - w.mean(dim=(1, 2, 3), keepdim=True)
        lam = w.abs().mean(dim=(1, 2, 3))  # learned scale's initial value
        wb = lam.view(-1, 1, 1, 1) * torch.sign(wc)
        z = F.conv2d(xb, wb, padding=1)
        bn = u.norm
        z = (z - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1) + bn.eps
        ) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        z = z + channel_adaptive_bypass(x, 5)
        ref = torch.where(z > 0, z, 0.25 * z)  # RPReLU at init
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# BinaryDualAttention vs a slow reference
# ------------------------------------------------------------------------------------------
def _windows(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _slow_pool(t: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Adaptive average pooling with loops: (C, H, W) -> (C, P), P row-major."""
    c, h, w = t.shape
    out = np.zeros((c, grid[0] * grid[1]))
    for i, (h0, h1) in enumerate(_windows(h, grid[0])):
        for j, (w0, w1) in enumerate(_windows(w, grid[1])):
            for ch in range(c):
                out[ch, i * grid[1] + j] = t[ch, h0:h1, w0:w1].mean()
    return out


def _softmax_row(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _slow_attend(att: BinaryDualAttention, x: torch.Tensor) -> np.ndarray:
    """z = x + gamma_p O_p + gamma_c O_c, computed with loops in float64 (D2)."""
    with torch.no_grad():
        qf = att.q_proj(x).numpy()
        kf = att.k_proj(x).numpy()
        vf = att.v_proj(x).numpy()
    p_ = {k: v.detach().numpy().astype(np.float64) for k, v in att.named_parameters()}
    bsz, c, h, w = x.shape
    n, d, grid = h * w, att.key_channels, att.grid
    npos = grid[0] * grid[1]
    xs = x.numpy()
    z = np.zeros_like(xs)
    r = att.threshold_ratio
    for bi in range(bsz):
        q = qf[bi].reshape(d, n)
        kbar = _slow_pool(kf[bi], grid)
        vbar = _slow_pool(vf[bi], grid)
        if att.binary:
            qb = np.sign(q - p_["tau_q"][:, None])
            kb = np.sign(kbar - p_["tau_k"][:, None])
        else:
            qb, kb = q, kbar
        o_p = np.zeros((c, n))
        for i in range(n):
            s = np.zeros(npos)
            for j in range(npos):
                if att.binary:
                    # popcount form of the {+-1} dot product: d - 2 popcount(q xor k)
                    xor = np.logical_xor(qb[:, i] > 0, kb[:, j] > 0)
                    dot = d - 2 * int(xor.sum())
                    s[j] = p_["a_q"] * p_["a_k"] / math.sqrt(d) * dot
                else:
                    s[j] = sum(qb[t, i] * kb[t, j] for t in range(d)) / math.sqrt(d)
            a = _softmax_row(s)
            if att.binary_values:
                ab = (a >= r * a.max()).astype(np.float64)
                for ch in range(c):
                    o_p[ch, i] = p_["a_v"][ch] * sum(
                        np.sign(vbar[ch, j]) * ab[j] for j in range(npos)
                    ) / ab.sum()
            else:
                for ch in range(c):
                    o_p[ch, i] = sum(vbar[ch, j] * a[j] for j in range(npos))
        xf = xs[bi].reshape(c, n)
        xb = np.sign(xf - p_["tau_c"][:, None]) if att.binary else xf
        o_c = np.zeros((c, n))
        for ci in range(c):
            e = np.array([sum(xb[ci, t] * xb[cj, t] for t in range(n)) for cj in range(c)])
            if att.channel_form == "danet":
                e = e.max() - e
            a = _softmax_row(p_["temperature"] * e / n)
            if att.binary:
                a = (a >= r * a.max()).astype(np.float64)
                o_c[ci] = p_["a_c"] * (a[:, None] * xb).sum(axis=0) / a.sum()
            else:
                o_c[ci] = p_["a_c"] * (a[:, None] * xb).sum(axis=0)
        zb = xf + p_["gamma_p"] * o_p + p_["gamma_c"] * o_c
        z[bi] = zb.reshape(c, h, w)
    return z


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"binary_values": True},
        {"channel_form": "danet"},
        {"binary": False},
        {"binary": False, "channel_form": "danet"},
    ],
)
def test_attention_matches_slow_reference(kwargs: dict) -> None:
    torch.manual_seed(3)
    att = BinaryDualAttention(16, grid=(2, 3), **kwargs).double().eval()
    _randomize_bn(att)
    with torch.no_grad():
        for name in ("tau_q", "tau_k", "tau_c"):
            getattr(att, name).uniform_(-0.3, 0.3)
        for name in ("a_q", "a_k", "a_c", "temperature", "gamma_p", "gamma_c"):
            getattr(att, name).fill_(float(torch.empty(()).uniform_(0.5, 2.0)))
        if att.a_v is not None:
            att.a_v.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)  # 5x7 -> 2x3: overlapping windows
    ref = _slow_attend(att, x)
    with torch.no_grad():
        z = att.attend(x)
        out = att(x)
        ref_out = att.out_unit(torch.from_numpy(ref))
    np.testing.assert_allclose(z.numpy(), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    # the attention actually changes the map (gammas are non-zero)
    assert np.abs(ref - x.numpy()).max() > 1e-3


def test_attention_gradients() -> None:
    att = BinaryDualAttention(16, grid=(2, 2), binary_values=True)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    att(x).sum().backward()
    # gammas start at 0: they receive gradient, and the map passes through unchanged
    assert att.gamma_p.grad.abs() > 0 and att.gamma_c.grad.abs() > 0
    with torch.no_grad():
        att.gamma_p.fill_(0.7)
        att.gamma_c.fill_(0.4)
    att.zero_grad()
    x.grad = None
    (att(x) * torch.randn(2, 16, 4, 4)).sum().backward()
    for name in ("tau_q", "tau_k", "tau_c", "a_q", "a_k", "a_c", "a_v", "temperature"):
        g = getattr(att, name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    for proj in (att.q_proj, att.k_proj, att.v_proj):
        assert proj[0].weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_hard_row_threshold() -> None:
    a = torch.softmax(torch.randn(3, 6), dim=-1).requires_grad_(True)
    ab = hard_row_threshold(a, 0.25)
    expect = (a >= 0.25 * a.max(dim=-1, keepdim=True).values).float()
    assert torch.equal(ab, expect) and torch.all(ab.sum(-1) >= 1)
    g = torch.randn(3, 6)
    ab.backward(g)
    assert torch.equal(a.grad, g)


def test_full_precision_attention_matches_slow_reference() -> None:
    m = FullPrecisionDualAttention(8).double()
    with torch.no_grad():
        m.gamma_p.fill_(0.8)
        m.gamma_c.fill_(-0.6)
    x = torch.randn(1, 8, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        y = m(x).numpy()
        q, k, v = (t(x)[0].reshape(t.out_channels, -1).numpy() for t in (m.q, m.k, m.v))
    xf = x[0].reshape(8, -1).numpy()
    n = xf.shape[1]
    ref = xf.copy()
    for i in range(n):
        a = _softmax_row(np.array([q[:, i] @ k[:, j] for j in range(n)]))
        ref[:, i] += 0.8 * sum(v[:, j] * a[j] for j in range(n))
    for ci in range(8):
        e = np.array([xf[ci] @ xf[cj] for cj in range(8)])
        a = _softmax_row(e.max() - e)
        ref[ci] += -0.6 * sum(a[cj] * xf[cj] for cj in range(8))
    np.testing.assert_allclose(y[0].reshape(8, -1), ref, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------
# operation counts
# ------------------------------------------------------------------------------------------
def test_mbu_counts_by_hand() -> None:
    # C_in 2 -> C_out 3, x2, on 1x2 (N = 2, N_out = 8), all four branches, static gates.
    m = MultiBranchUpsample(2, 3, 2)
    nearest_once = 1 * 2 * 8  # nearest x2 of the input, shared with the bypass
    near = 2 * 3 * 9 * 8, 2 * 8 + 2 * 3 * 8  # MACs; RSign at 2x + BN
    bil = 2 * 3 * 9 * 8, 2 * 8 + 2 * 3 * 8 + 7 * 2 * 8  # + bilinear 7 per output element
    tr = 2 * 3 * 8, 2 * 2 + 2 * 3 * 8  # RSign at 1x
    ps = 2 * 12 * 2, 2 * 2 + 2 * 12 * 2  # 1x1 to 12 channels on 1x2, BN on 12 channels
    gates = 4 * 3  # sigmoids
    merge = 2 * 4 * 3 * 8  # Hadamard products and sums
    cfb = 2 * 8  # 2 -> 3: channels 0, 1 copied, channel 2 = mean of both
    rprelu = 3 * 3 * 8
    binary = near[0] + bil[0] + tr[0] + ps[0]
    ew = nearest_once + near[1] + bil[1] + tr[1] + ps[1] + gates + merge + cfb + rprelu
    assert binary == 960 and ew == 652
    assert module_ops(m, (1, 2, 1, 2)) == {"binary_macs": 960, "fp_macs": 0, "elementwise": 652}
    assert module_ops(m, (3, 2, 1, 2)) == {"binary_macs": 2880, "fp_macs": 0,
                                           "elementwise": 1956}
    mc = MultiBranchUpsample(2, 3, 2, gate="conditioned")
    # + phi: 2 * 4 * 3 FP MACs; + GAP (2 * 2) and the logit add (4 * 3)
    assert module_ops(mc, (1, 2, 1, 2)) == {"binary_macs": 960, "fp_macs": 24,
                                            "elementwise": 652 + 4 + 12}
    mf = MultiBranchUpsample(2, 3, 2, binary=False)  # FP: no RSign thresholds
    assert module_ops(mf, (1, 2, 1, 2)) == {"binary_macs": 0, "fp_macs": 960,
                                            "elementwise": 652 - 16 - 16 - 4 - 4}


@pytest.mark.parametrize("scale,cin,cout", [(2, 4, 4), (3, 3, 5), (4, 5, 2), (8, 2, 3)])
def test_mbu_macs_match_conv_hooks(scale: int, cin: int, cout: int) -> None:
    m = MultiBranchUpsample(cin, cout, scale, gate="conditioned")
    x = torch.randn(2, cin, 3, 2)
    binary, fp = _conv_macs_by_hooks(m, x)
    counts = module_ops(m, tuple(x.shape))
    assert (counts["binary_macs"], counts["fp_macs"]) == (binary, fp)
    # D1's closed forms per image
    n_out = 3 * 2 * scale**2
    assert binary == 2 * (2 * 9 + 2) * cin * cout * n_out


def test_unit_counts_by_hand() -> None:
    # 4 -> 8, stride 2, FP shortcut, on 4x2 (output 2x1)
    u = DingUnit(4, 8, 3, 2, "fp")
    conv = 4 * 8 * 9 * 2  # MACs
    ew = 4 * 8 + 2 * 8 * 2  # RSign on the 4x4x2 input, BN
    pool = 4 * 2 * 4  # AvgPool2d(2): 4 per output element
    proj = 4 * 8 * 2  # FP 1x1 MACs
    ew_sc = 2 * 8 * 2  # its BN
    tail = (1 + 3) * 8 * 2  # residual add + RPReLU
    assert module_ops(u, (1, 4, 4, 2)) == {
        "binary_macs": conv, "fp_macs": proj, "elementwise": ew + pool + ew_sc + tail
    }
    uc = DingUnit(4, 8, 3, 2, "cfb")  # CFB 4 -> 8 tiles: free
    assert module_ops(uc, (1, 4, 4, 2)) == {
        "binary_macs": conv, "fp_macs": 0, "elementwise": ew + pool + tail
    }
    x = torch.randn(2, 4, 6, 4)
    assert _conv_macs_by_hooks(u, x) == (
        module_ops(u, (2, 4, 6, 4))["binary_macs"], module_ops(u, (2, 4, 6, 4))["fp_macs"]
    )


def test_module_ops_needs_a_counting_rule() -> None:
    with pytest.raises(TypeError, match="no counting rule for Conv2d"):
        module_ops(nn.Conv2d(2, 2, 1), (1, 2, 2, 2))
    with pytest.raises(ValueError, match="expects"):
        module_ops(DingUnit(4, 4), (1, 3, 2, 2))


def test_attention_counts_by_hand() -> None:
    # C = 8 (d = 1), 2x2 map (N = 4), grid 1x2 (P = 2), batch 1
    att = BinaryDualAttention(8, grid=(1, 2))
    c, d, n, p = 8, 1, 4, 2
    proj_bin = c * d * n * 2 + c * c * n
    proj_ew = 3 * c * n + 2 * (d * n * 2 + c * n)  # three RSign thresholds, three BNs
    pool = (d + c) * 4  # each 2x2 plane: windows of 2 rows x 1 col, every element once
    pos_ew = d * n + d * p + n * p + 3 * n * p  # thresholds, scaling, softmax
    chan_ew = c * n + c * c + 3 * c * c + 2 * c * c + c * c + 2 * c * n
    merge = 4 * c * n
    unit_bin = c * c * 9 * n
    unit_ew = c * n + 2 * c * n + 4 * c * n
    own_bin = n * p * d + 2 * c * c * n
    own_fp = n * p * c
    expect = {
        "binary_macs": proj_bin + own_bin + unit_bin,
        "fp_macs": own_fp,
        "elementwise": proj_ew + pool + pos_ew + chan_ew + merge + unit_ew,
    }
    assert expect == {"binary_macs": 3144, "fp_macs": 64, "elementwise": 1146}
    assert module_ops(att, (1, 8, 2, 2)) == expect
    # binary_values: the aggregation becomes BOPs (+ A_b, sign v, row count, divide, a_v)
    attb = BinaryDualAttention(8, grid=(1, 2), binary_values=True)
    extra_ew = 2 * n * p + c * p + n * p + 2 * c * n
    assert module_ops(attb, (1, 8, 2, 2)) == {
        "binary_macs": 3144 + n * p * c, "fp_macs": 0, "elementwise": 1146 + extra_ew
    }
    # the profiler hook: own ops only, plus the FP DANet reference
    own = self_reported_counter(att)((torch.zeros(1, 8, 2, 2),), None)
    assert own["binary_macs"] == own_bin and own["fp_macs"] == own_fp
    assert own["reference_fp_macs"] == n * n * d + n * n * c + 2 * c * c * n
    # projections and out unit by hooks
    binary, fp = _conv_macs_by_hooks(att, torch.randn(1, 8, 2, 2))
    assert binary == proj_bin + unit_bin and fp == 0


def test_full_precision_attention_counts() -> None:
    m = FullPrecisionDualAttention(16)  # d = 2
    c, d, h, w = 16, 2, 3, 4
    n = h * w
    proj = (2 * d + c) * c * n
    sa = n * n * d + n * n * c + 2 * c * c * n
    counts = module_ops(m, (2, c, h, w))
    assert counts["fp_macs"] == 2 * (proj + sa) and counts["binary_macs"] == 0
    assert counts["elementwise"] == 2 * ((2 * d + c) * n + 3 * (n * n + c * c) + 2 * c * c
                                         + 4 * c * n)
    assert _conv_macs_by_hooks(m, torch.randn(2, c, h, w)) == (0, 2 * proj)


def test_attention_cost_ratio_on_64x128() -> None:
    n = 64 * 128
    c, d, p = 128, 16, 64
    ref = n * n * d + n * n * c + 2 * c * c * n
    ours = n * p * d / 64 + n * p * c + 2 * c * c * n / 64
    assert ref == 9_932_111_872 and ours == 71_434_240
    fp = full_precision_attention_ops(128, 64, 128)
    assert fp["sa_ops"] == ref and fp["softmax_exps"] == n * n + c * c
    sa = binary_attention_sa_ops(128, 64, 128)
    assert sa["similarity"] == 131_072 and sa["aggregation"] == 67_108_864
    assert sa["channel_similarity"] == sa["channel_aggregation"] == 2_097_152
    cmp_ = attention_cost_comparison(128, 64, 128)
    assert cmp_["ratio"] == pytest.approx(ref / ours) and cmp_["ratio"] >= 100  # 139x
    assert cmp_["ours_softmax_exps"] == n * p + c * c == 540_672
    # the other rows of the D2 table
    assert attention_cost_comparison(512, 64, 128)["ratio"] == pytest.approx(
        42_949_672_960 / 336_068_608
    )
    assert attention_cost_comparison(512, 64, 128)["ratio"] >= 100  # 128x
    assert attention_cost_comparison(128, 64, 128, (8, 16))["ratio"] < 100  # 72x: misses
    bv = attention_cost_comparison(128, 64, 128, (8, 16), binary_values=True)
    assert bv["ours_sa_ops"] == 6_553_600 and bv["ratio"] > 1500


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
from bidense.models import create_model  # noqa: E402
from bidense.models.ding import DingNet, ding_resnet18, ding_resnet_tiny  # noqa: E402


@pytest.mark.parametrize("method", ["ding", "fp32"])
@pytest.mark.parametrize("task,k", [("seg", 5), ("road", None), ("saliency", None),
                                    ("depth", None)])
def test_tiny_model_every_task(task: str, k: int | None, method: str) -> None:
    torch.manual_seed(0)
    model = ding_resnet_tiny(task=task, num_classes=k, method=method, max_depth=8.0)
    assert (model.task, model.method, model.num_classes) == (task, method, k or 1)
    x = torch.randn(2, 3, 64, 96)
    y = model(x)
    assert y.shape == (2, k or 1, 64, 96) and torch.isfinite(y).all()
    if task == "depth":
        assert y.min() >= 0 and y.max() <= 8.0
    y.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0
    n_binary = sum(isinstance(m, BinaryConv2d | BinaryConvTranspose2d) for m in model.modules())
    assert (n_binary > 0) == (method == "ding")


@pytest.mark.parametrize(
    "kw",
    [
        {"upsample": "bilinear"},
        {"upsample": "transposed"},
        {"attention": "none"},
        {"attention": "fp"},
        {"gate": "conditioned", "binary_values": True, "shortcut": "cfb"},
        {"final_mbu": True},
    ],
)
def test_tiny_model_ablation_switches(kw: dict) -> None:
    model = ding_resnet_tiny(task="seg", num_classes=3, **kw)
    y = model(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 3, 64, 64)
    y.sum().backward()
    if kw.get("attention") == "fp":
        assert isinstance(model.attention[0], FullPrecisionDualAttention)
    if "upsample" in kw:
        assert model.up8.branch_names == (kw["upsample"],)


def test_model_registry_and_errors() -> None:
    model = create_model("ding_resnet_tiny", task="road", method="fp32")
    assert isinstance(model, DingNet) and model.method == "fp32"
    full = ding_resnet18(task="seg", num_classes=19)
    assert full.encoder.out_channels == [64, 128, 256, 512]
    assert isinstance(full.attention, BinaryDualAttention) and full.attention.channels == 128
    assert full.attention.grid == (8, 8)
    half = ding_resnet18(task="saliency", width=0.5)
    assert half.encoder.out_channels == [32, 64, 128, 256] and half.attention.channels == 64
    with pytest.raises(ValueError, match="multiples of 32"):
        ding_resnet_tiny(task="road")(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="method"):
        ding_resnet_tiny(task="road", method="bidense")
    with pytest.raises(ValueError, match="upsample"):
        ding_resnet_tiny(task="road", upsample="cubic")
    with pytest.raises(ValueError, match="attention"):
        ding_resnet_tiny(task="road", attention="full")
    with pytest.raises(ValueError, match="num_classes"):
        ding_resnet_tiny(task="seg")
