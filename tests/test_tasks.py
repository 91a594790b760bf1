"""The task table: every entry resolves in every layer that reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bidense import losses, metrics, tasks
from bidense.engine import visualize
from bidense.engine.builders import LOSS_KWARGS, METRIC_KWARGS, build_loss_fn, build_metric
from bidense.engine.config import load_config
from bidense.engine.predict import RAW_WRITERS
from bidense.tasks import TASKS, get_task, head_channels, lower_is_better


def test_table_keys_are_names():
    assert list(TASKS) == ["seg", "depth", "saliency", "road"]
    for name, spec in TASKS.items():
        assert spec.name == name
        assert get_task(name) is spec and get_task(spec) is spec


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'panoptic'"):
        get_task("panoptic")


@pytest.mark.parametrize("name", TASKS)
def test_every_field_resolves(name: str):
    spec = TASKS[name]
    assert spec.loss in losses.LOSSES
    assert spec.metric in metrics.METRICS
    assert spec.picture in visualize.PICTURES
    assert spec.raw_suffix in RAW_WRITERS
    assert spec.postprocess in tasks._POSTPROCESS
    assert spec.headline_mode in ("max", "min")
    assert spec.head_output in ("logits", "depth")
    assert np.dtype(spec.target_dtype) in (np.int64, np.float32)
    assert spec.target_fill == "ignore" or isinstance(spec.target_fill, float)


@pytest.mark.parametrize("name", TASKS)
def test_loss_and_metric_build_from_a_config(name: str):
    cfg = load_config(overrides=[f"model.task={name}"])
    num_classes = 3 if TASKS[name].multiclass else None
    assert isinstance(build_loss_fn(cfg, num_classes), losses.LOSSES[TASKS[name].loss])
    assert isinstance(build_metric(cfg, num_classes), metrics.METRICS[TASKS[name].metric])


def test_kwargs_tables_name_registered_entries():
    assert set(LOSS_KWARGS) <= set(losses.LOSSES)
    assert set(METRIC_KWARGS) <= set(metrics.METRICS)


@pytest.mark.parametrize("name", TASKS)
def test_headline_is_computed_and_ranked_its_way(name: str):
    """The headline metric is a key the task's metric computes, ranked by ``headline_mode``."""
    spec = TASKS[name]
    cfg = load_config(overrides=[f"model.task={name}"])
    num_classes = 3 if spec.multiclass else None
    metric = build_metric(cfg, num_classes)
    gen = torch.Generator().manual_seed(0)
    if spec.multiclass:
        target = torch.randint(0, 3, (1, 8, 8), generator=gen)
        out = torch.randn(1, 3, 8, 8, generator=gen)
    else:
        target = torch.rand(1, 1, 8, 8, generator=gen)
        target = target * 5 + 1 if spec.head_output == "depth" else (target > 0.5).float()
        out = torch.rand(1, 1, 8, 8, generator=gen) * 5 + 1
    metric.update(tasks.postprocess(out, spec), target)
    result = metric.compute()
    assert spec.headline in result
    assert lower_is_better(spec.headline) == (spec.headline_mode == "min")


@pytest.mark.parametrize("name", TASKS)
def test_postprocess_torch_and_numpy_agree(name: str):
    out = torch.randn(2, 3 if TASKS[name].multiclass else 1, 4, 4)
    a = tasks.postprocess(out, name).numpy()
    b = tasks.postprocess(out.numpy(), name)
    if TASKS[name].postprocess == "sigmoid":
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", TASKS)
def test_picture_draws_an_rgb_image(name: str):
    spec = TASKS[name]
    image = np.zeros((4, 5, 3), np.uint8)
    pred = np.ones((4, 5), np.int64) if spec.multiclass else np.full((4, 5), 0.5, np.float32)
    pic = visualize.prediction_picture(spec.picture, image, pred, visualize.palette_for(3))
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[0] == 4 and pic.shape[2] == 3


def test_head_channels_rules():
    assert head_channels("seg", 151) == 151
    with pytest.raises(ValueError, match="needs num_classes"):
        head_channels("seg", None)
    with pytest.raises(ValueError, match=">= 1"):
        head_channels("seg", 0)
    for name in ("depth", "saliency", "road"):
        assert head_channels(name, None) == 1
        assert head_channels(name, 1) == 1
        with pytest.raises(ValueError, match="one channel"):
            head_channels(name, 3)


def test_lower_is_better():
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "mae"):
        assert lower_is_better(name)
    for name in ("mIoU", "pixAcc", "max_f", "delta1", "s_measure"):
        assert not lower_is_better(name)


def test_fill_value():
    assert TASKS["seg"].fill_value(255) == 255.0
    assert TASKS["road"].fill_value(7) == 7.0
    assert TASKS["depth"].fill_value(255) == 0.0
    assert TASKS["saliency"].fill_value(255) == 0.0
