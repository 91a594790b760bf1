"""BinaryConv2d / BinaryConvTranspose2d / BinaryLinear against float64 computations by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense.binarize import DAB, get_activation_binarizer
from bidense.nn import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _approx_sign_grad(x: torch.Tensor) -> torch.Tensor:
    """Bi-Real ApproxSign derivative: 2+2x on [-1,0), 2-2x on [0,1), 0 elsewhere."""
    d = torch.zeros_like(x)
    neg = (x >= -1) & (x < 0)
    pos = (x >= 0) & (x < 1)
    d[neg] = 2 + 2 * x[neg]
    d[pos] = 2 - 2 * x[pos]
    return d


def _set_weight(layer: nn.Module, seed: int, scale: float = 0.8) -> None:
    """Spread latent weights so some lie outside [-1, 1] (clip-STE zeroes those)."""
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=_gen(seed)) * scale)
        flat = layer.weight.view(-1)
        flat[0], flat[-1] = 1.7, -1.4


CONV_CASES = [
    dict(cin=4, cout=6, k=3, stride=1, padding=1, dilation=1, groups=1),
    dict(cin=4, cout=6, k=3, stride=2, padding=1, dilation=1, groups=2),
    dict(cin=3, cout=5, k=3, stride=1, padding=2, dilation=2, groups=1),
    dict(cin=4, cout=4, k=3, stride=1, padding=1, dilation=1, groups=4),
    dict(cin=3, cout=2, k=1, stride=1, padding=0, dilation=1, groups=1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_binary_conv2d_forward_and_backward(case: dict) -> None:
    layer = BinaryConv2d(
        case["cin"],
        case["cout"],
        case["k"],
        stride=case["stride"],
        padding=case["padding"],
        dilation=case["dilation"],
        groups=case["groups"],
    )
    _set_weight(layer, seed=1)
    x = torch.randn(2, case["cin"], 7, 6, generator=_gen(2)).requires_grad_(True)
    y = layer(x)

    # independent float64 computation: sign activations, gamma_o * sign(W_o) with gamma = mean|W_o|
    xd = x.detach().double()
    w = layer.weight.detach().double()
    xs = torch.sign(xd).requires_grad_(True)
    gamma = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    wb = (gamma * torch.sign(w)).requires_grad_(True)
    ref = F.conv2d(xs, wb, None, case["stride"], case["padding"], case["dilation"], case["groups"])
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6)

    up = torch.randn(ref.shape, generator=_gen(3), dtype=torch.float64)
    y.backward(up.float())
    g_xs, g_wb = torch.autograd.grad((ref * up).sum(), (xs, wb))
    # ApproxSign surrogate for activations, clip-STE (not scaled by gamma) for weights
    torch.testing.assert_close(x.grad.double(), g_xs * _approx_sign_grad(xd), rtol=1e-5, atol=1e-6)
    exp_gw = g_wb * (w.abs() <= 1).double()
    torch.testing.assert_close(layer.weight.grad.double(), exp_gw, rtol=1e-5, atol=1e-6)
    assert (w.abs() > 1).any(), "test weights must exercise the clip"
    assert (layer.weight.grad[w.abs() > 1] == 0).all()


def _dab_by_hand(
    x: torch.Tensor, k: torch.Tensor, b: torch.Tensor, a: torch.Tensor
) -> torch.Tensor:
    """BiDense DAB forward in float64 (bidense-method.md §3), per sample and channel."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    tau = k.view(1, -1, 1, 1) * mu + b.view(1, -1, 1, 1)
    s = x - tau
    m = s.abs().mean(dim=(2, 3), keepdim=True)
    alpha = torch.exp(a.view(1, -1, 1, 1) * (m - 1))
    return alpha * torch.sign(s)


def test_zero_padding_after_binarization_with_dab() -> None:
    # With a non-zero threshold, padding *before* DAB would give -alpha*sign(tau) at the border;
    # the layer must pad the binarized tensor with zeros instead.
    dab = DAB(3)
    with torch.no_grad():
        dab.k.copy_(torch.tensor([0.3, -0.5, 1.0]))
        dab.b.copy_(torch.tensor([0.4, -0.6, 0.2]))
        dab.a.copy_(torch.tensor([0.5, -0.3, 0.8]))
    layer = BinaryConv2d(3, 4, 3, padding=1, act_binarizer=dab)
    assert layer.act_binarizer is dab
    _set_weight(layer, seed=4)
    x = torch.randn(2, 3, 5, 5, generator=_gen(5)) + 0.3
    w = layer.weight.detach().double()
    wb = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.sign(w)
    xb = _dab_by_hand(x.double(), dab.k.double(), dab.b.double(), dab.a.double())
    ref = F.conv2d(xb, wb, padding=1)
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-6)
    wrong = F.conv2d(
        _dab_by_hand(
            F.pad(x.double(), (1, 1, 1, 1)), dab.k.double(), dab.b.double(), dab.a.double()
        ),
        wb,
    )
    assert not torch.allclose(wrong, ref, atol=1e-3)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_binary_conv2d_calls_xnor_output_scale(stride: int, padding: int) -> None:
    layer = BinaryConv2d(3, 4, 3, stride=stride, padding=padding, bias=True, act_binarizer="xnor")
    _set_weight(layer, seed=6)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    x = torch.randn(2, 3, 6, 6, generator=_gen(7), dtype=torch.float64)
    w = layer.weight.detach().double()
    wb = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.sign(w)
    # XNOR-Net: K = box average of A = mean_c |I_c| over each window (zero padded)
    a_map = x.abs().mean(dim=1, keepdim=True)
    k_map = F.avg_pool2d(a_map, 3, stride, padding, count_include_pad=True)
    ref = F.conv2d(torch.sign(x), wb, None, stride, padding) * k_map
    ref = ref + layer.bias.detach().double().view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x.float()).double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "cin,cout,k,stride,padding,output_padding,groups",
    [(4, 6, 2, 2, 0, 0, 1), (4, 6, 3, 2, 1, 1, 2), (3, 5, 4, 4, 0, 0, 1), (6, 3, 3, 1, 1, 0, 3)],
)
def test_binary_conv_transpose2d_per_input_channel_scale(
    cin: int, cout: int, k: int, stride: int, padding: int, output_padding: int, groups: int
) -> None:
    layer = BinaryConvTranspose2d(
        cin, cout, k, stride, padding, output_padding=output_padding, groups=groups
    )
    assert layer.weight.shape == (cin, cout // groups, k, k)
    _set_weight(layer, seed=8)
    with torch.no_grad():  # very different magnitudes per input channel
        layer.weight.mul_(torch.arange(1, cin + 1, dtype=torch.float32).view(-1, 1, 1, 1) / cin)
    x = torch.randn(2, cin, 4, 5, generator=_gen(9)).requires_grad_(True)
    y = layer(x)
    w = layer.weight.detach().double()
    gamma_in = w.abs().mean(dim=(1, 2, 3), keepdim=True)  # one scale per dim 0 = input channel
    wb = (gamma_in * torch.sign(w)).requires_grad_(True)
    xs = torch.sign(x.detach().double()).requires_grad_(True)
    ref = F.conv_transpose2d(xs, wb, None, stride, padding, output_padding, groups)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6)
    h_out = (4 - 1) * stride - 2 * padding + k + output_padding
    assert y.shape == (2, cout, h_out, (5 - 1) * stride - 2 * padding + k + output_padding)
    torch.testing.assert_close(layer.weight_binarizer(layer.weight).double(), wb.detach())

    # a per-output-channel scale would give a different result (so the check above can fail)
    if cout // groups > 1:
        gamma_out = w.abs().mean(dim=(0, 2, 3), keepdim=True)
        other = F.conv_transpose2d(
            xs.detach(), gamma_out * torch.sign(w), None, stride, padding, output_padding, groups
        )
        assert not torch.allclose(other, ref, rtol=1e-3)

    up = torch.randn(ref.shape, generator=_gen(10), dtype=torch.float64)
    y.backward(up.float())
    g_xs, g_wb = torch.autograd.grad((ref * up).sum(), (xs, wb))
    torch.testing.assert_close(
        x.grad.double(), g_xs * _approx_sign_grad(x.detach().double()), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        layer.weight.grad.double(), g_wb * (w.abs() <= 1).double(), rtol=1e-5, atol=1e-6
    )


def test_binary_conv_transpose2d_output_size() -> None:
    layer = BinaryConvTranspose2d(3, 2, 3, 2, 1)
    x = torch.randn(1, 3, 4, 4, generator=_gen(11))
    assert layer(x).shape[-2:] == (7, 7)
    assert layer(x, output_size=[8, 8]).shape[-2:] == (8, 8)


def test_binary_linear_tokens() -> None:
    layer = BinaryLinear(6, 5, bias=True)
    _set_weight(layer, seed=12)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-0.5, 0.5, 5))
    x = torch.randn(2, 7, 6, generator=_gen(13)).requires_grad_(True)
    y = layer(x)
    w = layer.weight.detach().double()
    wb = (w.abs().mean(dim=1, keepdim=True) * torch.sign(w)).requires_grad_(True)
    xs = torch.sign(x.detach().double()).requires_grad_(True)
    ref = xs @ wb.T + layer.bias.detach().double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6)
    up = torch.randn(ref.shape, generator=_gen(14), dtype=torch.float64)
    y.backward(up.float())
    g_xs, g_wb = torch.autograd.grad((ref * up).sum(), (xs, wb))
    torch.testing.assert_close(
        x.grad.double(), g_xs * _approx_sign_grad(x.detach().double()), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        layer.weight.grad.double(), g_wb * (w.abs() <= 1).double(), rtol=1e-5, atol=1e-6
    )


def test_binary_linear_per_channel_binarizer_uses_last_dim() -> None:
    layer = BinaryLinear(4, 3, act_binarizer="rsign")
    thr = torch.tensor([0.5, -0.5, 0.25, 0.0])
    with torch.no_grad():
        layer.act_binarizer.threshold.copy_(thr)
    _set_weight(layer, seed=15, scale=0.3)
    x = torch.randn(2, 5, 4, generator=_gen(16), dtype=torch.float64)
    w = layer.weight.detach().double()
    wb = w.abs().mean(dim=1, keepdim=True) * torch.sign(w)
    ref = torch.sign(x - thr.double()) @ wb.T
    torch.testing.assert_close(layer(x.float()).double(), ref, rtol=1e-5, atol=1e-6)


def test_binary_linear_xnor_scale_per_token() -> None:
    layer = BinaryLinear(4, 3, act_binarizer="xnor")
    _set_weight(layer, seed=17, scale=0.3)
    x = torch.randn(2, 5, 4, generator=_gen(18), dtype=torch.float64)
    w = layer.weight.detach().double()
    wb = w.abs().mean(dim=1, keepdim=True) * torch.sign(w)
    ref = (torch.sign(x) @ wb.T) * x.abs().mean(dim=-1, keepdim=True)
    torch.testing.assert_close(layer(x.float()).double(), ref, rtol=1e-5, atol=1e-6)


def test_latent_weight_init_std() -> None:
    for layer in (
        BinaryConv2d(32, 64, 3),
        BinaryConvTranspose2d(64, 32, 3),
        BinaryLinear(128, 256),
    ):
        std = layer.weight.detach().double().std().item()
        assert 0.9e-3 < std < 1.1e-3, (type(layer).__name__, std)
        assert abs(layer.weight.detach().double().mean().item()) < 1e-4


def test_bits_and_repr() -> None:
    layer = BinaryConv2d(3, 4, 3)
    assert (layer.weight_bits, layer.act_bits) == (1, 1)
    assert "w1a1" in repr(layer)
    fp_act = BinaryConv2d(3, 4, 3, act_binarizer=None)
    assert (fp_act.weight_bits, fp_act.act_bits) == (1, 32)
    assert "w1a32" in repr(fp_act)
    fp_w = BinaryConvTranspose2d(3, 4, 2, 2, weight_binarizer="identity")
    assert "w32a1" in repr(fp_w)
    fp = BinaryLinear(3, 4, act_binarizer="fp32", weight_binarizer="fp32")
    assert "w32a32" in repr(fp) and fp.weight_bits == 32 and fp.act_bits == 32
    # a full-precision "binary" layer is exactly an ordinary conv
    x = torch.randn(2, 3, 5, 5, generator=_gen(19))
    fp_conv = BinaryConv2d(3, 4, 3, padding=1, act_binarizer=None, weight_binarizer=None)
    torch.testing.assert_close(fp_conv(x), F.conv2d(x, fp_conv.weight, padding=1))


def test_binarizer_instance_and_names() -> None:
    act = get_activation_binarizer("sign")
    layer = BinaryConv2d(3, 4, 3, act_binarizer=act, weight_binarizer="sign")
    assert layer.act_binarizer is act
    assert type(layer.weight_binarizer).__name__ == "SignWeight"
    with pytest.raises(ValueError, match="unknown"):
        BinaryConv2d(3, 4, 3, act_binarizer="no_such_binarizer")


def test_bad_input_shapes() -> None:
    with pytest.raises(ValueError, match="expects input"):
        BinaryConv2d(3, 4, 3)(torch.randn(2, 5, 6, 6))
    with pytest.raises(ValueError, match="expects input"):
        BinaryConv2d(3, 4, 3)(torch.randn(3, 6, 6))
    with pytest.raises(ValueError, match="expects input"):
        BinaryConvTranspose2d(3, 4, 2, 2)(torch.randn(2, 4, 6, 6))
    with pytest.raises(ValueError, match="expects input"):
        BinaryLinear(3, 4)(torch.randn(2, 5, 4))


def test_sequential_and_state_dict_round_trip() -> None:
    def build(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        return nn.Sequential(
            BinaryConv2d(3, 8, 3, padding=1, act_binarizer="rsign", bias=True),
            nn.BatchNorm2d(8),
            BinaryConvTranspose2d(8, 4, 2, 2, act_binarizer="bisrnet"),
            BinaryConv2d(4, 2, 3, weight_binarizer="learned_scale"),
        )

    a, b = build(0), build(1)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn(p.shape, generator=_gen(20)) * 0.1)
    x = torch.randn(2, 3, 6, 6, generator=_gen(21))
    a.train()
    a(x)  # moves BN running stats and initialises the learned scale
    a.eval()
    b.eval()
    ya = a(x)
    assert not torch.allclose(ya, b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), ya, rtol=0, atol=0)
