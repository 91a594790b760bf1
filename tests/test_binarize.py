"""Binarizers: forward values and surrogate gradients against float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bidense.binarize as B


def _grad(fn, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (fn(x) * g).sum().backward()
    return x.grad


def _approx_sign_grad64(x: np.ndarray) -> np.ndarray:
    # derivative of the Bi-Real polynomial, written piecewise as in the paper
    d = np.zeros_like(x)
    neg = (x >= -1) & (x < 0)
    pos = (x >= 0) & (x < 1)
    d[neg] = 2 + 2 * x[neg]
    d[pos] = 2 - 2 * x[pos]
    return d


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    t = torch.randn(2, 3, 5, 4) * 1.5
    t[0, 0, 0, 0] = 0.0  # sign(0) = 0
    t[0, 0, 0, 1] = 1.0  # clip boundary (inclusive)
    return t


def test_registry_lists_every_named_binarizer():
    assert B.list_binarizers("activation") == sorted(
        ["sign", "approx_sign", "rsign", "xnor", "adabin", "bisrnet", "dab"]
    )
    assert set(B.list_binarizers("weight")) >= {
        "sign",
        "mean_abs",
        "centered_mean_abs",
        "adabin",
        "learned_scale",
    }
    with pytest.raises(ValueError, match="unknown activation binarizer 'nope'"):
        B.get_activation_binarizer("nope")
    with pytest.raises(ValueError, match="needs a positive `channels`"):
        B.get_activation_binarizer("dab")
    ident = B.get_activation_binarizer(None)
    assert ident.bits == 32 and B.get_weight_binarizer("fp32").bits == 32
    inst = B.DAB(3)
    assert B.get_activation_binarizer(inst) is inst
    assert B.get_activation_binarizer("sign").bits == 1


def test_sign_clip_ste(x):
    g = torch.randn_like(x)
    y = B.get_activation_binarizer("sign")(x)
    x64 = x.double().numpy()
    np.testing.assert_array_equal(y.numpy(), np.sign(x64))
    expected = g.double().numpy() * (np.abs(x64) <= 1)
    np.testing.assert_allclose(_grad(B.get_activation_binarizer("sign"), x, g), expected, rtol=1e-6)


def test_approx_sign(x):
    g = torch.randn_like(x)
    act = B.get_activation_binarizer("approx_sign")
    np.testing.assert_array_equal(act(x).numpy(), np.sign(x.double().numpy()))
    expected = g.double().numpy() * _approx_sign_grad64(x.double().numpy())
    np.testing.assert_allclose(_grad(act, x, g), expected, rtol=1e-5, atol=1e-7)


def test_rsign_threshold_gets_gradient(x):
    act = B.get_activation_binarizer("rsign", 3)
    with torch.no_grad():
        act.threshold.copy_(torch.tensor([0.5, -0.25, 0.0]))
    thr = act.threshold.detach().double().numpy()[None, :, None, None]
    s = x.double().numpy() - thr
    np.testing.assert_array_equal(act(x).detach().numpy(), np.sign(s))
    g = torch.randn_like(x)
    xr = x.clone().requires_grad_(True)
    (act(xr) * g).sum().backward()
    dsur = g.double().numpy() * _approx_sign_grad64(s)
    np.testing.assert_allclose(xr.grad, dsur, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(act.threshold.grad, -dsur.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_xnor_output_scale_is_box_filtered_mean_abs():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 4, 4)
    act = B.get_activation_binarizer("xnor")
    k = act.output_scale(x, (5, 2, 3, 3), stride=1, padding=1)
    a = x.abs().mean(dim=1)[0].double().numpy()
    padded = np.pad(a, 1)
    expected = np.array(
        [[padded[i : i + 3, j : j + 3].sum() / 9 for j in range(4)] for i in range(4)]
    )
    np.testing.assert_allclose(k[0, 0].double().numpy(), expected, rtol=1e-6)
    assert act.output_scale(x, (5, 2, 3, 3), stride=2, padding=1).shape == (1, 1, 2, 2)
    assert B.XNORActivation(use_k=False).output_scale(x, (5, 2, 3, 3)) is None


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_adabin_activation(x, variant):
    act = B.get_activation_binarizer("adabin", variant=variant)
    with torch.no_grad():
        act.alpha.fill_(0.7)
        act.beta.fill_(0.2)
    sgn = np.sign((x.double().numpy() - 0.2) / 0.7)
    expected = 0.7 * sgn + 0.2 if variant == "paper" else 0.7 * (sgn + 0.2)
    np.testing.assert_allclose(act(x).detach().numpy(), expected, rtol=1e-6)
    # the two binary values are beta +- alpha in the paper form
    if variant == "paper":
        values = np.unique(act(x).detach().numpy())
        assert all(np.isclose(values[:, None], [-0.5, 0.2, 0.9]).any(axis=1))


def test_bisrnet_tanh_backward(x):
    act = B.get_activation_binarizer("bisrnet", 3)
    with torch.no_grad():
        act.k.copy_(torch.tensor([1.0, 2.0, 0.5]))
        act.b.copy_(torch.tensor([0.1, 0.0, -0.3]))
        act.beta.fill_(1.5)
    kk = np.array([1.0, 2.0, 0.5])[None, :, None, None]
    bb = np.array([0.1, 0.0, -0.3])[None, :, None, None]
    xr = kk * x.double().numpy() + bb
    g = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    y = act(xg)
    np.testing.assert_array_equal(y.detach().numpy(), np.sign(xr))
    (y * g).sum().backward()
    sech2 = 1 - np.tanh(1.5 * xr) ** 2
    np.testing.assert_allclose(xg.grad, g.numpy() * 1.5 * sech2 * kk, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(act.beta.grad, (g.numpy() * xr * sech2).sum(), rtol=1e-5)


def test_dab_forward_and_documented_gradient_paths():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 5) + torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    dab = B.DAB(3)
    with torch.no_grad():
        dab.a.copy_(torch.tensor([0.3, -0.2, 0.5]))
        dab.k.copy_(torch.tensor([0.8, 1.1, -0.4]))
        dab.b.copy_(torch.tensor([0.1, -0.2, 0.05]))
    a, k, b = (p.detach().double().numpy()[None, :, None, None] for p in (dab.a, dab.k, dab.b))
    x64 = x.double().numpy()
    mu = x64.mean(axis=(2, 3), keepdims=True)
    tau = k * mu + b
    s = x64 - tau
    m = np.abs(s).mean(axis=(2, 3), keepdims=True)
    alpha = np.exp(a * (m - 1))
    expected = alpha * np.sign(s)

    g = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    y = dab(xg)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-5)
    (y * g).sum().backward()
    g64 = g.double().numpy()
    ds = g64 * alpha * _approx_sign_grad64(s)  # dL/ds
    # x: only alpha * ApproxSign'(s); mu and m are constants
    np.testing.assert_allclose(xg.grad, ds, rtol=1e-4, atol=1e-6)
    # k and b: only through s (ds/dk = -mu, ds/db = -1), never through m
    np.testing.assert_allclose(dab.k.grad, (-ds * mu).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dab.b.grad, (-ds).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    # a: only through alpha, d alpha / da = (m - 1) alpha
    da = (g64 * np.sign(s) * (m - 1) * alpha).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(dab.a.grad, da, rtol=1e-4, atol=1e-6)


def test_dab_init_is_plain_sign_and_mode_independent():
    torch.manual_seed(3)
    dab = B.DAB(16)
    assert torch.all(dab.b == 0)
    assert dab.a.abs().max() < 0.01 and dab.k.abs().max() < 0.01
    x = torch.randn(4, 16, 8, 8) * 2 + 0.3
    tau, alpha = dab.threshold_and_scale(x)
    assert tau.abs().max() < 0.05
    assert (alpha - 1).abs().max() < 0.05
    dab.train()
    y_train = dab(x)
    dab.eval()
    torch.testing.assert_close(dab(x), y_train)  # per-sample statistics: no train/eval switch
    # per-sample: one sample's output does not depend on the rest of the batch
    torch.testing.assert_close(dab(x[:1]), y_train[:1])


def test_dab_tokens_and_shared_scale():
    torch.manual_seed(4)
    x = torch.randn(2, 7, 3)  # (B, N, C)
    dab = B.DAB(3, channel_dim=-1)
    with torch.no_grad():
        dab.a.fill_(0.4)
    x64 = x.double().numpy()
    mu = x64.mean(axis=1, keepdims=True)
    k = dab.k.detach().double().numpy()
    s = x64 - k * mu
    alpha = np.exp(0.4 * (np.abs(s).mean(axis=1, keepdims=True) - 1))
    np.testing.assert_allclose(dab(x).detach().numpy(), alpha * np.sign(s), rtol=1e-5)

    shared = B.DAB(3, scale="shared")
    with torch.no_grad():
        shared.a.copy_(torch.tensor([0.3, 0.6, -0.2]))
    xi = torch.randn(2, 3, 4, 4)
    _, alpha_shared = shared.threshold_and_scale(xi)
    assert alpha_shared.shape == (2, 1, 1, 1)
    out = shared(xi)
    # one scale per sample: |y| is constant over channels and positions where s != 0
    for n in range(2):
        vals = out[n].abs()[out[n] != 0]
        torch.testing.assert_close(vals, torch.full_like(vals, float(alpha_shared[n].detach())))


def test_sign_weight_and_latent_clipping():
    w = torch.tensor([[0.5, -2.0], [0.0, 1.5]])
    sw = B.get_weight_binarizer("sign")
    np.testing.assert_array_equal(sw(w).numpy(), np.sign(w.numpy()))
    assert sw.clip_latent and not B.get_weight_binarizer("sign", variant="reference").clip_latent

    layer = torch.nn.Linear(2, 2)
    layer.weight_binarizer = sw
    with torch.no_grad():
        layer.weight.copy_(w)
    B.clip_latent_weights(layer)
    np.testing.assert_array_equal(layer.weight.detach().numpy(), np.clip(w.numpy(), -1, 1))


def test_mean_abs_weight_scale_detached_and_clip_ste():
    torch.manual_seed(5)
    w = torch.randn(4, 3, 3, 3) * 0.8
    g = torch.randn_like(w)
    wb = B.get_weight_binarizer("mean_abs")
    w64 = w.double().numpy()
    gamma = np.abs(w64).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(wb(w).numpy(), gamma * np.sign(w64), rtol=1e-6)
    # detached scale: gradient is clip-STE only, not multiplied by gamma
    np.testing.assert_allclose(_grad(wb, w, g), g.numpy() * (np.abs(w64) <= 1), rtol=1e-6)


def test_magnitude_aware_weight_gradient_flows_through_scale():
    torch.manual_seed(6)
    w = torch.randn(2, 5) * 0.5
    g = torch.randn_like(w)
    w64, g64 = w.double().numpy(), g.double().numpy()
    n = w64.shape[1]
    gamma = np.abs(w64).mean(axis=1, keepdims=True)
    # d/dW_i sum_j g_j gamma sign(W_j) = gamma g_i 1[|W_i|<=1] + sign(W_i)/n sum_j g_j sign(W_j)
    expected = gamma * g64 * (np.abs(w64) <= 1) + np.sign(w64) / n * (g64 * np.sign(w64)).sum(
        axis=1, keepdims=True
    )
    np.testing.assert_allclose(
        _grad(B.get_weight_binarizer("magnitude_aware"), w, g), expected, rtol=1e-5
    )


def test_centered_mean_abs_weight():
    torch.manual_seed(7)
    w = torch.randn(3, 6) * 0.3 + 0.2
    w64 = w.double().numpy()
    centred = w64 - w64.mean(axis=1, keepdims=True)
    expected = np.abs(w64).mean(axis=1, keepdims=True) * np.sign(centred)
    np.testing.assert_allclose(
        B.get_weight_binarizer("centered_mean_abs")(w).numpy(), expected, rtol=1e-6
    )


def test_learned_scale_initialises_once_and_learns():
    torch.manual_seed(8)
    w = torch.randn(3, 4)
    wb = B.get_weight_binarizer("learned_scale", 3)
    out = wb(w)
    w64 = w.double().numpy()
    lam = np.abs(w64).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(
        out.detach().numpy(), lam * np.sign(w64 - w64.mean(1, keepdims=True)), rtol=1e-6
    )
    out.sum().backward()
    assert wb.scale.grad is not None and wb.scale.grad.abs().sum() > 0
    # a second forward with other weights must not re-initialise the scale
    before = wb.scale.detach().clone()
    wb(w * 10)
    torch.testing.assert_close(wb.scale.detach(), before)
    # state dict round trip keeps the initialised flag
    fresh = B.get_weight_binarizer("learned_scale", 3)
    fresh.load_state_dict(wb.state_dict())
    torch.testing.assert_close(fresh(w), wb(w))


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_adabin_weight_value_and_ede_backward(variant):
    torch.manual_seed(9)
    w = torch.randn(2, 4, 3, 3) * 0.1  # a depthwise-like filter bank: 4 in-ch per group
    fan_in = 8 * 3 * 3  # what the reference divides by: C_in * kh * kw, ignoring groups
    wb = B.get_weight_binarizer("adabin", variant=variant, fan_in=fan_in)
    w64 = w.double().numpy()
    beta = w64.mean(axis=(1, 2, 3), keepdims=True)
    n = 36 if variant == "paper" else fan_in
    alpha = np.sqrt(((w64 - beta) ** 2).sum(axis=(1, 2, 3), keepdims=True) / n)
    np.testing.assert_allclose(
        wb(w).detach().numpy(), alpha * np.sign(w64 - beta) + beta, rtol=1e-5
    )
    # EDE at the start of training: t = 0.1, k = 10 (and fixed so in the reference)
    k, t = wb.ede_parameters()
    assert (k, t) == pytest.approx((10.0, 0.1))
    if variant == "paper":
        wb.set_progress(1.0)
        assert wb.ede_parameters() == pytest.approx((1.0, 10.0))
        wb.set_progress(0.5)
        assert wb.ede_parameters() == pytest.approx((1.0, 1.0))


def test_ede_sign_backward_matches_formula():
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)
    g = torch.ones_like(x)
    grad = _grad(lambda v: B.ede_sign(v, 3.0, 0.5), x, g)
    expected = 3.0 * 0.5 * (1 - np.tanh(0.5 * x.numpy()) ** 2)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12)
    k, t = B.ede_schedule(0.25, 0.1, 10.0)
    assert t == pytest.approx(0.1 * 10 ** (0.25 * math.log10(100)))
    assert k == pytest.approx(max(1 / t, 1))


def test_set_training_progress_reaches_nested_binarizers():
    model = torch.nn.Sequential(torch.nn.Module())
    model[0].weight_binarizer = B.get_weight_binarizer("adabin")
    B.set_training_progress(model, 1.0)
    assert float(model[0].weight_binarizer.progress) == 1.0


def test_conv_with_binarizers_matches_float64_reference():
    torch.manual_seed(10)
    x = torch.randn(1, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3) * 0.2
    act, wb = B.get_activation_binarizer("approx_sign"), B.get_weight_binarizer("mean_abs")
    y = F.conv2d(act(x), wb(w), padding=1)
    xb = np.sign(x.double().numpy())[0]
    w64 = w.double().numpy()
    wq = np.abs(w64).mean(axis=(1, 2, 3), keepdims=True) * np.sign(w64)
    xp = np.pad(xb, ((0, 0), (1, 1), (1, 1)))
    ref = np.zeros((4, 6, 6))
    for i in range(6):
        for j in range(6):
            ref[:, i, j] = np.einsum("oikl,ikl->o", wq, xp[:, i : i + 3, j : j + 3])
    np.testing.assert_allclose(y[0].detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_dab_on_2d_input_keeps_samples_apart():
    dab = B.DAB(3, channel_dim=-1)
    with torch.no_grad():
        dab.k.fill_(0.5)
        dab.a.fill_(0.2)
    x = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])
    # no positions: mu = x, tau = 0.5 x, s = 0.5 x, m = |s|
    s = 0.5 * x.double().numpy()
    expected = np.exp(0.2 * (np.abs(s) - 1)) * np.sign(s)
    np.testing.assert_allclose(dab(x).detach().numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(dab(x[:1]), dab(x)[:1])


def test_xnor_output_scale_accepts_string_padding():
    x = torch.randn(1, 2, 5, 5)
    k = B.XNORActivation().output_scale(x, (3, 2, 3, 3), padding="same")
    assert k.shape == (1, 1, 5, 5)
