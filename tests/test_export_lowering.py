"""The exporter's lowering tables (bidense.export.lower) against the runtime's op vocabulary."""

from __future__ import annotations

import pytest
from torch import nn

from bidense.binarize import get_activation_binarizer, list_binarizers
from bidense.export.lower import (
    ACTIVATION_LOWERINGS,
    AUTOGRAD_FUNCTIONS,
    LEAF_FUNCTIONS,
    MODULE_LOWERINGS,
    UnsupportedModelError,
    leaf_kind,
    lower_activation,
)
from bidense.nn import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear
from bidense.runtime.ops import ACTIVATIONS, FUNCTIONS, MODULE_OPS


def test_module_kinds_match_the_runtime_both_ways():
    lowered = [entry.kind for entry in MODULE_LOWERINGS]
    assert len(lowered) == len(set(lowered)), "one entry per kind"
    assert set(lowered) == set(MODULE_OPS)


def test_activation_kinds_are_runtime_kinds_and_cover_them():
    produced = {entry.kind for entry in ACTIVATION_LOWERINGS.values()} | {"identity"}
    assert produced == set(ACTIVATIONS)


def test_every_registered_activation_binarizer_lowers():
    assert set(list_binarizers("activation")) == set(ACTIVATION_LOWERINGS)
    for name, entry in ACTIVATION_LOWERINGS.items():
        attrs, tensors = lower_activation(get_activation_binarizer(name, 8, channel_dim=1))
        assert attrs["kind"] == entry.kind
        assert all(t.dtype.name == "float32" for t in tensors.values())
    assert lower_activation(get_activation_binarizer(None, 8)) == ({"kind": "identity"}, {})


def test_unknown_activation_binarizer_is_unsupported():
    class Odd(nn.Module):
        bits, name = 1, "odd"

    with pytest.raises(UnsupportedModelError, match="'odd'"):
        lower_activation(Odd())


def test_captured_functions_are_runtime_functions():
    assert set(AUTOGRAD_FUNCTIONS.values()) <= set(FUNCTIONS)
    assert set(LEAF_FUNCTIONS.values()) <= set(FUNCTIONS)


def test_no_entry_is_shadowed_by_an_earlier_one():
    # first match wins: an entry for a subclass must come before the entry of its base class
    for i, later in enumerate(MODULE_LOWERINGS):
        for earlier in MODULE_LOWERINGS[:i]:
            if earlier.when is None:
                assert not any(issubclass(c, earlier.modules) for c in later.modules), (
                    f"{later.kind} is shadowed by {earlier.kind}")


def test_leaf_kind_from_the_table():
    class LayerNorm2d(nn.LayerNorm):  # channel LayerNorm of NCHW, known by its class name
        pass

    assert leaf_kind(BinaryConv2d(4, 4, 3)) == "bconv"
    assert leaf_kind(BinaryConvTranspose2d(4, 4, 2, stride=2)) == "bconvT"
    assert leaf_kind(BinaryLinear(4, 4)) == "blinear"
    assert leaf_kind(nn.Conv2d(4, 4, 3)) == "conv"
    assert leaf_kind(nn.Linear(4, 4)) == "linear"
    assert leaf_kind(LayerNorm2d(4)) == "ln2d"
    assert leaf_kind(nn.LayerNorm(4)) == "ln"
    assert leaf_kind(nn.Dropout2d()) == "identity"
    assert leaf_kind(get_activation_binarizer("sign", 4)) == "act"
    assert leaf_kind(nn.Sequential()) is None
    assert leaf_kind(nn.Upsample(scale_factor=2)) is None
