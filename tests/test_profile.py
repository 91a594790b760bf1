"""Tests of bidense.profile: exact counts on hand-countable models, computed by hand here."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bidense.nn import BiDenseConv2d, BinaryConv2d, BinaryConvTranspose2d, BinaryLinear
from bidense.profile import TOTAL_KEYS, Summary, parse_input_shape, summarize


def _row(summary: Summary, name: str) -> dict:
    matches = [r for r in summary.rows if r["name"] == name]
    assert len(matches) == 1, [r["name"] for r in summary.rows]
    return matches[0]


def _flop_counter_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Independent MAC count: FlopCounterMode reports 2 FLOPs per MAC for conv/mm/bmm."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.randn(*shape))
    return fc.get_total_flops() // 2


# ---------------------------------------------------------------- single layers, by hand
def test_single_conv2d_strided_with_bias() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
    s = summarize(conv, (2, 3, 9, 9))
    # out 2x8x5x5 (floor((9+2-3)/2)+1 = 5); each output sums 3 channels x 9 taps
    macs = 2 * 8 * 5 * 5 * 3 * 9
    row = _row(s, "(model)")
    assert row["output_shape"] == [2, 8, 5, 5]
    assert row["fp_macs"] == macs == s.totals["flops"]
    assert row["binary_macs"] == 0 and s.totals["bops"] == 0
    assert row["ops"] == macs
    assert row["elementwise"] == 2 * 8 * 5 * 5  # the bias add
    assert row["fp_params"] == 8 * 3 * 9 + 8 and row["binary_params"] == 0
    assert row["memory_bytes"] == (8 * 3 * 9 + 8) * 4
    assert (row["weight_bits"], row["act_bits"]) == (32, 32)
    assert s.totals["bits"] == 32 * (8 * 3 * 9 + 8)
    assert macs == _flop_counter_macs(conv, (2, 3, 9, 9))


def test_dilated_conv_counts_output_positions() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False)
    s = summarize(conv, (1, 4, 6, 6))
    assert s.totals["flops"] == 4 * 6 * 6 * 4 * 9
    assert s.totals["elementwise"] == 0


def test_single_binary_conv_grouped_strided() -> None:
    conv = BinaryConv2d(8, 12, 3, stride=2, padding=1, groups=4)
    s = summarize(conv, (2, 8, 7, 7))
    # out 2x12x4x4; each output sums C_in/g = 2 channels x 9 taps
    macs = 2 * 12 * 4 * 4 * 2 * 9
    row = _row(s, "(model)")
    assert row["output_shape"] == [2, 12, 4, 4]
    assert row["binary_macs"] == macs and row["bops"] == macs
    assert row["fp_macs"] == 0
    assert row["ops"] == pytest.approx(macs / 64)
    assert row["binary_params"] == 12 * 2 * 9 and row["fp_params"] == 0
    assert row["memory_bytes"] == pytest.approx(12 * 2 * 9 / 8)
    assert (row["weight_bits"], row["act_bits"]) == (1, 1)
    assert s.totals["binary_mac_share"] == 1.0
    # sign of the input: one op per input element; weight binarization is offline
    assert row["elementwise"] == 2 * 8 * 7 * 7
    assert any("offline" in n for n in s.notes)


def test_binary_weight_fp_activation_counts_as_fp() -> None:
    conv = BinaryConv2d(4, 6, 3, padding=1, act_binarizer="identity")
    s = summarize(conv, (1, 4, 5, 5))
    macs = 6 * 5 * 5 * 4 * 9
    row = _row(s, "(model)")
    assert (row["weight_bits"], row["act_bits"]) == (1, 32)
    assert row["fp_macs"] == macs and row["binary_macs"] == 0
    assert row["binary_params"] == 6 * 4 * 9  # the weights are still stored in 1 bit


def test_transposed_conv_fp_and_binary() -> None:
    tconv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                               bias=False)
    s = summarize(tconv, (1, 4, 5, 5))
    # every input element meets (C_out/g = 3) x 9 weights
    macs = 1 * 4 * 5 * 5 * 3 * 9
    assert _row(s, "(model)")["output_shape"] == [1, 6, 10, 10]
    assert s.totals["flops"] == macs
    assert macs == _flop_counter_macs(tconv, (1, 4, 5, 5))

    btconv = BinaryConvTranspose2d(4, 6, 2, stride=2)
    sb = summarize(btconv, (2, 4, 3, 3))
    assert sb.totals["bops"] == 2 * 4 * 3 * 3 * 6 * 4
    assert sb.totals["flops"] == 0
    assert sb.totals["binary_params"] == 4 * 6 * 4


def test_single_linear_on_tokens() -> None:
    lin = nn.Linear(16, 10)
    s = summarize(lin, (2, 5, 16))
    macs = 2 * 5 * 16 * 10
    row = _row(s, "(model)")
    assert row["fp_macs"] == macs
    assert row["elementwise"] == 2 * 5 * 10  # bias
    assert row["fp_params"] == 16 * 10 + 10
    assert macs == _flop_counter_macs(lin, (2, 5, 16))

    blin = BinaryLinear(16, 10)
    sb = summarize(blin, (2, 5, 16))
    assert sb.totals["bops"] == macs and sb.totals["flops"] == 0
    assert sb.totals["binary_params"] == 160


# ---------------------------------------------------------------- attention (functional)
class _Attention(nn.Module):
    def __init__(self, dim: int, binary: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.binary = binary
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.binary:
            q, k, v = torch.sign(q), torch.sign(k), torch.sign(v)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.dim)
        a = s.softmax(dim=-1)
        if self.binary:
            a = (a >= 0.25 * a.amax(dim=-1, keepdim=True)).to(x.dtype)
        return a @ v


def test_attention_matmuls_are_counted() -> None:
    b, n, c = 2, 6, 8
    s = summarize(_Attention(c), (b, n, c))
    qkv = _row(s, "qkv")
    assert qkv["fp_macs"] == b * n * c * 3 * c
    attn = _row(s, "(model)")
    # q k^T: b*n*n*c ; a v: b*n*n*c
    assert attn["fp_macs"] == 2 * b * n * n * c
    assert attn["binary_macs"] == 0
    # scale (1/elt) + softmax (3/elt) on the b*n*n scores
    assert attn["elementwise"] == 4 * b * n * n
    assert s.totals["flops"] == _flop_counter_macs(_Attention(c), (b, n, c))


def test_binary_attention_matmuls_are_bops() -> None:
    b, n, c = 2, 6, 8
    s = summarize(_Attention(c, binary=True), (b, n, c))
    attn = _row(s, "(model)")
    assert attn["binary_macs"] == 2 * b * n * n * c
    assert attn["fp_macs"] == 0
    # 3 signs (b*n*c each); per score: scale 1, softmax 3, amax 1 (per input), compare 1;
    # 0.25 * amax: one per row; the {0,1} cast is data movement (0)
    assert attn["elementwise"] == 3 * b * n * c + b * n * n * (1 + 3 + 1 + 1) + b * n
    assert _row(s, "qkv")["fp_macs"] == b * n * c * 3 * c


def test_sdpa_counted() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(x, x, x)

    s = summarize(M(), (1, 2, 5, 4))
    assert s.totals["flops"] == 2 * 5 * 5 * (4 + 4)


# ---------------------------------------------------------------- elementwise rules
@pytest.mark.parametrize(
    ("mode", "per_out", "kw"),
    [("bilinear", 7, {"align_corners": True}), ("nearest", 1, {}),
     ("bicubic", 31, {"align_corners": False})],
)
def test_interpolation_rule(mode: str, per_out: int, kw: dict) -> None:
    up = nn.Upsample(scale_factor=2, mode=mode, **kw)
    s = summarize(up, (1, 2, 4, 4))
    row = _row(s, "(model)")
    assert row["elementwise"] == per_out * 2 * 8 * 8
    assert row["output_shape"] == [1, 2, 8, 8]
    assert s.totals["ops"] == 0  # never part of OPs


def test_functional_interpolation_in_container_is_visible() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return F.interpolate(y, size=(6, 6), mode="bilinear", align_corners=False) + 1.0

    s = summarize(M(), (1, 2, 3, 3))
    top = _row(s, "(model)")
    assert top["elementwise"] == 7 * 2 * 36 + 2 * 36  # interpolation + the add
    assert _row(s, "conv")["fp_macs"] == 2 * 9 * 2


def test_batchnorm_pooling_and_adaptive_pool_rules() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.AvgPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(3))
    s = summarize(model, (1, 3, 10, 10))
    assert _row(s, "0")["elementwise"] == 2 * 3 * 100
    assert _row(s, "0")["fp_params"] == 6  # buffers are not parameters
    assert _row(s, "1")["elementwise"] == 3 * 5 * 5 * 9
    # adaptive 5 -> 3 windows: [0,2), [1,4), [3,5) -> 2 + 3 + 2 = 7 per spatial dim
    assert _row(s, "2")["elementwise"] == 3 * 7 * 7


def test_bidense_block_bypass_elementwise_visible() -> None:
    block = BiDenseConv2d(8, 4, 1)
    s = summarize(block, (1, 8, 3, 3))
    assert _row(s, "conv")["binary_macs"] == 4 * 9 * 8
    # CFB 8 -> 4 merges: two means over 3 + 2 ... and the bypass add: visible in the block row
    cfb_means = 8 * 9  # every input channel is read once by a mean
    assert _row(s, "(model)")["elementwise"] == cfb_means + 4 * 9
    assert _row(s, "norm")["elementwise"] == 2 * 4 * 9
    # DAB statistics make the binary conv row carry elementwise work
    assert _row(s, "conv")["elementwise"] > 8 * 9
    # a, k, b of DAB are FP parameters of the binary layer's row
    assert _row(s, "conv")["fp_params"] == 3 * 8


# ---------------------------------------------------------------- totals, sharing, JSON
def test_binary_share_and_totals() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False),
                          BinaryConv2d(4, 4, 3, padding=1))
    s = summarize(model, (1, 3, 6, 6))
    fp = 4 * 36 * 3 * 9
    bi = 4 * 36 * 4 * 9
    assert s.totals["flops"] == fp and s.totals["bops"] == bi
    assert s.totals["binary_mac_share"] == pytest.approx(bi / (bi + fp))
    assert s.totals["ops"] == pytest.approx(bi / 64 + fp)
    assert s.totals["binary_params"] == 4 * 4 * 9
    assert s.totals["fp_params"] == 4 * 3 * 9
    assert s.totals["total_params"] == 4 * 4 * 9 + 4 * 3 * 9
    assert s.totals["bits"] == 4 * 4 * 9 + 32 * 4 * 3 * 9
    assert s.totals["memory_bytes"] == pytest.approx(4 * 4 * 9 / 8 + 4 * 4 * 3 * 9)


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.smooth = nn.Conv2d(2, 2, 3, padding=1, bias=True)
        self.again = nn.ModuleList([self.smooth, self.smooth])  # registered 3 times in all
        self.bn = nn.BatchNorm2d(2)
        self.cls = nn.Conv2d(2, 5, 1, bias=True)
        self.unused = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = self.smooth(x)
        return self.cls(self.bn(x))


def test_shared_module_params_once_macs_per_call() -> None:
    s = summarize(_Shared(), (1, 2, 4, 4))
    row = _row(s, "smooth")
    assert row["calls"] == 3
    assert row["fp_macs"] == 3 * (2 * 16 * 2 * 9)
    assert row["fp_params"] == 2 * 2 * 9 + 2
    # honest count: every unique parameter once, including an unused module's
    assert s.totals["total_params"] == (38 + 4 + (5 * 2 + 5) + (4 + 2))


def test_paper_compat_conventions_on_hand_built_model() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.body = _Shared()
            self.body.smooth = BinaryConv2d(4, 4, 3, padding=1)
            self.body.again = nn.ModuleList([self.body.smooth, self.body.smooth])
            self.body.bn = nn.BatchNorm2d(4)
            self.body.cls = nn.Conv2d(4, 5, 1, bias=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.stem(x))

    s = summarize(Net(), (1, 3, 4, 4), paper_compat=True)
    binary_entries = 3 * (4 * 4 * 9) + 5 * 4  # smooth x3 in the state dict + classifier weight
    fp_entries = 4 * 3 * 9 + (4 + 4 + 4 + 4 + 1) + 5  # stem, BN incl. buffers, classifier bias
    assert s.totals["binary_params"] == binary_entries
    assert s.totals["fp_params"] == fp_entries  # the unused module is excluded
    assert s.totals["total_params"] == pytest.approx(fp_entries + binary_entries / 32)
    # OPs: FP conv MACs (stem + classifier) + binary conv MACs / 64, no elementwise
    fp = 16 * 4 * 27 + 16 * 5 * 4
    bi = 3 * 16 * 4 * 36
    assert s.totals["flops"] == fp and s.totals["bops"] == bi
    assert s.totals["ops"] == pytest.approx(fp + bi / 64)
    assert s.totals["elementwise"] == 0
    assert any("classifier" in n for n in s.notes)


def test_paper_compat_fp32_model_has_no_binary_entries() -> None:
    s = summarize(_Shared(), (1, 2, 4, 4), paper_compat=True)
    assert s.totals["binary_params"] == 0
    # smooth x3 (38 each), BN weight/bias/mean/var/num_batches_tracked, cls; unused excluded
    assert s.totals["fp_params"] == 3 * 38 + 9 + 15


def test_json_keys_and_fp32_side_by_side() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BinaryConv2d(4, 4, 3, padding=1))
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    s = summarize(model, "1x3x5x5", fp32_model=ref)
    d = json.loads(s.to_json())
    for key in ("total_params", "binary_params", "fp_params", "bits", "bops", "flops", "ops",
                "layers", "fp32"):
        assert key in d
        assert key in d["fp32"] or key == "fp32"
    assert set(TOTAL_KEYS) <= set(d) and set(s.totals) == set(TOTAL_KEYS)
    assert d["fp32"]["bops"] == 0
    assert d["fp32"]["flops"] == 25 * 4 * 27 + 25 * 4 * 36
    assert d["ratios"]["ops"] == pytest.approx(d["fp32"]["ops"] / d["ops"])
    assert {r["name"] for r in d["layers"]} == {"0", "1"}
    table = s.table()
    assert "fp32" in table and "TOTAL" in table and "1/1" in table


def test_train_mode_restored_and_input_shape_parsing() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    model.train()
    before = model[1].running_mean.clone()
    summarize(model, "2x1x3x3")
    assert model.training
    assert torch.equal(model[1].running_mean, before)
    assert parse_input_shape("1x3x480x480") == (1, 3, 480, 480)
    assert parse_input_shape([2, 3, 8, 8]) == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="BxCxHxW"):
        parse_input_shape("1x3xfoo")
    with pytest.raises(ValueError, match="positive"):
        parse_input_shape("0x3x8x8")


def test_self_reported_counts_replace_direct_ops() -> None:
    class Counted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ x.transpose(-1, -2)

        def efficiency_counts(self, inputs, output) -> dict:  # noqa: ANN001
            return {"binary_macs": 640, "fp_macs": 3, "elementwise": 7,
                    "reference_fp_macs": 1000}

    s = summarize(Counted(), (1, 4, 4))
    assert (s.totals["bops"], s.totals["flops"], s.totals["elementwise"]) == (640, 3, 7)
    assert any("reference" in n for n in s.notes)
