"""A ``.bdn`` file is validated after its checksum: an edited header with the hash recomputed is
refused with one ``BdnFormatError`` line, never trusted blindly nor a raw exception (issue 12
item 2)."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bidense.export import export
from bidense.nn import BinaryConv2d, BinaryConvTranspose2d, RPReLU
from bidense.runtime import BdnFormatError, Runtime, RuntimeInputError

_PREFIX = struct.Struct("<8sIQ")
SIZE = 16


class _Small(nn.Module):
    """Every kind of edge the validator reasons about: a float conv + BN, a binary conv with a
    bypass and a fused RPReLU, a pool, a DAB 1x1 binary conv, a binary transposed conv, a head
    and a resize to the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b1 = BinaryConv2d(8, 8, 3, padding=1, act_binarizer="rsign")
        self.act1 = RPReLU(8)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.b2 = BinaryConv2d(8, 16, 1, act_binarizer="dab")
        self.up = BinaryConvTranspose2d(16, 8, 2, stride=2, act_binarizer="sign")
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.stem(x)))
        y = self.act1(self.b1(y) + y)
        y = self.up(self.b2(self.pool(y)))
        y = self.head(y)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> dict[str, Any]:
    torch.manual_seed(0)
    model = _Small().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.1)
        model.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("bdn") / "small.bdn"
    x = torch.randn(1, 3, SIZE, SIZE)
    export(model, path, x)
    data = path.read_bytes()
    _, _, hlen = _PREFIX.unpack_from(data, 0)
    start = _PREFIX.size
    header = json.loads(data[start:start + hlen])
    return {"path": path, "x": x.numpy(), "out": Runtime(path)(x.numpy()), "header": header,
            "digest": data[start + hlen:start + hlen + 32],
            "payload": data[start + hlen + 32:], "dir": path.parent}


def _write(path: Path, header: Any, payload: bytes, digest: bytes | None = None) -> Path:
    """A ``.bdn`` with ``header`` and ``payload``; the checksum recomputed unless ``digest``."""
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    d = digest if digest is not None else hashlib.sha256(h + payload).digest()
    path.write_bytes(_PREFIX.pack(b"BIDENSE\x00", 1, len(h)) + h + d + payload)
    return path


def _module(header: dict, kind: str) -> dict:
    return next(m for m in header["graph"]["modules"].values() if m["kind"] == kind)


def _refused(path: Path, x: np.ndarray) -> str:
    with pytest.raises(BdnFormatError) as info:
        Runtime(path)(x)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    return text


# -- targeted cases -------------------------------------------------------------------------------
def _edit_stride(h):
    _module(h, "conv")["attrs"]["stride"] = [259, 259]


def _edit_kernel(h):
    _module(h, "bconv")["attrs"]["kernel"] = [44, 44]


def _edit_pool_kernel(h):
    _module(h, "maxpool")["attrs"]["kernel"] = [44, 44]


def _edit_offset(h):
    name = sorted(h["tensors"])[1]
    h["tensors"][name]["offset"] += 1


def _edit_overlap(h):
    a, b = sorted(h["tensors"], key=lambda n: h["tensors"][n]["offset"])[:2]
    h["tensors"][b]["offset"] = h["tensors"][a]["offset"]


def _edit_dangling(h):
    h["graph"]["nodes"][1]["args"][0] = {"t": "no_such_tensor"}


def _edit_later_ref(h):
    nodes = h["graph"]["nodes"]
    nodes[1]["args"][0] = {"t": nodes[-1]["outputs"][0]}


def _edit_dtype(h):
    entry = h["tensors"][_module(h, "bconv")["tensors"]["w_bits"]]
    entry["dtype"] = "float32"


def _edit_unknown_dtype(h):
    next(iter(h["tensors"].values()))["dtype"] = "float128"


def _edit_wrong_shape(h):
    # same bytes, a shape the op cannot take (out_scale of 16 channels on an 8-channel conv)
    entry = h["tensors"][_module(h, "conv")["tensors"]["w_float"]]
    o, i, kh, kw = entry["shape"]
    entry["shape"] = [i, o, kh, kw]


def _edit_unknown_kind(h):
    _module(h, "maxpool")["kind"] = "maxpool3d"


def _edit_unknown_function(h):
    next(n for n in h["graph"]["nodes"] if n["op"] != "module")["op"] = "fft"


def _edit_non_list(h):
    _module(h, "conv")["attrs"]["padding"] = 1


def _edit_nodes_not_list(h):
    h["graph"]["nodes"] = {"a": 1}


def _edit_in_channels(h):
    _module(h, "bconv")["attrs"]["in_channels"] = 16


def _edit_groups(h):
    _module(h, "bconv")["attrs"]["groups"] = 3


def _edit_padding(h):
    _module(h, "bconv")["attrs"]["padding"] = [3, 3]


def _edit_duplicate_output(h):
    nodes = h["graph"]["nodes"]
    nodes[2]["outputs"] = list(nodes[1]["outputs"])


def _edit_missing_attr(h):
    del _module(h, "bconv")["attrs"]["stride"]


def _edit_unknown_act(h):
    _module(h, "bconv")["attrs"]["act"] = {"kind": "ternary"}


def _edit_missing_tensor(h):
    del _module(h, "bconv")["tensors"]["act.threshold"]


def _edit_input_shape(h):
    h["graph"]["input"]["shape"] = [1, 4, SIZE, SIZE]


def _edit_module_swap(h):
    # the binary conv node runs the DAB conv's weights (16 out channels, 8 in: the bypass add
    # and the RPReLU of 8 channels no longer fit)
    mods = h["graph"]["modules"]
    b1, b2 = [k for k, m in mods.items() if m["kind"] == "bconv"]
    mods[b1], mods[b2] = mods[b2], mods[b1]


TARGETED = [_edit_stride, _edit_kernel, _edit_pool_kernel, _edit_offset, _edit_overlap,
            _edit_dangling, _edit_later_ref, _edit_dtype, _edit_unknown_dtype, _edit_wrong_shape,
            _edit_unknown_kind, _edit_unknown_function, _edit_non_list, _edit_nodes_not_list,
            _edit_in_channels, _edit_groups, _edit_padding, _edit_duplicate_output,
            _edit_missing_attr, _edit_unknown_act, _edit_missing_tensor, _edit_input_shape,
            _edit_module_swap]


@pytest.mark.parametrize("edit", TARGETED, ids=lambda f: f.__name__[len("_edit_"):])
def test_impossible_graph_with_a_valid_checksum_is_refused(original, tmp_path, edit):
    header = copy.deepcopy(original["header"])
    edit(header)
    path = _write(tmp_path / "edited.bdn", header, original["payload"])
    _refused(path, original["x"])


def test_untouched_rewrite_loads_and_gives_the_same_output(original, tmp_path):
    path = _write(tmp_path / "same.bdn", original["header"], original["payload"])
    np.testing.assert_array_equal(Runtime(path)(original["x"]), original["out"])


# -- seeded fuzzing -------------------------------------------------------------------------------
def _leaves(o: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value of the graph and the tensor table."""
    found = [path] if path else []
    if isinstance(o, dict):
        for k, v in o.items():
            found += _leaves(v, path + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            found += _leaves(v, path + (i,))
    return found


def _get(o: Any, path: tuple) -> Any:
    for k in path:
        o = o[k]
    return o


def _strings(o: Any) -> list[str]:
    if isinstance(o, str):
        return [o]
    if isinstance(o, dict):
        return [s for k, v in o.items() for s in [k] + _strings(v)]
    if isinstance(o, list):
        return [s for v in o for s in _strings(v)]
    return []


def _mutate(header: dict, rng: random.Random) -> tuple[dict, tuple, str]:
    """One seeded edit of ``header``: ``(edited, path, how)``."""
    h = copy.deepcopy(header)
    root = h if rng.random() < 0.05 else h[rng.choice(["graph", "graph", "graph", "tensors"])]
    paths = _leaves(root)
    path = rng.choice(paths)
    parent, key = _get(root, path[:-1]), path[-1]
    v = parent[key]
    names = _strings(header["graph"])
    if isinstance(v, bool):
        options = {"flip": not v, "int": int(v), "str": "yes"}
    elif isinstance(v, int):
        options = {"+1": v + 1, "-1": v - 1, "x2": 2 * v, "big": 2 ** 40 + v,
                   "negative": -v - 1, "str": str(v), "list": [v], "null": None, "float": v + 0.5}
    elif isinstance(v, float):
        options = {"x2": 2 * v, "+1": v + 1, "negative": -v, "str": str(v), "null": None}
    elif isinstance(v, str):
        options = {"swap": rng.choice(names), "unknown": v + "_x", "int": 7, "list": [v]}
    elif isinstance(v, list):
        options = {"drop": v[:-1], "dup": v + v[-1:], "dict": {}, "int": 1, "reverse": v[::-1]}
    else:
        options = {"drop-key": next(iter(v)) if v else None, "list": [], "int": 0}
    how = rng.choice(sorted(options))
    if how == "drop-key":
        if options[how] is not None:
            del v[options[how]]
    elif rng.random() < 0.08 and isinstance(parent, dict):
        how = "delete"
        del parent[key]
    else:
        parent[key] = options[how]
    return h, path, how


#: path parts of edits that describe another valid model, whose output may differ: a float
#: attribute (eps), a flag, a binarizer's kind or option, a function's keyword (the resize mode)
VALUE_KEYS = {"eps", "count_include_pad", "act", "pad_mode", "use_k", "scale", "variant",
              "kwargs", "bn_folded"}


def _valid_other_model(path: tuple, how: str) -> bool:
    """Whether an edit may change the output without being refused: a value of
    :data:`VALUE_KEYS`, a reference swapped for another existing one of the same shape (a
    module's tensor, a node's argument), or a function argument replaced by a number (``y + 7``
    instead of ``y + x``). Structural edits (shapes, offsets, dtypes, references to what does
    not exist, geometry that changes a shape) are refused or harmless."""
    swapped_ref = (how == "swap" and "tensors" in path[:3]) or (
        "args" in path and how in ("swap", "int"))
    return swapped_ref or bool(VALUE_KEYS.intersection(map(str, path)))


def test_seeded_header_edits_with_the_hash_recomputed(original, tmp_path):
    """300 seeded header edits with the checksum recomputed: each loads and gives the original
    output bit-identically, or describes another valid model, or is refused with one
    ``BdnFormatError`` line (load) / ``BdnFormatError`` or ``RuntimeInputError`` (run). Never
    another exception type."""
    x, out = original["x"], original["out"]
    counts = {"refused": 0, "same": 0, "other model": 0}
    differing, raised = [], []
    for seed in range(300):
        rng = random.Random(seed)
        header, path, how = _mutate(original["header"], rng)
        file = _write(tmp_path / f"m{seed}.bdn", header, original["payload"])
        try:
            got = Runtime(file)(x)
        except (BdnFormatError, RuntimeInputError) as exc:
            assert "\n" not in str(exc)
            counts["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001  (collected: every failure in one report)
            raised.append((seed, path, how, f"{type(exc).__name__}: {exc}"))
            continue
        if got.shape == out.shape and np.array_equal(got, out, equal_nan=True):
            counts["same"] += 1
        else:
            counts["other model"] += 1
            if not _valid_other_model(path, how):
                differing.append((seed, path, how))
    assert not raised, f"edits that raised another exception type: {raised}"
    assert not differing, f"edits that ran with a different output: {differing}"
    assert counts["refused"] > 150, counts


def test_seeded_edits_with_the_hash_kept_are_corrupt(original, tmp_path):
    """Header edits and payload byte flips that keep the old checksum: always refused."""
    x = original["x"]
    for seed in range(100):
        rng = random.Random(1000 + seed)
        payload = bytearray(original["payload"])
        if seed % 2:
            header = original["header"]
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        else:
            header = _mutate(original["header"], rng)[0]
        file = _write(tmp_path / f"k{seed}.bdn", header, bytes(payload), original["digest"])
        if header == original["header"] and bytes(payload) == original["payload"]:
            continue
        with pytest.raises(BdnFormatError, match="corrupt|truncated|trailing|malformed"):
            Runtime(file)(x)


def test_seeded_payload_flips_with_the_hash_recomputed_only_change_values(original, tmp_path):
    """A payload byte changed with the hash recomputed is another set of weights: it loads (or
    a weight becomes non-finite and the output says so) and never raises another type."""
    x = original["x"]
    for seed in range(40):
        rng = random.Random(2000 + seed)
        payload = bytearray(original["payload"])
        payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        file = _write(tmp_path / f"p{seed}.bdn", original["header"], bytes(payload))
        try:
            got = Runtime(file)(x)
        except (BdnFormatError, RuntimeInputError):
            continue
        assert got.shape == original["out"].shape
