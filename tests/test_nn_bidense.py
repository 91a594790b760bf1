"""BiDense blocks: values by hand in float64, shapes, train/eval, Sequential and state_dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense.nn import (
    BiDenseConv2d,
    BiDenseConvTranspose2d,
    BiDenseDown,
    BiDenseLinear,
    BiDenseTransition,
    BiDenseUp,
    LearnableBias,
    RPReLU,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cfb_ref(x: torch.Tensor, c_out: int, contiguous: bool = False) -> torch.Tensor:
    """Independent CFB (bidense-method.md §4) on dim 1, written as a loop over output channels."""
    c_in = x.shape[1]
    r, m = divmod(c_out, c_in)
    groups = [[j % c_in] for j in range(r * c_in)]
    if m:
        g = c_in // m
        for j in range(m - 1):
            groups.append([j * g + i if contiguous else i * (m - 1) + j for i in range(g)])
        groups.append(list(range(g * (m - 1), c_in)))
    return torch.stack([sum(x[:, i] for i in grp) / len(grp) for grp in groups], dim=1)


def _randomise_block(block: nn.Module, seed: int) -> None:
    """Non-trivial DAB parameters, BN affine and running stats, latent weights."""
    gen = _gen(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith(("act_binarizer.k", "act_binarizer.a")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith("act_binarizer.b"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif name.endswith("weight") and p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                p.copy_(
                    torch.randn(p.shape, generator=gen) * 0.2
                    + (1.0 if "norm.weight" in name else 0.0)
                )
        for name, buf in block.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)


def _dab(x: torch.Tensor, dab: nn.Module) -> torch.Tensor:
    """DAB forward by hand (bidense-method.md §3), float64, per sample and channel."""
    k, b, a = (getattr(dab, n).detach().double().view(1, -1, 1, 1) for n in ("k", "b", "a"))
    mu = x.mean(dim=(2, 3), keepdim=True)
    s = x - (k * mu + b)
    alpha = torch.exp(a * (s.abs().mean(dim=(2, 3), keepdim=True) - 1))
    return alpha * torch.sign(s)


def _bn_eval(y: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    v = lambda t: t.detach().double().view(1, -1, 1, 1)  # noqa: E731
    return (y - v(bn.running_mean)) / torch.sqrt(v(bn.running_var) + bn.eps) * v(bn.weight) + v(
        bn.bias
    )


def _wb(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().double()
    return w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.sign(w)


@pytest.mark.parametrize(
    "cin,cout,k,padding,groups,bypass",
    [
        (4, 16, 1, 0, 1, True),
        (16, 4, 1, 0, 1, True),
        (6, 6, 7, 3, 6, True),
        (5, 7, 3, 1, 1, True),
        (4, 6, 3, 1, 2, False),
        (6, 1, 3, 1, 1, True),
    ],
)
def test_bidense_conv2d_by_hand(cin, cout, k, padding, groups, bypass) -> None:
    block = BiDenseConv2d(cin, cout, k, padding=padding, groups=groups, bypass=bypass)
    _randomise_block(block, seed=cin * 31 + cout)
    block.eval()
    x = torch.randn(2, cin, 6, 5, generator=_gen(1), dtype=torch.float64)
    xb = _dab(x, block.conv.act_binarizer)
    ref = _bn_eval(F.conv2d(xb, _wb(block.conv.weight), padding=padding, groups=groups), block.norm)
    if bypass:
        ref = ref + _cfb_ref(x, cout)
    torch.testing.assert_close(block(x.float()).double(), ref, rtol=1e-4, atol=1e-5)


def test_bidense_conv_transpose2d_by_hand() -> None:
    block = BiDenseConvTranspose2d(4, 6, 3, padding=1)
    _randomise_block(block, seed=2)
    block.eval()
    x = torch.randn(2, 4, 5, 5, generator=_gen(3), dtype=torch.float64)
    w = block.conv.weight.detach().double()
    wb = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.sign(w)  # per input channel
    ref = _bn_eval(F.conv_transpose2d(_dab(x, block.conv.act_binarizer), wb, padding=1), block.norm)
    ref = ref + _cfb_ref(x, 6)
    torch.testing.assert_close(block(x.float()).double(), ref, rtol=1e-4, atol=1e-5)


def test_bypass_with_resolution_change_raises() -> None:
    with pytest.raises(ValueError, match="bypass=True"):
        BiDenseConv2d(4, 8, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match="bypass=True"):
        BiDenseConv2d(4, 8, 3)  # padding 0 shrinks the map
    with pytest.raises(ValueError, match="bypass=True"):
        BiDenseConvTranspose2d(4, 8, 2, stride=2)
    BiDenseConv2d(4, 8, 3, stride=2, padding=1, bypass=False)  # allowed
    BiDenseConv2d(4, 8, 3, padding=2, dilation=2)  # size-preserving dilated conv
    BiDenseConv2d(4, 8, 5, padding="same")


@pytest.mark.parametrize("cin,cout", [(8, 16), (16, 8), (6, 6), (4, 9), (5, 1)])
@pytest.mark.parametrize("hw", [(8, 8), (7, 10)])
def test_down_and_transition(cin: int, cout: int, hw: tuple[int, int]) -> None:
    x = torch.randn(2, cin, *hw, generator=_gen(4), dtype=torch.float64)
    down = BiDenseDown(cin, cout).double().eval()
    y = down(x)
    assert y.shape == (2, cout, (hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1)
    assert down.conv.conv.stride == (2, 2) and down.conv.conv.kernel_size == (3, 3)
    assert not down.conv.bypass
    # bypass = CFB of a 3x3/2 average pool that counts the zero padding
    pooled = F.conv2d(
        F.pad(x, (1, 1, 1, 1)).reshape(-1, 1, hw[0] + 2, hw[1] + 2),
        torch.full((1, 1, 3, 3), 1 / 9, dtype=torch.float64),
        stride=2,
    ).reshape(2, cin, *y.shape[-2:])
    torch.testing.assert_close(y - down.conv(x), _cfb_ref(pooled, cout))

    trans = BiDenseTransition(cin, cout).double().eval()
    y = trans(x)
    h2, w2 = hw[0] // 2, hw[1] // 2
    assert y.shape == (2, cout, h2, w2)
    assert trans.conv.conv.kernel_size == (2, 2) and trans.conv.conv.stride == (2, 2)
    blocks = x[..., : 2 * h2, : 2 * w2].reshape(2, cin, h2, 2, w2, 2).mean(dim=(3, 5))
    torch.testing.assert_close(y - trans.conv(x), _cfb_ref(blocks, cout))


@pytest.mark.parametrize("cin,cout", [(16, 8), (8, 16), (6, 6), (4, 9), (3, 1)])
@pytest.mark.parametrize("scale", [2, 4])
def test_up(cin: int, cout: int, scale: int) -> None:
    x = torch.randn(2, cin, 3, 5, generator=_gen(5), dtype=torch.float64)
    up = BiDenseUp(cin, cout, scale).double().eval()
    y = up(x)
    assert y.shape == (2, cout, 3 * scale, 5 * scale)
    assert up.conv.conv.kernel_size == (scale, scale) and up.conv.conv.stride == (scale, scale)
    nearest = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    torch.testing.assert_close(y - up.conv(x), _cfb_ref(nearest, cout))
    with pytest.raises(ValueError, match="scale"):
        BiDenseUp(cin, cout, 0)


def test_train_eval_behaviour() -> None:
    block = BiDenseConv2d(4, 8, 3, padding=1)
    _randomise_block(block, seed=6)
    x = torch.randn(3, 4, 5, 5, generator=_gen(7))
    dab = block.conv.act_binarizer

    block.train()
    d_train = dab(x)
    rm, nbt = block.norm.running_mean.clone(), int(block.norm.num_batches_tracked)
    block(x)
    assert not torch.allclose(block.norm.running_mean, rm)
    assert int(block.norm.num_batches_tracked) == nbt + 1

    block.eval()
    torch.testing.assert_close(dab(x), d_train, rtol=0, atol=0)  # DAB has no running state
    rm = block.norm.running_mean.clone()
    y = block(x)
    assert torch.equal(block.norm.running_mean, rm)
    # per-sample statistics: in eval a sample's output does not depend on the rest of the batch
    torch.testing.assert_close(block(x[1:2]), y[1:2])
    block.train()
    assert not torch.allclose(block(x)[1:2], y[1:2], atol=1e-4)  # BN batch stats in train


def test_gradients_reach_parameters_and_input() -> None:
    block = BiDenseDown(4, 6)
    _randomise_block(block, seed=8)
    x = torch.randn(2, 4, 6, 6, generator=_gen(9), requires_grad=True)
    block(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dab_scale_option_and_bits() -> None:
    block = BiDenseConv2d(4, 4, 3, padding=1, dab_scale="shared")
    assert block.dab.scale == "shared"
    assert block.dab is block.conv.act_binarizer
    for m in (
        block,
        BiDenseUp(4, 2, 2),
        BiDenseDown(4, 8),
        BiDenseTransition(4, 8),
        BiDenseLinear(4, 8),
    ):
        assert (m.weight_bits, m.act_bits) == (1, 1)
        assert "w1a1" in repr(m).splitlines()[1], repr(m)  # the block's own line
    assert "bypass=True" in repr(block)


def test_bidense_linear_by_hand() -> None:
    lin = BiDenseLinear(8, 5)
    gen = _gen(10)
    with torch.no_grad():
        for p in lin.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    x = torch.randn(2, 3, 8, generator=_gen(11), dtype=torch.float64)
    thr = lin.linear.act_binarizer.threshold.detach().double()
    w = lin.linear.weight.detach().double()
    wb = w.abs().mean(dim=1, keepdim=True) * torch.sign(w - w.mean(dim=1, keepdim=True))
    y = torch.sign(x - thr) @ wb.T + lin.linear.bias.detach().double()
    mu, var = y.mean(-1, keepdim=True), y.var(-1, unbiased=False, keepdim=True)
    y = (y - mu) / torch.sqrt(var + 1e-6) * lin.norm.weight.detach().double()
    y = y + lin.norm.bias.detach().double()
    y = y + _cfb_ref(x.transpose(1, 2), 5, contiguous=True).transpose(1, 2)
    torch.testing.assert_close(lin(x.float()).double(), y, rtol=1e-4, atol=1e-5)
    no_bypass = BiDenseLinear(8, 5, bypass=False)
    assert no_bypass.norm is None and no_bypass(x.float()).shape == (2, 3, 5)


def test_sequential_and_state_dict_round_trip() -> None:
    def build(seed: int) -> nn.Sequential:
        torch.manual_seed(seed)
        return nn.Sequential(
            BiDenseConv2d(3, 8, 3, padding=1),
            LearnableBias(8),
            RPReLU(8),
            BiDenseTransition(8, 12),
            BiDenseDown(12, 6),
            BiDenseUp(6, 4, 4),
            BiDenseConvTranspose2d(4, 4, 3, padding=1, dab_scale="shared"),
        )

    a, b = build(0), build(1)
    _randomise_block(a, seed=12)
    x = torch.randn(2, 3, 8, 8, generator=_gen(13))
    a.train()
    a(x)
    a.eval()
    b.eval()
    ya = a(x)
    assert ya.shape == (2, 4, 8, 8)
    assert not torch.allclose(ya, b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), ya, rtol=0, atol=0)
    keys = set(a.state_dict())
    assert {
        "0.conv.weight",
        "0.conv.act_binarizer.k",
        "0.conv.act_binarizer.b",
        "0.conv.act_binarizer.a",
        "0.norm.running_mean",
    } <= keys
