"""Tests of the .bdn format and the exporter (bidense.runtime.format, bidense.export)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from bidense.export import ExportInfo, UnsupportedModelError, export
from bidense.nn import BinaryConv2d
from bidense.runtime import format as bdn
from bidense.runtime.runner import Runtime


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        BinaryConv2d(8, 70, 3, padding=1, act_binarizer="sign", weight_binarizer="mean_abs"),
        nn.BatchNorm2d(70),
    )
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture()
def bdn_file(tmp_path):
    path = tmp_path / "m.bdn"
    info = export(_small_model(), path, torch.randn(1, 3, 8, 8))
    return path, info


def test_roundtrip_tensors(tmp_path):
    t = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], np.uint64)}
    size = bdn.write_bdn(tmp_path / "x.bdn", {"g": 1}, t, {"model": "m"})
    f = bdn.read_bdn(tmp_path / "x.bdn")
    assert size == (tmp_path / "x.bdn").stat().st_size
    assert f.graph == {"g": 1} and f.metadata == {"model": "m"}
    np.testing.assert_array_equal(f.tensors["a"], t["a"])
    np.testing.assert_array_equal(f.tensors["b"], t["b"])
    assert f.tensors["b"].dtype == np.uint64


def test_export_info_sizes(bdn_file):
    path, info = bdn_file
    assert isinstance(info, ExportInfo)
    assert info.file_bytes == path.stat().st_size
    # one binary conv 70 x 8 x 3 x 3 = 5040 one-bit weights, one uint64 word per (o, ky, kx)
    assert info.binary_params == 70 * 8 * 9
    assert info.binary_bytes == 70 * 9 * 8
    assert info.binary_bytes + info.fp_bytes + info.other_bytes + info.overhead_bytes == (
        info.file_bytes)
    assert info.theoretical_bits == info.binary_params + 32 * info.fp_params
    text = str(info)
    assert "binary" in text and "fp32" in text and "overhead" in text


def test_bn_folded_and_metadata(bdn_file):
    path, _ = bdn_file
    f = bdn.read_bdn(path)
    kinds = [n.get("kind") for n in f.graph["nodes"]]
    assert "bn" not in kinds  # both BNs folded into the preceding convs
    assert f.metadata["input_shape"] == [1, 3, 8, 8]
    assert "bidense_version" in f.metadata
    w = [k for k in f.tensors if k.endswith("w_bits")]
    assert len(w) == 1 and f.tensors[w[0]].dtype == np.uint64


def test_packed_weight_bits_match_signs(tmp_path):
    torch.manual_seed(1)
    conv = BinaryConv2d(5, 3, 3, act_binarizer="sign", weight_binarizer="sign").eval()
    export(conv, tmp_path / "c.bdn", torch.randn(1, 5, 6, 6))
    f = bdn.read_bdn(tmp_path / "c.bdn")
    (name,) = [k for k in f.tensors if k.endswith("w_bits")]
    words = f.tensors[name]  # (O, KH, KW, 1)
    w = conv.weight.detach().numpy().transpose(0, 2, 3, 1)  # OHWI
    for o in range(3):
        for ky in range(3):
            for kx in range(3):
                expect = sum(1 << c for c in range(5) if w[o, ky, kx, c] < 0)
                assert int(words[o, ky, kx, 0]) == expect


def _patch(path, offset, data: bytes):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_truncated_file(bdn_file):
    path, _ = bdn_file
    raw = path.read_bytes()
    for cut in (10, 30, len(raw) - 5):
        path.write_bytes(raw[:cut])
        with pytest.raises(bdn.BdnFormatError, match=r"m\.bdn: truncated"):
            bdn.read_bdn(path)


def test_flipped_byte_is_corrupt(bdn_file):
    path, _ = bdn_file
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(bdn.BdnFormatError, match=r"m\.bdn: corrupt file \(checksum"):
        Runtime(path)


def test_flipped_header_byte_is_corrupt(bdn_file):
    path, _ = bdn_file
    _patch(path, 40, b"#")
    with pytest.raises(bdn.BdnFormatError, match="corrupt|malformed"):
        bdn.read_bdn(path)


def test_foreign_file(tmp_path):
    p = tmp_path / "foreign.bdn"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(bdn.BdnFormatError, match=r"foreign\.bdn: not a bidense"):
        bdn.read_bdn(p)


def test_newer_version(bdn_file):
    path, _ = bdn_file
    _patch(path, 8, struct.pack("<I", bdn.FORMAT_VERSION + 1))
    with pytest.raises(bdn.BdnFormatError, match="newer than"):
        bdn.read_bdn(path)


def test_missing_file(tmp_path):
    with pytest.raises(bdn.BdnFormatError, match="nope.bdn: cannot read"):
        bdn.read_bdn(tmp_path / "nope.bdn")


def test_atomic_write_leaves_no_temp(tmp_path):
    bdn.write_bdn(tmp_path / "a.bdn", {}, {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bdn"]


def test_unsupported_ops_are_listed(tmp_path):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Upsample(scale_factor=2, mode="bicubic")
            self.conv = nn.Conv2d(3, 3, 3, padding="same")

        def forward(self, x):
            return torch.fft.fft2(self.conv(x)).real + torch.cumsum(x, 1)

    with pytest.raises(UnsupportedModelError) as exc:
        export(Odd(), tmp_path / "o.bdn", torch.randn(1, 3, 4, 4))
    msg = str(exc.value)
    assert "fft2" in msg and "cumsum" in msg and "padding" in msg


def test_header_is_json_with_graph(bdn_file):
    path, _ = bdn_file
    raw = path.read_bytes()
    magic, version, hlen = struct.unpack_from("<8sIQ", raw, 0)
    header = json.loads(raw[20:20 + hlen])
    assert magic == bdn.MAGIC and version == bdn.FORMAT_VERSION
    assert {"graph", "tensors", "metadata", "payload_bytes"} <= set(header)
