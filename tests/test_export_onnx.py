"""ONNX export (bidense.export.to_onnx): onnxruntime against PyTorch eval.

Tolerance: relative max error ``max|onnx - torch| / max|torch|`` below ``REL_TOL`` with equal
arg-max maps. Ties: ``Sign(0) = 0`` in ONNX as ``torch.sign(0) = 0``, but a pre-sign value within
float rounding of 0 can come out with the other sign when onnxruntime sums in another order
(or fuses Conv + BatchNormalization). A freshly initialised BNN is full of such ties: +-1
weights and +-1 activations give integer sums, many exactly 0, and an identity BatchNorm keeps
them 0. Models with randomised BatchNorm statistics (as after training) have none at the test
inputs, so they are held to ``REL_TOL``; for fresh models the test counts the exact ties and
checks that the graph is right where there are none.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bidense.binarize import ActivationBinarizer
from bidense.export import export_onnx, verify_onnx
from bidense.models import METHODS, create_model
from bidense.tasks import TASKS

REL_TOL = 1e-4
SIZE = (1, 3, 32, 32)
#: methods also run at a second batch and size (bnn ties there: docs/onnx.md)
DYNAMIC_CHECKED = ("fp32", "reactnet", "bidense")


def _model(method: str, task: str = "seg", name: str | None = None, random_bn: bool = True):
    torch.manual_seed(0)
    name = name or ("ding_resnet_tiny" if method == "ding" else "upernet_convnext_atto")
    k = 3 if TASKS[task].multiclass else None
    model = create_model(name, task=task, num_classes=k, method=method).eval()
    if random_bn:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    return model


def _exact_ties(model, x) -> int:
    """Exact zeros entering the activation binarizers in PyTorch eval."""
    count = [0]

    def hook(module, inputs, output):
        count[0] += int((inputs[0] == 0).sum())

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, ActivationBinarizer)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return count[0]


def _assert_close(report: dict) -> None:
    assert report["max_rel_error"] < REL_TOL, report
    assert report.get("argmax_agreement", 1.0) == 1.0, report


@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_pytorch(method, tmp_path):
    model = _model(method)
    x = torch.randn(*SIZE)
    info = export_onnx(model, tmp_path / "m.onnx", x)
    assert info.dynamic and not info.notes
    onnx.checker.check_model(str(info.path))
    assert info.file_bytes == (tmp_path / "m.onnx").stat().st_size
    _assert_close(verify_onnx(model, info.path, x))
    if method != "fp32":
        assert "Sign" in info.ops
    if method in DYNAMIC_CHECKED:
        dims = [d.dim_param for d in onnx.load(info.path).graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", "", "height", "width"]
        # a second batch and a size whose PPM bins do not divide the feature map
        _assert_close(verify_onnx(model, info.path, torch.randn(2, 3, 64, 96)))


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_matches_pytorch(task, tmp_path):
    model = _model("reactnet", task)
    x = torch.randn(*SIZE)
    info = export_onnx(model, tmp_path / "m.onnx", x)
    _assert_close(verify_onnx(model, info.path, x))


def test_vit_falls_back_to_static(tmp_path):
    model = _model("bidense", "depth", name="dpt_vit_tiny")
    x = torch.randn(1, 3, 28, 28)
    info = export_onnx(model, tmp_path / "m.onnx", x)
    assert not info.dynamic and "VisionTransformer" in info.notes[0]
    _assert_close(verify_onnx(model, info.path, x))


@pytest.mark.parametrize("method", ["fp32", "bnn"])
def test_fresh_models_and_ties(method, tmp_path):
    model = _model(method, random_bn=False)
    x = torch.randn(*SIZE)
    info = export_onnx(model, tmp_path / "m.onnx", x)
    ties = _exact_ties(model, x)
    report = verify_onnx(model, info.path, x)
    if ties == 0:
        _assert_close(report)
    else:
        # bnn: +-1 x +-1 integer sums through an identity BN, thousands of exact zeros
        assert method == "bnn" and ties > 1000, ties


def test_export_leaves_the_model_and_no_temp_files(tmp_path):
    model = _model("reactnet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", torch.randn(*SIZE), opset=18)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "num_batches" not in k)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert onnx.load(tmp_path / "m.onnx").opset_import[0].version == 18
    assert np.isfinite(verify_onnx(model, tmp_path / "m.onnx", torch.randn(*SIZE))[
        "max_rel_error"])
