"""Non-finite runtime inputs are refused in one line naming how many values, or masked on
request (issue 12 item 4); ``bidense.export.export`` can be called twice (item 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bidense.export as E
from bidense.nn import BinaryConv2d
from bidense.runtime import Runtime, RuntimeInputError


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                          BinaryConv2d(8, 8, 3, padding=1, act_binarizer="sign")).eval()
    path = tmp_path_factory.mktemp("rt") / "m.bdn"
    E.export(model, path, torch.randn(1, 3, 8, 8))
    return path


def _with_bad_values(count: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    x.reshape(-1)[:count] = [np.nan, np.inf, -np.inf][:count] if count <= 3 else np.nan
    return x


@pytest.mark.parametrize("count", [1, 3, 7])
def test_non_finite_input_is_refused_naming_the_count(model_file, count):
    with pytest.raises(RuntimeInputError) as info:
        Runtime(model_file)(_with_bad_values(count))
    text = str(info.value)
    assert "\n" not in text and str(model_file) in text
    assert f"input has {count} non-finite values (NaN or inf) of 192" in text


def test_mask_replaces_non_finite_values_by_zero(model_file):
    x = _with_bad_values(3)
    clean = np.where(np.isfinite(x), x, np.float32(0))
    rt = Runtime(model_file, nonfinite="mask")
    got = rt(x)
    assert rt.masked == 3 and np.isfinite(got).all()
    np.testing.assert_array_equal(got, Runtime(model_file)(clean))
    # per call: the runtime's own setting refuses, the call masks
    strict = Runtime(model_file)
    np.testing.assert_array_equal(strict(x, nonfinite="mask"), got)
    with pytest.raises(RuntimeInputError):
        strict(x)


def test_finite_input_is_untouched(model_file):
    x = _with_bad_values(0)
    rt = Runtime(model_file, nonfinite="mask")
    np.testing.assert_array_equal(rt(x), Runtime(model_file)(x))
    assert rt.masked == 0


def test_unknown_nonfinite_mode_is_refused(model_file):
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        Runtime(model_file, nonfinite="ignore")


def test_export_twice_through_the_package(tmp_path):
    # item 9: no submodule of bidense.export shadows the export function
    model = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    E.export(model, tmp_path / "a.bdn", x)
    E.export(model, tmp_path / "b.bdn", x)
    assert callable(E.export) and callable(E.verify)
    np.testing.assert_array_equal(Runtime(tmp_path / "a.bdn")(x.numpy()),
                                  Runtime(tmp_path / "b.bdn")(x.numpy()))
