"""DAB's group-wise scale (our deployment-friendly variant, issue 11 item 4).

``scale="group"``: one alpha per sample and per group of G consecutive input channels, the mean
of the per-channel alphas over the group (the last group possibly shorter), so a packed conv
stays exact with one multiply-add per 64-channel word.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense.binarize import DAB, approx_sign
from bidense.binarize.functional import dab, group_mean
from bidense.export.bdn import export, max_relative_error
from bidense.models import configure_deployment, create_model
from bidense.nn import BiDenseConv2d
from bidense.runtime import kernels
from bidense.runtime.format import read_bdn
from bidense.runtime.runner import Runtime


def _dab_numpy(x: np.ndarray, a, k, b, cdim: int, group: int | None) -> tuple[np.ndarray, ...]:
    """Independent float64 DAB: ``(tau, alpha, y)`` with alpha per channel, or averaged over
    each group of ``group`` consecutive channels (broadcast back to its channels)."""
    xc = np.moveaxis(x, cdim, -1)  # (N, ..., C)
    n, c = xc.shape[0], xc.shape[-1]
    flat = xc.reshape(n, -1, c)
    mu = flat.mean(axis=1)  # (N, C)
    tau = k * mu + b
    m = np.abs(flat - tau[:, None, :]).mean(axis=1)
    alpha = np.exp(a * (m - 1.0))
    if group is not None:
        for start in range(0, c, group):
            alpha[:, start : start + group] = alpha[:, start : start + group].mean(axis=1,
                                                                                 keepdims=True)
    y = alpha[:, None, :] * np.sign(flat - tau[:, None, :])
    y = np.moveaxis(y.reshape(xc.shape), -1, cdim)
    return tau, alpha, y


def _inputs(shape, cdim, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    c = shape[cdim]
    x = torch.randn(shape, generator=g, dtype=dtype) * 0.8 + 0.1
    a, k = (torch.randn(c, generator=g, dtype=dtype) * 0.7 for _ in range(2))
    b = torch.randn(c, generator=g, dtype=dtype) * 0.3
    return x, a, k, b


CASES = [
    # (shape, channel_dim, group)
    ((2, 96, 5, 4), 1, 64),  # last group short (64 + 32)
    ((2, 130, 3, 3), 1, 64),  # 64 + 64 + 2
    ((3, 128, 2, 5), 1, 64),  # even groups
    ((2, 12, 4, 4), 1, 5),  # not a multiple of 64 (training only): 5 + 5 + 2
    ((2, 7, 10), -1, 3),  # tokens (B, N, C)
    ((4, 9), 1, 4),  # (B, C): no positions
    ((2, 40, 3, 3), 1, 64),  # group >= C: the shared scale
]


@pytest.mark.parametrize("shape,cdim,group", CASES)
def test_group_forward_matches_independent_numpy(shape, cdim, group):
    x, a, k, b = _inputs(shape, cdim, seed=sum(shape) + group)
    m = DAB(shape[cdim], channel_dim=cdim, scale="group", group=group).double()
    with torch.no_grad():
        m.a.copy_(a), m.k.copy_(k), m.b.copy_(b)
    tau_np, alpha_np, y_np = _dab_numpy(x.numpy(), a.numpy(), k.numpy(), b.numpy(), cdim % x.dim(),
                                        group)
    tau, alpha = m.threshold_and_scale(x)

    def per_channel(t: torch.Tensor) -> np.ndarray:  # broadcastable to x -> (N, C)
        full = t.detach().expand(shape).movedim(cdim, -1)
        return full.reshape(shape[0], -1, shape[cdim])[:, 0].numpy()

    np.testing.assert_allclose(per_channel(tau), tau_np, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(per_channel(alpha), alpha_np, rtol=1e-13)
    y = m(x)
    np.testing.assert_allclose(y.detach().numpy(), y_np, rtol=1e-13)
    assert torch.equal(y, alpha * approx_sign(x - tau))


@pytest.mark.parametrize("shape,cdim,group", CASES)
def test_group_gradients_match_the_autograd_composition(shape, cdim, group):
    x, a, k, b = _inputs(shape, cdim, seed=3 * sum(shape) + group)
    up = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    fused = [t.clone().requires_grad_() for t in (x, a, k, b)]
    ref = [t.clone().requires_grad_() for t in (x, a, k, b)]
    y_f = dab(*fused, channel_dim=cdim, scale="group", group=group)
    m = DAB(shape[cdim], channel_dim=cdim, scale="group", group=group).double()
    m.a, m.k, m.b = (torch.nn.Parameter(t) for t in ref[1:])
    tau, alpha = m.threshold_and_scale(ref[0])  # mu, m detached; alpha through the group mean
    y_r = alpha * approx_sign(ref[0] - tau)
    assert torch.equal(y_f, y_r.detach())
    g_f = torch.autograd.grad(y_f, fused, up)
    g_r = torch.autograd.grad(y_r, [ref[0], m.a, m.k, m.b], up)
    for gf, gr in zip(g_f, g_r):
        assert float(gr.abs().max()) > 0
        torch.testing.assert_close(gf, gr, rtol=1e-11, atol=1e-12)


def test_group_limits_are_the_other_variants():
    x, a, k, b = _inputs((2, 10, 4, 3), 1, seed=11)
    shared = dab(x, a, k, b, scale="shared")
    assert torch.equal(dab(x, a, k, b, scale="group", group=10), shared)
    assert torch.equal(dab(x, a, k, b, scale="group", group=64), shared)
    torch.testing.assert_close(dab(x, a, k, b, scale="group", group=1), dab(x, a, k, b),
                               rtol=1e-15, atol=0)


def test_group_mean_helper():
    t = torch.arange(10.0).reshape(1, 10)
    assert group_mean(t, 1, 4).tolist() == [[1.5] * 4 + [5.5] * 4 + [8.5] * 2]
    assert group_mean(t, -1, 16).shape == (1, 1)


def test_group_float32_gradients_close_to_float64():
    torch.manual_seed(2)
    m = DAB(96, scale="group", group=64)
    with torch.no_grad():
        for p in (m.a, m.k, m.b):
            p.normal_(0, 0.4)
    x = torch.randn(3, 96, 7, 5, requires_grad=True)
    up = torch.randn_like(x)
    g32 = torch.autograd.grad(m(x), [x, m.a, m.k, m.b], up)
    m64 = DAB(96, scale="group", group=64).double()
    m64.load_state_dict(m.state_dict())
    x64 = x.detach().double().requires_grad_()
    g64 = torch.autograd.grad(m64(x64), [x64, m64.a, m64.k, m64.b], up.double())
    for gf, gr in zip(g32, g64):
        torch.testing.assert_close(gf.double(), gr, rtol=1e-4, atol=1e-5)


def test_group_options_validation_and_repr():
    assert "scale=group, group=64" in repr(DAB(8, scale="group"))
    assert "group" not in repr(DAB(8, scale="shared"))
    for bad in (0, -64, 1.5, True):
        with pytest.raises(ValueError, match="group"):
            DAB(8, scale="group", group=bad)
        with pytest.raises(ValueError, match="group"):
            dab(torch.randn(1, 8, 2, 2), *(torch.zeros(8),) * 3, scale="group", group=bad)
    with pytest.raises(ValueError, match="scale"):
        DAB(8, scale="word")


def test_create_model_and_configure_deployment_group_option():
    model = create_model("upernet_convnext_micro", num_classes=3, method="bidense",
                         dab_scale="group", dab_group=64)
    dabs = [m for m in model.modules() if isinstance(m, DAB)]
    assert dabs and all(d.scale == "group" and d.group == 64 for d in dabs)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    y = model(x)
    assert torch.isfinite(y).all()
    counts = configure_deployment(model, dab_group=128)
    assert counts["dab"] == len(dabs) and all(d.group == 128 for d in dabs)
    with pytest.raises(ValueError, match="dab_group"):
        configure_deployment(model, dab_group=0)
    with pytest.raises(ValueError, match="dab_scale"):
        create_model("upernet_convnext_micro", num_classes=3, method="bidense",
                     dab_scale="word")


# --------------------------------------------------------------------------- packed kernel
@pytest.mark.parametrize("c,group,k,pad_mode", [
    (96, 64, 3, "zero"),  # last group short (64 + 32)
    (128, 64, 1, "zero"),
    (200, 128, 3, "one"),  # 128 + 72
    (64, 64, 3, "zero"),  # one group: the shared fold
])
def test_group_alpha_kernel_matches_per_channel_float_path(c, group, k, pad_mode):
    rng = np.random.default_rng(c + group + k)
    n, o, hw = 2, 24, 7
    x = rng.standard_normal((n, hw, hw, c)).astype(np.float32)
    w = np.sign(rng.standard_normal((o, c, k, k))).astype(np.float32)
    xb, wb = kernels.pack_nhwc(x), kernels.pack_weights_ohwi(w)
    alpha = rng.uniform(0.2, 2.0, (n, -(-c // group))).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, o).astype(np.float32)
    epi = dict(bias=rng.standard_normal(o).astype(np.float32),
               bypass=rng.standard_normal((n, hw, hw, o)).astype(np.float32),
               prelu=rng.uniform(0.1, 0.3, o).astype(np.float32),
               prelu_pre=rng.standard_normal(o).astype(np.float32))
    geo = dict(kernel=k, padding=k // 2, pad_mode=pad_mode)
    want = kernels.binary_conv2d_dab(xb, np.repeat(alpha, group, axis=1)[:, :c], wb, c,
                                     scale=scale, **geo, **epi)
    outs = [kernels.binary_conv2d_group_alpha(xb, wb, c, alpha=alpha, group=group, scale=scale,
                                              backend=be, **geo, **epi)
            for be in kernels.available_backends()]
    # float32 rounding of sums up to ~100 in magnitude (both paths are exact otherwise)
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    for got in outs[1:]:  # a fixed float order: every backend bit for bit
        np.testing.assert_array_equal(got, outs[0])


def test_group_alpha_kernel_rejects_bad_groups():
    xb = kernels.pack_nhwc(np.ones((1, 3, 3, 96), np.float32))
    wb = kernels.pack_weights_ohwi(np.ones((4, 96, 1, 1), np.float32))
    for bad in (32, 96, 0):
        with pytest.raises(ValueError, match="multiple of 64"):
            kernels.binary_conv2d_group_alpha(xb, wb, 96, 1, alpha=np.ones((1, 2)), group=bad)
    with pytest.raises(ValueError, match="alpha"):
        kernels.binary_conv2d_group_alpha(xb, wb, 96, 1, alpha=np.ones((1, 3)), group=64)


# --------------------------------------------------------------------------- export + runtime
def _group_model(group: int) -> torch.nn.Module:
    """Channels 64 -> 96 (last group short) -> 128, a 1x1 and a depthwise layer."""
    torch.manual_seed(4)
    model = torch.nn.Sequential(
        BiDenseConv2d(64, 96, 3, padding=1), BiDenseConv2d(96, 128, 3, padding=1),
        BiDenseConv2d(128, 128, 1), BiDenseConv2d(128, 128, 3, padding=1, groups=128))
    configure_deployment(model, dab_scale="group", dab_group=group)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DAB):
                m.a.normal_(0, 0.5), m.k.normal_(0, 0.5), m.b.normal_(0, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.05), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("group,paths", [
    (64, ["packed, DAB shared alpha folded", "packed, DAB group alpha (per word)",
          "packed, DAB group alpha (per word)", "depthwise exact-alpha"]),
    (128, ["packed, DAB shared alpha folded"] * 4),  # every layer one group
    # not a multiple of the 64-channel word: the exact float path where there are two groups
    (48, ["DAB float path (per-channel alpha)"] * 3 + ["depthwise exact-alpha"]),
])
def test_group_model_bdn_matches_pytorch(tmp_path, group, paths):
    model = _group_model(group)
    x = torch.randn(2, 64, 9, 9)
    path = tmp_path / "group.bdn"
    export(model, path, x)
    acts = [m["attrs"]["act"] for m in read_bdn(path).graph["modules"].values()
            if m["kind"] == "bconv"]
    assert acts == [{"kind": "dab", "scale": "group", "group": group}] * 4
    with torch.no_grad():
        ref = model(x).numpy()
    rt = Runtime(path)
    assert max_relative_error(rt(x.numpy()), ref) < 1e-5
    assert [r["path"] for r in rt.report() if r["op"] == "bconv"] == paths


def test_group_per_word_path_with_exact_zeros(tmp_path):
    # tau = 0 (k = b = 0) and exact zeros in the input: sign(0) = 0 takes the "+zeros" run
    torch.manual_seed(6)
    model = torch.nn.Sequential(BiDenseConv2d(96, 32, 3, padding=1, bypass=False))
    configure_deployment(model, dab_scale="group", dab_group=64)
    with torch.no_grad():
        model[0].conv.act_binarizer.a.normal_(0, 0.5)
        model[0].conv.act_binarizer.k.zero_()
    model.eval()
    x = torch.randn(1, 96, 8, 8)
    x[..., :3, :] = 0
    export(model, tmp_path / "z.bdn", x)
    rt = Runtime(tmp_path / "z.bdn")
    with torch.no_grad():
        ref = model(x).numpy()
    assert max_relative_error(rt(x.numpy()), ref) < 1e-5
    assert [r["path"] for r in rt.report() if r["op"] == "bconv"] == [
        "packed, DAB group alpha (per word) +zeros"]
