"""The benchmarks produce well-formed JSON with every column (tiny sizes, one repeat; no timing
assertions: the figures themselves come from ``bidense benchmark`` on a quiet machine)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bidense.benchmark.breakdown import CATEGORIES, categorize, time_breakdown, time_shares
from bidense.benchmark.common import isa_sides
from bidense.benchmark.layers import layer_speedups, run_layer_benchmark
from bidense.benchmark.models import _side_speedup, run_model_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_LAYER = (("3x3 16->16 @8", 16, 16, 8, 3, 1),)


def _positive(d: dict, *keys: str) -> None:
    for k in keys:
        assert d[k] > 0, (k, d[k])


def _shares_sum_to_one(breakdown: dict) -> None:
    assert set(breakdown) == set(CATEGORIES)
    assert all(v >= 0 for v in breakdown.values())
    assert math.isclose(sum(time_shares(breakdown).values()), 1.0, rel_tol=1e-9)


def test_isa_sides_native_and_avx2():
    sides = {s.name: s for s in isa_sides()}
    assert set(sides) == {"native", "avx2"}
    assert sides["native"].timed
    avx2 = sides["avx2"]
    assert avx2.timed or avx2.note  # an untimed side says why (coincides, or no AVX2 path)


def test_layer_benchmark_json(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "layers.json"
    res = run_layer_benchmark((1,), 1, str(path), min_time=0.0, shapes=TINY_LAYER,
                              verbose=False)
    data = json.loads(path.read_text())
    assert data["results"] and data["isa_sides"][0]["name"] == "native"
    for r in data["results"]:
        for col in ("binary", "binary+pack", "fp32"):
            _positive(r[col], "min_ms", "median_ms", "runs")
        _positive(r, "speedup_min", "speedup_median", "speedup_pack_min", "gmac")
        assert r["backend"] and r["isa"] in ("native", "avx2")
    assert data["torch"]["native"]["cpu_capability"]
    assert set(layer_speedups(res)) == {r["isa"] for r in res["results"]}


def test_layer_speedups_reads_the_speedup_keys():
    # the bound of `--what all` uses the layer benchmark's `speedup_*` keys (it once looked
    # for "ratio" and never found one)
    res = {"results": [
        {"isa": "native", "threads": 1, "speedup_min": 9.0},
        {"isa": "native", "threads": 1, "speedup_min": 12.0},
        {"isa": "native", "threads": 2, "speedup_min": 30.0},
        {"isa": "avx2", "threads": 1, "speedup_min": 5.0},
        {"isa": "avx2", "threads": 1},
    ]}
    assert layer_speedups(res) == {"native": 12.0, "avx2": 5.0}
    assert _side_speedup({"native": 12.0}, "native", "avx2") == 12.0
    assert _side_speedup({"native": 12.0}, "avx2", "avx2") == 5.0  # the path's default
    assert _side_speedup(7.0, "avx2", "avx2") == 7.0


@pytest.mark.parametrize("op,path,category", [
    ("bconv", "packed", "packed conv"),
    ("bconv", "packed, DAB shared alpha folded +zeros", "packed conv"),
    ("bconv", "depthwise exact-alpha", "packed conv"),
    ("blinear", "packed (linear)", "packed conv"),
    ("bconv", "DAB float path (per-channel alpha)", "DAB float path"),
    ("bconvT", "float (transposed, per-input-channel weight scale)", "float conv"),
    ("conv", "gemm", "float conv"),
    ("cfb_add", "numpy", "CFB"),
    ("bn", "numpy", "norm/activation"),
    ("interpolate", "numpy", "pool/resize/concat"),
    ("cat", "numpy", "pool/resize/concat"),
    ("reshape", "numpy", "other function"),
])
def test_categorize(op, path, category):
    assert categorize(op, path) == category


def test_time_breakdown_overhead_is_the_rest_of_the_wall_time():
    report = [{"op": "bconv", "path": "packed", "ms": 3.0},
              {"op": "conv", "path": "gemm", "ms": 1.0},
              {"op": "view", "path": "numpy", "ms": 0.5}]
    b = time_breakdown(report, 5.0)
    assert b["packed conv"] == 3.0 and b["float conv"] == 1.0 and b["other function"] == 0.5
    assert b["framework overhead"] == pytest.approx(0.5)
    _shares_sum_to_one(b)


def test_model_benchmark_json(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "models.json"
    cases = (("ding_resnet_tiny", "ding", 32), ("ding_resnet_tiny", "bidense:no_such_scale", 32))
    run_model_benchmark((1,), 1, str(path), cases=cases, min_time=0.0, verbose=False)
    data = json.loads(path.read_text())
    ok, missing = data["models"]
    assert missing["available"] is False and missing["reason"]
    _positive(ok, "file_bytes", "binary_mac_share", "theory_ops_ratio")
    assert ok["paths"] and ok["max_rel_error"] < 1e-3
    onnx = ok["onnxruntime_note"] is None
    for row in ok["rows"]:
        assert row["threads"] == 1 and row["kernel"] and row["torch_capability"]
        engines = ["runtime", "torch_fp32"]
        if row["isa"] == "native":
            engines += ["torch_fake_binary"] + (["onnxruntime_fp32"] if onnx else [])
        for e in engines:
            _positive(row[e], "min_ms", "median_ms", "peak_rss_kib")
        assert row["runtime"]["torch_imported"] is False  # the runtime as deployed
        _positive(row, "speedup_vs_fp32_min", "amdahl_bound", "share_of_bound")
        if row["isa"] == "native" and onnx:
            _positive(row, "speedup_vs_onnxruntime_min")
        _shares_sum_to_one(row["time_breakdown"])
        assert math.isclose(sum(row["time_shares"].values()), 1.0, rel_tol=1e-9)
    variants = {v["method"]: v for v in data["dab_variants"]}
    assert set(variants) == {"bidense", "bidense:group", "bidense:shared"}
    assert not any(v["available"] for v in variants.values())  # not in these cases


def test_profile_runtime_script(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import profile_runtime

    out = tmp_path / "prof.json"
    profile_runtime.main(["ding_resnet_tiny", "ding", "--size", "32", "--threads", "1",
                          "--repeats", "1", "--min-time", "0", "--json", str(out)])
    prof = json.loads(out.read_text())
    run = prof["threads"]["1"]
    _shares_sum_to_one(run["time_breakdown"])
    assert run["nodes"] and all({"name", "op", "path", "ms"} <= set(n) for n in run["nodes"])
    assert run["torch_imported"] is False
    assert "framework overhead" in capsys.readouterr().out
