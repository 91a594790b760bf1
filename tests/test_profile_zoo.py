"""bidense.profile on zoo models: paper-compat numbers (bidense-method.md §14) and summary_main."""

from __future__ import annotations

import json

import pytest

import bidense.models as models
from bidense.profile import summarize, summary_main


def test_paper_compat_bidense_upernet_convnext_t() -> None:
    model = models.create_model("upernet_convnext_t", task="seg", num_classes=151,
                                method="bidense")
    # parameter counts do not depend on the input size: a small input keeps this fast
    s = summarize(model, (1, 3, 64, 64), paper_compat=True)
    # §14: 377,663 FP entries + 39,945,056 binary entries / 32 = 1,625.9K (paper: 1,626K)
    assert abs(s.totals["total_params"] / 1e3 - 1626) <= 1
    assert s.totals["fp_params"] + s.totals["binary_params"] / 32 == pytest.approx(
        s.totals["total_params"])
    # the FP classifier 128 -> 151 at 64x64 is the only FP conv besides the stem (3->96, k4 s4)
    assert s.totals["flops"] == 64 * 64 * 128 * 151 + 16 * 16 * 96 * 3 * 16
    assert s.totals["ops"] == pytest.approx(s.totals["flops"] + s.totals["bops"] / 64)


def test_paper_compat_fp32_upernet_convnext_t() -> None:
    model = models.create_model("upernet_convnext_t", task="seg", num_classes=151,
                                method="fp32")
    s = summarize(model, (1, 3, 64, 64), paper_compat=True)
    assert abs(s.totals["total_params"] / 1e3 - 40020) <= 1
    assert s.totals["binary_params"] == 0 and s.totals["bops"] == 0


def test_summary_main_small_preset_json_and_table() -> None:
    text = summary_main("upernet_convnext_atto", "bidense", "seg", "1x3x64x64", num_classes=5,
                        as_json=True)
    d = json.loads(text)
    for key in ("total_params", "binary_params", "fp_params", "bits", "bops", "flops", "ops",
                "layers", "fp32"):
        assert key in d
    for key in ("total_params", "bops", "flops", "ops", "layers"):
        assert key in d["fp32"]
    assert d["bops"] > 0 and d["fp32"]["bops"] == 0
    assert 0.0 < d["binary_mac_share"] < 1.0
    # stem (FP, 3 -> 40, k4 s4) and the FP 1x1 classifier (atto: 128 -> 5 at full size)
    fp_rows = {r["name"]: r for r in d["layers"] if r["fp_macs"]}
    assert fp_rows["backbone.stem.0"]["fp_macs"] == 16 * 16 * 40 * 3 * 16
    assert fp_rows["head.cls"]["fp_macs"] == 64 * 64 * 128 * 5
    assert d["flops"] == sum(r["fp_macs"] for r in d["layers"])
    assert d["ops"] == pytest.approx(d["bops"] / 64 + d["flops"])
    assert d["fp32"]["ops"] > d["ops"]
    assert d["elementwise"] > 0

    table = summary_main("upernet_convnext_atto", "bidense", "seg", "1x3x64x64", num_classes=5)
    assert "TOTAL" in table and "fp32" in table and "fp32/this" in table
