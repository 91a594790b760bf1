"""CFB (channel_adaptive_bypass) checked element by element against an independent loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense.nn import cfb_matrix, channel_adaptive_bypass, channel_adaptive_bypass_groups


def cfb_loop(x: torch.Tensor, c_out: int, grouping: str = "strided") -> torch.Tensor:
    """Independent per-channel loop written from the text of bidense-method.md §4."""
    c_in = x.shape[1]
    if c_out == c_in:
        return x.clone()
    r, m = c_out // c_in, c_out % c_in
    chans = []
    for _ in range(r):
        for c in range(c_in):
            chans.append(x[:, c])
    if m > 0:
        g = c_in // m
        for j in range(m - 1):
            if grouping == "strided":
                members = [i * (m - 1) + j for i in range(g)]
            else:
                members = [j * g + i for i in range(g)]
            acc = torch.zeros_like(x[:, 0])
            for i in members:
                acc = acc + x[:, i]
            chans.append(acc / len(members))
        rest = list(range(g * (m - 1), c_in))
        acc = torch.zeros_like(x[:, 0])
        for i in rest:
            acc = acc + x[:, i]
        chans.append(acc / len(rest))
    return torch.stack(chans, dim=1)


C = 6
PAIRS = [
    (96, 256),
    (48, 256),
    (384, 96),
    (4 * C, C),
    (C, 4 * C),
    (C, C + 1),
    (C, 1),
    (8, 4),
    (8, 3),
    (8, 5),
    (8, 12),
    (1536, 768),
    (C, C),
    (1, 5),
    (7, 2),
    (5, 2 * 5 + 1),
]


def _x(c_in: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, c_in, 2, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("grouping", ["strided", "contiguous"])
@pytest.mark.parametrize("c_in,c_out", PAIRS)
def test_cfb_matches_loop(c_in: int, c_out: int, grouping: str) -> None:
    x = _x(c_in, seed=c_in * 1000 + c_out)
    y = channel_adaptive_bypass(x, c_out, grouping=grouping)
    assert y.shape == (2, c_out, 2, 3)
    torch.testing.assert_close(y, cfb_loop(x, c_out, grouping), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grouping", ["strided", "contiguous"])
@pytest.mark.parametrize("c_in,c_out", PAIRS)
def test_cfb_matrix_matches_loop(c_in: int, c_out: int, grouping: str) -> None:
    x = _x(c_in, seed=7)
    mat = torch.from_numpy(np.array(cfb_matrix(c_in, c_out, grouping)))
    assert mat.shape == (c_out, c_in)
    torch.testing.assert_close(mat.sum(dim=1), torch.ones(c_out, dtype=torch.float64))
    y = torch.einsum("oi,bihw->bohw", mat, x)
    torch.testing.assert_close(y, cfb_loop(x, c_out, grouping), rtol=1e-12, atol=1e-12)


def _expect(x: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    return torch.stack([x[:, g].mean(dim=1) for g in groups], dim=1)


# Hand-written from the worked-example table of bidense-method.md §4.
WORKED = {
    (8, 4): [[0, 3], [1, 4], [2, 5], [6, 7]],
    (8, 3): [[0, 2], [1, 3], [4, 5, 6, 7]],
    (8, 5): [[0], [1], [2], [3], [4, 5, 6, 7]],
    (8, 12): [[i] for i in range(8)] + [[0, 3], [1, 4], [2, 5], [6, 7]],
    (6, 1): [[0, 1, 2, 3, 4, 5]],
    (6, 7): [[i] for i in range(6)] + [[0, 1, 2, 3, 4, 5]],
}


@pytest.mark.parametrize("pair", sorted(WORKED))
def test_cfb_worked_examples(pair: tuple[int, int]) -> None:
    c_in, c_out = pair
    x = _x(c_in, seed=3)
    y = channel_adaptive_bypass(x, c_out)
    torch.testing.assert_close(y, _expect(x, WORKED[pair]), rtol=1e-12, atol=1e-12)
    assert [list(g) for g in channel_adaptive_bypass_groups(c_in, c_out)] == WORKED[pair]


def test_cfb_worked_examples_large() -> None:
    # 96 -> 256: two tiles, then x_0..x_62 copied, then mean(x_63..x_95)
    x = _x(96, seed=4)
    y = channel_adaptive_bypass(x, 256)
    torch.testing.assert_close(y[:, :96], x)
    torch.testing.assert_close(y[:, 96:192], x)
    torch.testing.assert_close(y[:, 192:255], x[:, :63])
    torch.testing.assert_close(y[:, 255], x[:, 63:96].mean(dim=1))
    # 48 -> 256: five tiles, then j < 15 averages {x_j, x_j+15, x_j+30}, last averages x_45..47
    x = _x(48, seed=5)
    y = channel_adaptive_bypass(x, 256)
    for t in range(5):
        torch.testing.assert_close(y[:, 48 * t : 48 * (t + 1)], x)
    for j in range(15):
        torch.testing.assert_close(y[:, 240 + j], (x[:, j] + x[:, j + 15] + x[:, j + 30]) / 3)
    torch.testing.assert_close(y[:, 255], x[:, 45:48].mean(dim=1))
    # 1536 -> 768: g = 2, j < 767 = mean(x_j, x_j+767), last = mean(x_1534, x_1535)
    x = _x(1536, seed=6)
    y = channel_adaptive_bypass(x, 768)
    torch.testing.assert_close(y[:, :767], (x[:, :767] + x[:, 767:1534]) / 2)
    torch.testing.assert_close(y[:, 767], (x[:, 1534] + x[:, 1535]) / 2)
    # 4C -> C: j < C-1 averages x_j + k(C-1), k < 4; last averages x_4C-4..4C-1
    x = _x(4 * C, seed=8)
    y = channel_adaptive_bypass(x, C)
    for j in range(C - 1):
        ref = sum(x[:, j + k * (C - 1)] for k in range(4)) / 4
        torch.testing.assert_close(y[:, j], ref)
    torch.testing.assert_close(y[:, C - 1], x[:, 4 * C - 4 :].mean(dim=1))
    # C -> 4C is block repeat, not interleave
    x = _x(C, seed=9)
    y = channel_adaptive_bypass(x, 4 * C)
    torch.testing.assert_close(y, torch.cat([x, x, x, x], dim=1))


def test_cfb_contiguous_worked_examples() -> None:
    x = _x(8, seed=10)
    torch.testing.assert_close(
        channel_adaptive_bypass(x, 4, grouping="contiguous"),
        _expect(x, [[0, 1], [2, 3], [4, 5], [6, 7]]),
    )
    torch.testing.assert_close(
        channel_adaptive_bypass(x, 3, grouping="contiguous"),
        _expect(x, [[0, 1], [2, 3], [4, 5, 6, 7]]),
    )


def test_cfb_identity_for_equal_widths() -> None:
    x = _x(5)
    assert torch.equal(channel_adaptive_bypass(x, 5), x)
    assert torch.equal(channel_adaptive_bypass(x, 5, grouping="contiguous"), x)


@pytest.mark.parametrize("grouping", ["strided", "contiguous"])
def test_cfb_token_layout(grouping: str) -> None:
    g = torch.Generator().manual_seed(11)
    tokens = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)  # (B, N, C)
    y = channel_adaptive_bypass(tokens, 9, grouping=grouping, channel_dim=-1)
    assert y.shape == (2, 5, 9)
    ref = cfb_loop(tokens.transpose(1, 2), 9, grouping).transpose(1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c_in,c_out", [(5, 12), (12, 5), (5, 1), (5, 6), (4, 4), (7, 3)])
def test_cfb_gradient(c_in: int, c_out: int) -> None:
    x = _x(c_in, seed=12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: channel_adaptive_bypass(t, c_out), (x,))
    up = torch.randn(2, c_out, 2, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad((channel_adaptive_bypass(x, c_out) * up).sum(), x)
    mat = torch.from_numpy(np.array(cfb_matrix(c_in, c_out)))
    torch.testing.assert_close(grad, torch.einsum("oi,bohw->bihw", mat, up))


def test_cfb_bad_input() -> None:
    x = _x(4)
    with pytest.raises(ValueError, match="positive"):
        channel_adaptive_bypass(x, 0)
    with pytest.raises(ValueError, match="grouping"):
        channel_adaptive_bypass(x, 3, grouping="interleave")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel_dim"):
        channel_adaptive_bypass(x, 3, channel_dim=4)


def test_cfb_matrix_is_cached_and_read_only() -> None:
    a = cfb_matrix(8, 3)
    assert a is cfb_matrix(8, 3)
    with pytest.raises(ValueError):
        a[0, 0] = 5.0
