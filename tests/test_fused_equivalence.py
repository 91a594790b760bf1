"""The fused training paths equal plain autograd compositions written here.

Every reference below is built from torch primitives only (no bidense autograd Function):
sign surrogates use the ``forward value + (surrogate - surrogate.detach())`` trick, the CFB map
is rebuilt channel by channel from its documented rule (bidense-method.md §4), and the DAB
(bidense-method.md §3) is spelled out step by step. Float64 comparisons are to 1e-10 relative
(max-norm); float32 forward values are compared exactly where the fused code performs the same
floating-point operations.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bidense.binarize import DAB, MeanAbsWeight, RSign
from bidense.binarize.functional import (
    approx_sign,
    dab,
    mean_abs_sign,
    shifted_approx_sign,
    sign_clip_ste,
)
from bidense.nn import (
    BiDenseConv2d,
    BiDenseDown,
    BiDenseLinear,
    BiDenseTransition,
    BiDenseUp,
    BinaryConv2d,
    RPReLU,
)
from bidense.nn.bypass import add_channel_adaptive_bypass

TOL = 1e-10


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float = TOL) -> None:
    """Max-norm relative closeness: max|a - e| <= tol * max(max|e|, tiny)."""
    assert actual is not None and expected is not None
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.isfinite(actual).all()
    scale = max(float(expected.abs().max()), 1e-30)
    err = float((actual - expected).abs().max())
    assert err <= tol * scale, f"relative error {err / scale:.3e} > {tol:.1e}"


# --------------------------------------------------------------------------- references
def ste(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward ``value``, backward the gradient of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


def approx_sign_ref(s: torch.Tensor) -> torch.Tensor:
    """Bi-Real ApproxSign: sign forward; backward the derivative of the piecewise polynomial."""
    poly = torch.where(
        s < -1,
        -torch.ones_like(s),
        torch.where(s < 0, s * s + 2 * s, torch.where(s < 1, -s * s + 2 * s, torch.ones_like(s))),
    )
    return ste(torch.sign(s), poly)


def clip_ste_ref(x: torch.Tensor) -> torch.Tensor:
    return ste(torch.sign(x), x.clamp(-1.0, 1.0))


def dab_ref(x, a, k, b, cdim: int, shared: bool) -> torch.Tensor:
    """DAB exactly as bidense-method.md §3 (statistics detached), by plain autograd."""
    cdim = cdim % x.dim()
    dims = [d for d in range(1, x.dim()) if d != cdim]
    shape = [1] * x.dim()
    shape[cdim] = -1
    mu = x.detach().mean(dim=dims, keepdim=True) if dims else x.detach()
    tau = k.view(shape) * mu + b.view(shape)
    s = x - tau
    sa = s.detach().abs()
    m = sa.mean(dim=dims, keepdim=True) if dims else sa
    alpha = torch.exp(a.view(shape) * (m - 1))
    if shared:
        alpha = alpha.mean(dim=cdim, keepdim=True)
    return alpha * approx_sign_ref(s)


def cfb_ref(x: torch.Tensor, c_out: int, grouping: str = "strided", cdim: int = 1):
    """CFB built channel by channel from the documented rule."""
    xs = x.movedim(cdim, -1)
    c_in = xs.shape[-1]
    r, m = divmod(c_out, c_in)
    chans = [xs[..., j % c_in] for j in range(r * c_in)]
    if m:
        g = c_in // m
        for j in range(m - 1):
            if grouping == "strided":
                idx = [i * (m - 1) + j for i in range(g)]
            else:
                idx = list(range(j * g, (j + 1) * g))
            chans.append(xs[..., idx].mean(-1))
        chans.append(xs[..., g * (m - 1) :].mean(-1))
    return torch.stack(chans, -1).movedim(-1, cdim)


def mean_abs_ref(w: torch.Tensor) -> torch.Tensor:
    gamma = w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    clipped = w.clamp(-1.0, 1.0)
    return gamma * torch.sign(w).detach() + (clipped - clipped.detach())


def grads(out: torch.Tensor, inputs: list[torch.Tensor], upstream: torch.Tensor):
    return torch.autograd.grad(out, inputs, upstream, allow_unused=True)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# --------------------------------------------------------------------------- DAB
DAB_CASES = [
    # (shape, channel_dim)
    ((3, 5, 4, 6), 1),  # NCHW
    ((4, 7), 1),  # (B, C): no positions, statistics are the values
    ((2, 9, 6), -1),  # tokens (B, N, C)
    ((2, 4, 3, 2, 5), 1),  # 5-D
]


@pytest.mark.parametrize("shape,cdim", DAB_CASES)
@pytest.mark.parametrize("scale", ["channel", "shared"])
def test_dab_function_matches_composition(shape, cdim, scale):
    g = torch.Generator().manual_seed(sum(shape) * 7 + cdim + len(scale))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 0.8 + 0.1
    c = shape[cdim]
    a = torch.randn(c, generator=g, dtype=torch.float64) * 0.7
    k = torch.randn(c, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(c, generator=g, dtype=torch.float64) * 0.3
    up = torch.randn(shape, generator=g, dtype=torch.float64)
    ins_f = [leaf(t) for t in (x, a, k, b)]
    ins_r = [leaf(t) for t in (x, a, k, b)]
    y_f = dab(*ins_f, channel_dim=cdim, scale=scale)
    y_r = dab_ref(*ins_r, cdim, scale == "shared")
    assert torch.equal(y_f, y_r.detach())
    # the layer must see a genuinely varying gradient: some |s| < 1 and some beyond
    for gf, gr in zip(grads(y_f, ins_f, up), grads(y_r, ins_r, up)):
        assert float(gr.abs().max()) > 0
        assert_rel(gf, gr)


def test_dab_channels_last_and_partial_requires_grad():
    torch.manual_seed(1)
    x = (torch.randn(2, 6, 5, 4, dtype=torch.float64) * 0.7).to(memory_format=torch.channels_last)
    a, k, b = (torch.randn(6, dtype=torch.float64) * 0.5 for _ in range(3))
    up = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    # x constant (no grad), parameters learnable
    pf = [leaf(t) for t in (a, k, b)]
    pr = [leaf(t) for t in (a, k, b)]
    y_f = dab(x, *pf)
    y_r = dab_ref(x, *pr, 1, False)
    assert torch.equal(y_f, y_r.detach())
    for gf, gr in zip(grads(y_f, pf, up), grads(y_r, pr, up)):
        assert_rel(gf, gr)
    # only x learnable
    xf, xr = leaf(x), leaf(x)
    (gf,) = grads(dab(xf, a, k, b), [xf], up)
    (gr,) = grads(dab_ref(xr, a, k, b, 1, False), [xr], up)
    assert_rel(gf, gr)


def test_dab_exact_zero_and_underflowing_shared_scale():
    # s == 0 exactly gives y == 0; a scale that underflows to 0 gives finite, matching grads
    x = torch.zeros(2, 3, 2, 2, dtype=torch.float64)
    x[0, 1] = torch.tensor([[0.5, -0.25], [1.5, 0.0]])
    a = torch.tensor([2000.0, 0.3, -0.2], dtype=torch.float64)  # exp(2000 * (m-1)) -> 0 at m=0
    k = torch.zeros(3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    up = torch.ones_like(x)
    for scale in ("channel", "shared"):
        ins_f = [leaf(t) for t in (x, a, k, b)]
        ins_r = [leaf(t) for t in (x, a, k, b)]
        y_f = dab(*ins_f, scale=scale)
        y_r = dab_ref(*ins_r, 1, scale == "shared")
        assert torch.equal(y_f, y_r.detach())
        assert (y_f[x == 0] == 0).all()
        for gf, gr in zip(grads(y_f, ins_f, up), grads(y_r, ins_r, up)):
            assert torch.isfinite(gf).all()
            assert_rel(gf, gr)


@pytest.mark.parametrize("scale", ["channel", "shared"])
def test_dab_module_float32_forward_is_bit_identical_to_its_composition(scale):
    torch.manual_seed(2)
    m = DAB(8, scale=scale)
    with torch.no_grad():
        for p in (m.a, m.k, m.b):
            p.normal_(0, 0.4)
    x = torch.randn(3, 8, 7, 5)
    tau, alpha = m.threshold_and_scale(x)
    assert torch.equal(m(x), alpha * approx_sign(x - tau))
    # and to 1e-6 in float32 for all gradients against the float64 reference
    xf = leaf(x)
    up = torch.randn_like(x)
    g32 = grads(m(xf), [xf, m.a, m.k, m.b], up)
    ins = [leaf(t.double()) for t in (x, m.a, m.k, m.b)]
    g64 = grads(dab_ref(*ins, 1, scale == "shared"), ins, up.double())
    for gf, gr in zip(g32, g64):
        assert_rel(gf.double(), gr, tol=1e-5)


def test_dab_rejects_bad_arguments():
    x = torch.randn(2, 3, 4, 4)
    p = torch.zeros(3)
    with pytest.raises(ValueError, match="scale"):
        dab(x, p, p, p, scale="pixel")
    with pytest.raises(ValueError, match="batch"):
        dab(x, p, p, p, channel_dim=0)
    with pytest.raises(ValueError, match="channel"):
        dab(torch.randn(3), p, p, p)


# --------------------------------------------------------------------------- sign functions
def test_sign_surrogates_match_compositions():
    torch.manual_seed(3)
    x = torch.randn(4, 6, 5, 3, dtype=torch.float64) * 1.3
    x[0, 0, 0, 0] = 0.0
    x[0, 0, 0, 1] = 1.0  # the clip boundary is inside the STE window
    up = torch.randn_like(x)
    for fused, ref in ((sign_clip_ste, clip_ste_ref), (approx_sign, approx_sign_ref)):
        xf, xr = leaf(x), leaf(x)
        yf, yr = fused(xf), ref(xr)
        assert torch.equal(yf, yr.detach())
        assert_rel(grads(yf, [xf], up)[0], grads(yr, [xr], up)[0])


@pytest.mark.parametrize("shape,cdim", [((3, 5, 4, 4), 1), ((2, 7, 5), -1), ((6, 5), 1)])
def test_shifted_approx_sign_and_rsign(shape, cdim):
    torch.manual_seed(4)
    x = torch.randn(shape, dtype=torch.float64)
    c = shape[cdim]
    rs = RSign(c, channel_dim=cdim).double()
    with torch.no_grad():
        rs.threshold.normal_(0, 0.5)
    view = [1] * len(shape)
    view[cdim] = c
    up = torch.randn(shape, dtype=torch.float64)
    xf, xr, tr = leaf(x), leaf(x), leaf(rs.threshold)
    yf = rs(xf)
    yr = approx_sign_ref(xr - tr.view(view))
    assert torch.equal(yf, yr.detach())
    for gf, gr in zip(grads(yf, [xf, rs.threshold], up), grads(yr, [xr, tr], up)):
        assert_rel(gf, gr)
    # the functional form with a scalar shift
    t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    t2 = leaf(t)
    xf, xr = leaf(x), leaf(x)
    gf = grads(shifted_approx_sign(xf, t), [xf, t], up)
    gr = grads(approx_sign_ref(xr - t2), [xr, t2], up)
    for a_, b_ in zip(gf, gr):
        assert_rel(a_, b_)


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (5, 1, 7, 7), (9, 12)])
def test_mean_abs_sign_matches_composition(shape):
    torch.manual_seed(5)
    w = torch.randn(shape, dtype=torch.float64) * 1.2  # some |w| > 1: the clip matters
    up = torch.randn(shape, dtype=torch.float64)
    wf, wr = leaf(w), leaf(w)
    yf, yr = mean_abs_sign(wf), mean_abs_ref(wr)
    assert torch.equal(yf, yr.detach())
    gf, gr = grads(yf, [wf], up)[0], grads(yr, [wr], up)[0]
    assert (gr == 0).any() and (gr != 0).any()
    assert_rel(gf, gr)
    wb = MeanAbsWeight(shape[0]).double()
    assert torch.equal(wb(w), yr.detach())


# --------------------------------------------------------------------------- CFB
CFB_CASES = [(8, 4), (8, 3), (8, 5), (8, 12), (4, 4), (3, 7), (5, 1), (4, 5), (6, 24), (24, 6)]


@pytest.mark.parametrize("c_in,c_out", CFB_CASES)
@pytest.mark.parametrize("grouping,cdim", [("strided", 1), ("contiguous", -1)])
def test_add_bypass_in_place_matches_composition(c_in, c_out, grouping, cdim):
    torch.manual_seed(c_in * 31 + c_out)
    if cdim == 1:
        xs, ys = (2, c_in, 3, 4), (2, c_out, 3, 4)
    else:
        xs, ys = (2, 5, c_in), (2, 5, c_out)
    x = torch.randn(xs, dtype=torch.float64)
    y0 = torch.randn(ys, dtype=torch.float64)
    up = torch.randn(ys, dtype=torch.float64)
    xf, y0f, xr, y0r = leaf(x), leaf(y0), leaf(x), leaf(y0)
    yf_in = y0f * 1.0  # a fresh non-leaf, as a BatchNorm output
    out_f = add_channel_adaptive_bypass(yf_in, xf, grouping, cdim)
    assert out_f.data_ptr() == yf_in.data_ptr()  # the in-place path was taken
    out_r = y0r * 1.0 + cfb_ref(xr, c_out, grouping, cdim)
    assert_rel(out_f.detach(), out_r.detach())
    for gf, gr in zip(grads(out_f, [xf, y0f], up), grads(out_r, [xr, y0r], up)):
        assert_rel(gf, gr)


def test_add_bypass_falls_back_for_leaves_and_views():
    torch.manual_seed(6)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = torch.randn(2, 8, 3, 3, requires_grad=True)  # a leaf: must not be written
    y_copy = y.detach().clone()
    out = add_channel_adaptive_bypass(y, x)
    assert torch.equal(y.detach(), y_copy)
    assert torch.equal(out, y_copy + cfb_ref(x.detach(), 8))
    base = torch.randn(2, 16, 3, 3)
    view = base[:, :8]
    before = base.clone()
    out = add_channel_adaptive_bypass(view, x.detach())
    assert torch.equal(base, before)
    assert torch.equal(out, before[:, :8] + cfb_ref(x.detach(), 8))
    with pytest.raises(ValueError, match="dims"):
        add_channel_adaptive_bypass(torch.randn(2, 8, 3), x)


# --------------------------------------------------------------------------- whole layers
def _bn_ref(y: torch.Tensor, bn: torch.nn.BatchNorm2d, w, b) -> torch.Tensor:
    return F.batch_norm(y, bn.running_mean.clone(), bn.running_var.clone(), w, b, True, 0.1, bn.eps)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("conv.weight"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.6)
            else:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


BLOCK_CASES = [
    # (c_in, c_out, kernel, groups, scale)
    (6, 24, 1, 1, "channel"),  # ConvNeXt pw1: tiling x4
    (24, 6, 1, 1, "channel"),  # ConvNeXt pw2: strided merge
    (6, 6, 3, 1, "shared"),  # identity bypass, 3x3
    (6, 6, 3, 6, "channel"),  # depthwise
    (6, 8, 3, 2, "shared"),  # groups=2, tiling + merge
]


@pytest.mark.parametrize("c_in,c_out,k,groups,scale", BLOCK_CASES)
def test_bidense_conv_block_matches_composition(c_in, c_out, k, groups, scale):
    torch.manual_seed(7)
    blk = BiDenseConv2d(c_in, c_out, k, padding=k // 2, groups=groups, dab_scale=scale).double()
    _randomise(blk, 8)
    x = torch.randn(3, c_in, 5, 6, dtype=torch.float64) * 0.8
    up = torch.randn(3, c_out, 5, 6, dtype=torch.float64)
    dab_m = blk.dab
    params_f = [blk.conv.weight, dab_m.a, dab_m.k, dab_m.b, blk.norm.weight, blk.norm.bias]
    params_r = [leaf(p) for p in params_f]
    xf, xr = leaf(x), leaf(x)
    out_f = blk(xf)
    w_r, a_r, k_r, b_r, bnw_r, bnb_r = params_r
    xb = dab_ref(xr, a_r, k_r, b_r, 1, scale == "shared")
    y = F.conv2d(xb, mean_abs_ref(w_r), None, 1, k // 2, 1, groups)
    out_r = _bn_ref(y, blk.norm, bnw_r, bnb_r) + cfb_ref(xr, c_out)
    assert_rel(out_f.detach(), out_r.detach())
    gf = grads(out_f, [xf, *params_f], up)
    gr = grads(out_r, [xr, *params_r], up)
    for a_, b_ in zip(gf, gr):
        assert float(b_.abs().max()) > 0
        assert_rel(a_, b_)


@pytest.mark.parametrize("kind", ["down", "transition", "up"])
def test_bidense_resample_blocks_match_composition(kind):
    torch.manual_seed(9)
    c_in, c_out = 4, 8
    if kind == "down":
        blk = BiDenseDown(c_in, c_out)
    elif kind == "transition":
        blk = BiDenseTransition(c_in, c_out)
    else:
        blk = BiDenseUp(c_in, c_out, 2)
    blk = blk.double()
    _randomise(blk, 10)
    x = torch.randn(2, c_in, 6, 6, dtype=torch.float64) * 0.8
    inner = blk.conv
    params_f = [inner.conv.weight, inner.dab.a, inner.dab.k, inner.dab.b]
    params_r = [leaf(p) for p in params_f]
    xf, xr = leaf(x), leaf(x)
    out_f = blk(xf)
    w_r, a_r, k_r, b_r = params_r
    xb = dab_ref(xr, a_r, k_r, b_r, 1, False)
    if kind == "up":
        y = F.conv_transpose2d(xb, mean_abs_ref(w_r), None, 2)
        side = F.interpolate(xr, scale_factor=2, mode="nearest")
    elif kind == "down":
        y = F.conv2d(xb, mean_abs_ref(w_r), None, 2, 1)
        side = F.avg_pool2d(xr, 3, 2, 1)
    else:
        y = F.conv2d(xb, mean_abs_ref(w_r), None, 2, 0)
        side = F.avg_pool2d(xr, 2, 2)
    bn = inner.norm
    out_r = _bn_ref(y, bn, bn.weight, bn.bias) + cfb_ref(side, c_out)
    assert_rel(out_f.detach(), out_r.detach())
    up = torch.randn_like(out_r)
    for a_, b_ in zip(grads(out_f, [xf, *params_f], up), grads(out_r, [xr, *params_r], up)):
        assert_rel(a_, b_)


def test_bidense_linear_tokens_match_composition():
    torch.manual_seed(11)
    lin = BiDenseLinear(6, 9).double()
    _randomise(lin, 12)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    thr = lin.linear.act_binarizer.threshold
    w = lin.linear.weight
    params_f = [w, thr, lin.linear.bias, lin.norm.weight, lin.norm.bias]
    params_r = [leaf(p) for p in params_f]
    xf, xr = leaf(x), leaf(x)
    out_f = lin(xf)
    w_r, t_r, bias_r, lnw_r, lnb_r = params_r
    centred = w_r - w_r.mean(dim=1, keepdim=True)
    gamma = w_r.detach().abs().mean(dim=1, keepdim=True)
    clipped = centred.clamp(-1, 1)
    wb = gamma * torch.sign(centred).detach() + (clipped - clipped.detach())
    y = F.linear(approx_sign_ref(xr - t_r), wb, bias_r)
    out_r = F.layer_norm(y, (9,), lnw_r, lnb_r, 1e-6) + cfb_ref(xr, 9, "contiguous", -1)
    assert_rel(out_f.detach(), out_r.detach())
    up = torch.randn_like(out_r)
    for a_, b_ in zip(grads(out_f, [xf, *params_f], up), grads(out_r, [xr, *params_r], up)):
        assert_rel(a_, b_)


@pytest.mark.parametrize("act,weight", [("rsign", "mean_abs"), ("sign", "sign")])
def test_binary_conv_baseline_binarizers_match_composition(act, weight):
    torch.manual_seed(13)
    conv = BinaryConv2d(4, 6, 3, padding=1, groups=2, act_binarizer=act, weight_binarizer=weight)
    conv = conv.double()
    _randomise(conv, 14)
    with torch.no_grad():
        conv.weight.normal_(0, 0.8)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    params_f = list(conv.parameters())
    params_r = [leaf(p) for p in params_f]
    xf, xr = leaf(x), leaf(x)
    out_f = conv(xf)
    w_r = params_r[0]
    if act == "rsign":
        xb = approx_sign_ref(xr - params_r[1].view(1, -1, 1, 1))
        wb = mean_abs_ref(w_r)
    else:
        xb, wb = clip_ste_ref(xr), clip_ste_ref(w_r)
    out_r = F.conv2d(xb, wb, None, 1, 1, 1, 2)
    assert torch.equal(out_f.detach(), out_r.detach())
    up = torch.randn_like(out_r)
    for a_, b_ in zip(grads(out_f, [xf, *params_f], up), grads(out_r, [xr, *params_r], up)):
        assert_rel(a_, b_)


@pytest.mark.parametrize("shape,cdim,zeta", [((2, 5, 3, 4), 1, True), ((2, 5, 3, 4), 1, False),
                                             ((3, 4, 5), -1, True)])
def test_rprelu_matches_formula(shape, cdim, zeta):
    torch.manual_seed(15)
    c = shape[cdim]
    act = RPReLU(c, zeta=zeta, channel_dim=cdim).double()
    _randomise(act, 16)
    x = torch.randn(shape, dtype=torch.float64)
    params_f = list(act.parameters())
    params_r = [leaf(p) for p in params_f]
    view = [1] * len(shape)
    view[cdim] = c
    xf, xr = leaf(x), leaf(x)
    gamma, beta = params_r[0].view(view), params_r[1].view(view)
    s = xr - gamma
    out_r = torch.where(s > 0, s, beta * s)
    if zeta:
        out_r = out_r + params_r[2].view(view)
    out_f = act(xf)
    assert_rel(out_f.detach(), out_r.detach())
    up = torch.randn_like(out_r)
    for a_, b_ in zip(grads(out_f, [xf, *params_f], up), grads(out_r, [xr, *params_r], up)):
        assert_rel(a_, b_)
