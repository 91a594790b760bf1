"""The BiDense ablations: "CFB alone" (``bidense_no_dab``) and "DAB alone" (``bidense_no_cfb``).

Both are method specs (:data:`bidense.models.methods.ABLATION_SPECS`) built by the same
architecture files as ``bidense`` ("both"); they train, export and run in the packed runtime, and
adding them leaves ``bidense`` itself bit-identical (fingerprints recorded before the change).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense.binarize import DAB, RSign
from bidense.export import export, max_relative_error
from bidense.models import METHODS, create_model, get_method
from bidense.models.convnext import ConvNeXtBlockBaseline
from bidense.models.methods import ABLATION_SPECS
from bidense.nn import BiDenseConv2d, BiDenseDown, BiDenseTransition, BiDenseUp
from bidense.nn.bidense import _BiDenseBlock, _Resample
from bidense.nn.binary import BinaryConv2d, BinaryConvTranspose2d
from bidense.runtime import Runtime
from helpers import randomize_bn

CFB_ALONE, DAB_ALONE = "bidense_no_dab", "bidense_no_cfb"
#: (model, input size): the ConvNeXt UperNet and the DPT on the BiViT-style ViT
ARCHS = [("upernet_convnext_micro", 64), ("dpt_vit_tiny", 56)]
#: smaller training inputs where the architecture allows (the step is the slow part on a CPU)
TRAIN_SIZE = {"upernet_convnext_micro": 32, "dpt_vit_tiny": 56}
TOL = 1e-4

#: ``bidense`` before the ablations existed (computed from HEAD 393d015 by
#: :func:`_fingerprint`): sha256 of the state_dict at ``manual_seed(0)`` and the float64 sum /
#: abs-sum of the eval output on ``manual_seed(1)`` inputs (2, 3, size, size).
BIDENSE_FINGERPRINTS = {
    "upernet_convnext_micro": (
        "674d66c8f21f10fe8bc478ee09769d902db21c2469053e90bdc29a69cde8a9ea",
        -550.9202439431101, 4369.178603345528,
    ),
    "dpt_vit_tiny": (
        "1983f1ed9d2183d90c3fa93c8c8be10eb3082b68f6703df1d677ca860a6fbac3",
        -1334.2439344841987, 5203.92399879545,
    ),
}


def _build(name: str, method: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, task="seg", num_classes=3, method=method)


def _binary_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, BinaryConv2d | BinaryConvTranspose2d)]


def _without_binarizers(model: nn.Module) -> list[tuple[str, type]]:
    """The module tree (names and types) without the activation binarizers."""
    return [(n, type(m)) for n, m in model.named_modules() if "act_binarizer" not in n]


def _fingerprint(name: str, size: int) -> tuple[str, float, float]:
    model = _build(name, "bidense")
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    model.eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        y = model(x).double()
    return digest.hexdigest(), float(y.sum()), float(y.abs().sum())


# ------------------------------------------------------------------------------ the specs
def test_specs_resolve_but_are_not_methods():
    assert set(ABLATION_SPECS) == {CFB_ALONE, DAB_ALONE}
    for name, spec in ABLATION_SPECS.items():
        assert name not in METHODS
        assert get_method(name) is spec and get_method(name.upper()) is spec
        assert spec.name == name and spec.is_binary and not spec.ding_models
    cfb, dab = ABLATION_SPECS[CFB_ALONE], ABLATION_SPECS[DAB_ALONE]
    assert (cfb.layout, cfb.transition, cfb.act) == ("bidense", "bidense", "rsign")
    assert (dab.layout, dab.transition, dab.act) == ("baseline", "unit", "dab")
    bidense = get_method("bidense")
    for spec in (cfb, dab):  # everything else as bidense
        assert (spec.weight, spec.linear_act, spec.linear_weight) == (
            bidense.weight, bidense.linear_act, bidense.linear_weight)
        assert (spec.block_nonlin, spec.decoder_nonlin) == ("bias_prelu", "bias_prelu")


@pytest.mark.parametrize("name,size", ARCHS)
def test_bidense_unchanged(name, size):
    digest, total, abs_total = BIDENSE_FINGERPRINTS[name]
    got_digest, got_total, got_abs = _fingerprint(name, size)
    assert got_digest == digest
    assert got_total == pytest.approx(total, rel=1e-6)
    assert got_abs == pytest.approx(abs_total, rel=1e-6)


# ------------------------------------------------------------------------------ the layouts
@pytest.mark.parametrize("name,size", ARCHS)
def test_cfb_alone_has_every_cfb_and_no_dab(name, size):
    both, cfb = _build(name, "bidense"), _build(name, CFB_ALONE)
    assert cfb.method == CFB_ALONE
    assert not any(isinstance(m, DAB) for m in cfb.modules())
    # the BiDense layout module for module: every block, bypass flag and resampling bypass
    assert _without_binarizers(cfb) == _without_binarizers(both)
    blocks = {n: m.bypass for n, m in both.named_modules() if isinstance(m, _BiDenseBlock)}
    assert blocks and blocks == {
        n: m.bypass for n, m in cfb.named_modules() if isinstance(m, _BiDenseBlock)}
    assert any(isinstance(m, _Resample) for m in cfb.modules())
    layers = _binary_layers(cfb)
    assert len(layers) == len(_binary_layers(both))
    assert all(isinstance(m.act_binarizer, RSign) for m in layers)


@pytest.mark.parametrize("name,size", ARCHS)
def test_dab_alone_is_the_baseline_layout_with_dab(name, size):
    dab, baseline = _build(name, DAB_ALONE), _build(name, "reactnet")
    assert dab.method == DAB_ALONE
    assert not any(isinstance(m, _BiDenseBlock | _Resample) for m in dab.modules())
    layers = _binary_layers(dab)
    assert layers and all(isinstance(m.act_binarizer, DAB) for m in layers)
    assert all(m.act_binarizer.scale == "channel" for m in layers)
    # the reference skeleton of the baselines, layer for layer (only binarizers and
    # non-linearities differ from reactnet's)
    assert len(layers) == len(_binary_layers(baseline))
    if name.startswith("upernet_convnext"):
        assert dab.decoder.layout == "baseline"  # FPN smooth with its residual
        blocks = [m for stage in dab.backbone.stages for m in stage]
        assert blocks and all(isinstance(b, ConvNeXtBlockBaseline) for b in blocks)
        for transition in dab.backbone.downsample:  # binary k2s2 + BN, no shortcut
            conv, norm = transition
            assert isinstance(conv, BinaryConv2d) and isinstance(norm, nn.BatchNorm2d)
            assert conv.kernel_size == conv.stride == (2, 2)
    else:
        assert all(rcu.skip for fusion in dab.decoder.refinenet
                   for rcu in (fusion.rcu1, fusion.rcu2) if rcu is not None)


# ------------------------------------------------------------------------------ training
@pytest.mark.parametrize("method", [CFB_ALONE, DAB_ALONE])
@pytest.mark.parametrize("name,size", ARCHS)
def test_trains_one_step(name, size, method):
    model = _build(name, method)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(2)
    size = TRAIN_SIZE[name]
    x, target = torch.randn(2, 3, size, size), torch.randint(0, 3, (2, size, size))
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    binarizer = RSign if method == CFB_ALONE else DAB
    grads = [p.grad for m in model.modules() if isinstance(m, binarizer) for p in m.parameters()]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


# ------------------------------------------------------------------------------ deployment
@pytest.mark.parametrize("method", [CFB_ALONE, DAB_ALONE])
@pytest.mark.parametrize("name,size", ARCHS)
def test_exports_and_runs(tmp_path, name, size, method):
    model = _build(name, method)
    randomize_bn(model)
    model.eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, size, size)
    path = tmp_path / f"{name}_{method}.bdn"
    export(model, path, x)
    with torch.no_grad():
        ref = model(x).numpy()
    rt = Runtime(path, threads=1)
    got = rt(x.numpy())
    assert got.shape == ref.shape and got.dtype == np.float32
    assert max_relative_error(got, ref) <= TOL
    paths = {r["path"] for r in rt.report() if r["op"] in ("bconv", "bconvT")}
    # DAB's per-channel alpha takes the runtime's DAB path; RSign convs run packed
    assert any("DAB" in p for p in paths) == (method == DAB_ALONE)


# ------------------------------------------------------------------------------ the blocks
def test_blocks_take_another_activation_binarizer():
    torch.manual_seed(0)
    blocks = [
        BiDenseConv2d(8, 16, 3, padding=1, act_binarizer="rsign"),
        BiDenseTransition(8, 16, act_binarizer="rsign"),
        BiDenseDown(8, 16, act_binarizer="rsign"),
        BiDenseUp(8, 16, 2, act_binarizer="rsign"),
    ]
    x = torch.randn(2, 8, 8, 8)
    for block in blocks:
        layer = block.conv if isinstance(block, _BiDenseBlock) else block.conv.conv
        assert isinstance(layer.act_binarizer, RSign)
        assert torch.isfinite(block(x)).all()
    with pytest.raises(AttributeError):
        _ = blocks[0].dab
    assert isinstance(BiDenseConv2d(8, 8, 1).dab, DAB)  # the default stays DAB
    with pytest.raises(ValueError, match="needs act_binarizer='dab'"):
        BiDenseConv2d(8, 8, 1, act_binarizer="rsign", dab_scale="shared")
