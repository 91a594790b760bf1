"""Deployment-friendly training options: +1 padding and DAB's shared scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense.binarize import DAB
from bidense.models import configure_deployment, create_model
from bidense.nn import BiDenseConv2d, BinaryConv2d


def _conv64(xb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid cross-correlation in float64: xb (C, H, W), w (O, C, k, k)."""
    o, _, k, _ = w.shape
    h, wd = xb.shape[1] - k + 1, xb.shape[2] - k + 1
    out = np.zeros((o, h, wd))
    for i in range(h):
        for j in range(wd):
            out[:, i, j] = np.einsum("ockl,ckl->o", w, xb[:, i : i + k, j : j + k])
    return out


def test_one_padding_pads_with_a_plus_one_bit():
    torch.manual_seed(0)
    conv = BinaryConv2d(3, 4, 3, padding=1, act_binarizer="sign", weight_binarizer="sign",
                        pad_mode="one")
    x = torch.randn(1, 3, 5, 6)
    xb = np.pad(np.sign(x[0].double().numpy()), ((0, 0), (1, 1), (1, 1)), constant_values=1.0)
    expected = _conv64(xb, np.sign(conv.weight.detach().double().numpy()))
    np.testing.assert_allclose(conv(x)[0].detach().numpy(), expected, rtol=1e-6)
    zero = BinaryConv2d(3, 4, 3, padding=1, act_binarizer="sign", weight_binarizer="sign")
    zero.load_state_dict(conv.state_dict())
    assert not torch.allclose(zero(x), conv(x))  # the border differs
    assert "pad_mode=one" in repr(conv)
    with pytest.raises(ValueError, match="pad_mode must be one of"):
        BinaryConv2d(3, 4, 3, pad_mode="reflect")


def test_one_padding_with_dab_pads_with_alpha():
    torch.manual_seed(1)
    conv = BinaryConv2d(2, 3, 3, padding=1, act_binarizer="dab", pad_mode="one")
    with torch.no_grad():
        conv.act_binarizer.a.copy_(torch.tensor([0.5, -0.3]))
    x = torch.randn(2, 2, 4, 4) * 2
    tau, alpha = conv.act_binarizer.threshold_and_scale(x)
    tau, alpha = tau.detach(), alpha.detach()
    xb = (alpha * torch.sign(x - tau)).double()
    xp = torch.nn.functional.pad(xb, (1, 1, 1, 1))
    border = torch.ones_like(xp)
    border[..., 1:-1, 1:-1] = 0
    xp = xp + border * alpha.double()
    w = conv.weight_binarizer(conv.weight).detach().double()
    for n in range(2):
        np.testing.assert_allclose(conv(x)[n].detach().numpy(), _conv64(xp[n].numpy(), w.numpy()),
                                   rtol=1e-5, atol=1e-6)
    conv(x).sum().backward()  # differentiable through alpha
    assert conv.act_binarizer.a.grad is not None


def test_configure_deployment_and_create_model_options():
    model = create_model("upernet_convnext_micro", num_classes=3, method="bidense",
                         dab_scale="shared", pad_mode="one")
    dabs = [m for m in model.modules() if isinstance(m, DAB)]
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert dabs and all(d.scale == "shared" for d in dabs)
    assert convs and all(c.pad_mode == "one" for c in convs)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    y_shared = model(x)
    counts = configure_deployment(model, dab_scale="channel", pad_mode="zero")
    assert counts == {"dab": len(dabs), "conv": len(convs)}
    assert not torch.allclose(model(x), y_shared)
    with pytest.raises(ValueError, match="dab_scale must be"):
        configure_deployment(model, dab_scale="global")


def test_bidense_block_shared_scale_is_one_scalar_per_sample():
    block = BiDenseConv2d(4, 4, 3, padding=1, dab_scale="shared")
    _, alpha = block.dab.threshold_and_scale(torch.randn(3, 4, 5, 5))
    assert alpha.shape == (3, 1, 1, 1)
