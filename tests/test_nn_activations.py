"""LearnableBias, RPReLU and Maxout against their formulas computed by hand in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bidense.nn import LearnableBias, Maxout, RPReLU


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=_gen(seed)) * 0.5)
            seed += 1


def test_learnable_bias() -> None:
    lb = LearnableBias(3)
    x = torch.randn(2, 3, 4, 4, generator=_gen(0), dtype=torch.float64)
    assert torch.equal(lb.bias.detach(), torch.zeros(3))
    torch.testing.assert_close(lb(x.float()).double(), x, rtol=0, atol=1e-6)
    with torch.no_grad():
        lb.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    xn = x.numpy()
    ref = xn + np.array([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(lb(x.float()).detach().numpy(), ref, rtol=1e-6, atol=1e-6)

    tok = LearnableBias(3, channel_dim=-1)
    with torch.no_grad():
        tok.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    t = torch.randn(2, 5, 3, generator=_gen(1))
    np.testing.assert_allclose(
        tok(t).detach().numpy(), t.numpy() + np.array([1.0, -2.0, 0.5]), rtol=1e-6, atol=1e-6
    )


def _rprelu_np(x: np.ndarray, gamma, beta, zeta, cdim: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[cdim] = -1
    g, b = gamma.reshape(shape), beta.reshape(shape)
    z = 0.0 if zeta is None else zeta.reshape(shape)
    return np.where(x > g, x - g + z, b * (x - g) + z)


@pytest.mark.parametrize("zeta", [True, False])
def test_rprelu_formula(zeta: bool) -> None:
    m = RPReLU(4, zeta=zeta)
    assert torch.equal(m.gamma.detach(), torch.zeros(4))
    assert torch.equal(m.beta.detach(), torch.full((4,), 0.25))
    assert (m.zeta is not None) == zeta
    names = {n for n, _ in m.named_parameters()}
    assert names == ({"gamma", "beta", "zeta"} if zeta else {"gamma", "beta"})
    x = torch.randn(2, 4, 3, 3, generator=_gen(2), dtype=torch.float64)
    # at init it is PReLU with slope 0.25
    torch.testing.assert_close(
        m(x.float()).double(), F.prelu(x, torch.full((4,), 0.25, dtype=torch.float64))
    )
    _randomise(m, 3)
    ref = _rprelu_np(
        x.numpy(),
        m.gamma.detach().double().numpy(),
        m.beta.detach().double().numpy(),
        None if m.zeta is None else m.zeta.detach().double().numpy(),
        1,
    )
    np.testing.assert_allclose(m(x.float()).detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_rprelu_tokens_and_gradient() -> None:
    m = RPReLU(5, channel_dim=-1).double()
    _randomise(m, 7)
    x = torch.randn(2, 3, 5, generator=_gen(8), dtype=torch.float64, requires_grad=True)
    ref = _rprelu_np(
        x.detach().numpy(),
        m.gamma.detach().numpy(),
        m.beta.detach().numpy(),
        m.zeta.detach().numpy(),
        -1,
    )
    np.testing.assert_allclose(m(x).detach().numpy(), ref, rtol=1e-12)
    m(x).sum().backward()
    # d/dx = 1 above the threshold gamma, beta below it; d/dzeta = number of positions
    g = m.gamma.detach().view(1, 1, -1)
    expected = torch.where(x.detach() > g, 1.0, m.beta.detach().view(1, 1, -1).expand_as(x))
    torch.testing.assert_close(x.grad, expected.double())
    torch.testing.assert_close(m.zeta.grad, torch.full((5,), 6.0, dtype=torch.float64))


def test_maxout_formula() -> None:
    m = Maxout(3)
    x = torch.randn(2, 3, 4, 4, generator=_gen(9), dtype=torch.float64)
    xn = x.numpy()
    np.testing.assert_allclose(
        m(x.float()).detach().double().numpy(),
        np.maximum(xn, 0) + 0.25 * np.minimum(xn, 0),
        rtol=1e-6,
        atol=1e-6,
    )
    _randomise(m, 10)
    gp = m.pos_scale.detach().double().numpy().reshape(1, 3, 1, 1)
    gn = m.neg_scale.detach().double().numpy().reshape(1, 3, 1, 1)
    ref = gp * np.maximum(xn, 0) - gn * np.maximum(-xn, 0)
    np.testing.assert_allclose(m(x.float()).detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [LearnableBias, RPReLU, Maxout])
def test_wrong_channels_raise(cls) -> None:
    with pytest.raises(ValueError, match="expected 3 channels"):
        cls(3)(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match="channels >= 1"):
        cls(0)
