"""benchmarks/reproduce.py at a tiny budget: runs, JSONs per run, resume by skipping, summary."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
BUDGET = ["--tasks", "seg", "--seeds", "1", "--epochs", "1", "--train-images", "8",
          "--val-images", "4", "--image-scale", "0.5", "--threads", "1"]
TINY = [*BUDGET, "--methods", "fp32", "bidense"]


@pytest.fixture()
def reproduce(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import reproduce

    return reproduce


def _results(out: Path) -> list[Path]:
    return sorted((out / "runs").glob("*/*/seed*/result.json"))


def test_run_resume_and_summarize(reproduce, tmp_path, capsys):
    out = tmp_path / "rep"
    assert reproduce.main([*TINY, "--out", str(out)]) == 0
    paths = _results(out)
    assert [p.parent.parent.name for p in paths] == [
        "upernet_convnext_micro-bidense", "upernet_convnext_micro-fp32"]
    first = {p: p.read_text() for p in paths}
    assert all(json.loads(t)["metrics"]["mIoU"] >= 0 for t in first.values())

    # a second call skips the finished runs (nothing rewritten)
    capsys.readouterr()
    assert reproduce.main([*TINY, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped (done)") == 2
    assert {p: p.read_text() for p in _results(out)} == first

    # two more "seeds" of bidense made from its JSON, so the std is defined
    bidense = paths[0]
    for seed, miou in ((2, 0.31), (3, 0.52)):
        record = json.loads(bidense.read_text())
        record["seed"], record["metrics"]["mIoU"] = seed, miou
        target = bidense.parent.parent / f"seed{seed}" / "result.json"
        target.parent.mkdir()
        target.write_text(json.dumps(record))
    assert reproduce.main([*TINY, "--out", str(out), "--summarize"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["label"]: r for r in summary["rows"]}
    values = [json.loads(p.read_text())["metrics"]["mIoU"]
              for p in sorted(bidense.parent.parent.glob("seed*/result.json"))]
    assert rows["bidense"]["seeds"] == [1, 2, 3]
    assert rows["bidense"]["metrics"]["mIoU"]["mean"] == pytest.approx(statistics.fmean(values))
    assert rows["bidense"]["metrics"]["mIoU"]["std"] == pytest.approx(statistics.stdev(values))
    fp32 = json.loads(paths[1].read_text())["metrics"]["mIoU"]
    assert rows["fp32"]["metrics"]["mIoU"] == {"mean": pytest.approx(fp32), "std": None, "n": 1}
    assert rows["bidense"]["cost"]["bits"] < rows["fp32"]["cost"]["bits"]
    for name in ("seg_bars.png", "seg_vs_ops.png", "seg_predictions.png", "summary.md"):
        assert (out / name).is_file()


def test_budget_mismatch_is_refused(reproduce, tmp_path):
    out = tmp_path / "rep"
    args = [*BUDGET, "--methods", "fp32", "--out", str(out)]
    assert reproduce.main(args) == 0
    with pytest.raises(SystemExit, match="use another --out"):
        reproduce.main([*args, "--epochs", "2"])


def test_plan_builds_every_ablation(reproduce, tmp_path, capsys):
    specs = reproduce.plan(["ablations"], ["seg"], None, (1,))
    reproduce.dry_run(specs, tmp_path, reproduce.BUDGETS["small"])
    text = capsys.readouterr().out
    for label in ("DAB alone", "CFB alone", "group-wise", "shared per sample"):
        assert label in text
    # every switch exists in the library now: DAB alone, CFB alone, the group-wise DAB scale
    assert " 0 pending" in text
    assert "estimated" in text and " h on 2 CPU cores" in text
