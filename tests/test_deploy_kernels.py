"""Exactness tests for bidense.runtime.kernels on every backend.

The reference is an independent float64 conv over +-1 values written here (direct tap loop with
einsum, NCHW, PyTorch semantics); it is itself cross-checked against torch.nn.functional once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest

from bidense.runtime import kernels as K

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _backend_param(name: str):
    avail = K.available_backends()
    reason = (
        f"backend {name!r} cannot run here: CPU features {K.cpu_features()}, "
        f"extension {K.extension_info()}"
    )
    return pytest.param(name, marks=pytest.mark.skipif(name not in avail, reason=reason), id=name)


ALL = [_backend_param(b) for b in K.BACKENDS]
COMPILED = [_backend_param(b) for b in K.BACKENDS if b != "numpy"]


def test_compiled_extension_is_built_here():
    # On the development machine the extension must be present; a missing build would otherwise
    # make every compiled-path test skip silently.
    assert K.extension_info()["available"], K.extension_info()
    assert "portable" in K.available_backends()


# ---------------------------------------------------------------------------------------------
# independent float64 references


def sgn(a: np.ndarray) -> np.ndarray:
    """+-1 with 0 -> +1 (the packing convention under test)."""
    return np.where(a < 0, -1.0, 1.0)


def ref_conv(xs, ws, stride, pad, dil, pad_value, groups=1):
    """float64 conv2d of NCHW xs with OIHW ws; padded taps have value pad_value."""
    n, c, h, w = xs.shape
    o, cg, kh, kw = ws.shape
    (s0, s1), (p0, p1), (d0, d1) = stride, pad, dil
    xp = np.full((n, c, h + 2 * p0, w + 2 * p1), float(pad_value))
    xp[:, :, p0 : p0 + h, p1 : p1 + w] = xs
    ho = (h + 2 * p0 - d0 * (kh - 1) - 1) // s0 + 1
    wo = (w + 2 * p1 - d1 * (kw - 1) - 1) // s1 + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for g in range(groups):
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, g * cg : (g + 1) * cg,
                           ky * d0 : ky * d0 + s0 * (ho - 1) + 1 : s0,
                           kx * d1 : kx * d1 + s1 * (wo - 1) + 1 : s1]
                out[:, g * og : (g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch, ws[g * og : (g + 1) * og, :, ky, kx])
    return out


def nhwc(a):
    return a.transpose(0, 2, 3, 1)


def test_reference_matches_torch():
    torch = pytest.importorskip("torch", reason="torch cross-check of the test reference")
    rng = np.random.default_rng(1)
    xs = sgn(rng.standard_normal((2, 6, 7, 9)))
    ws = sgn(rng.standard_normal((4, 3, 3, 2)))
    for pad_value in (0.0,):
        got = ref_conv(xs, ws, (2, 1), (1, 2), (2, 1), pad_value, groups=2)
        exp = torch.nn.functional.conv2d(torch.from_numpy(xs), torch.from_numpy(ws), stride=(2, 1),
                                         padding=(1, 2), dilation=(2, 1), groups=2).numpy()
        np.testing.assert_array_equal(got, exp)
    wt = sgn(rng.standard_normal((6, 5, 2, 3)))
    exp = torch.nn.functional.conv_transpose2d(torch.from_numpy(xs), torch.from_numpy(wt),
                                               stride=(2, 3)).numpy()
    np.testing.assert_array_equal(ref_conv_transpose(xs, wt), exp)


def ref_conv_transpose(xs, wt):
    """Transposed conv, stride == kernel.

    out[n, o, iy*s+ky, ix*s+kx] = sum_c x[n, c, iy, ix] * w[c, o, ky, kx].
    """
    n, c, h, w = xs.shape
    _, o, kh, kw = wt.shape
    out = np.zeros((n, o, h * kh, w * kw))
    for ky in range(kh):
        for kx in range(kw):
            out[:, :, ky::kh, kx::kw] = np.einsum("nchw,co->nohw", xs, wt[:, :, ky, kx])
    return out


# ---------------------------------------------------------------------------------------------
# packing


def test_pack_bit_layout_by_hand():
    x = np.ones((1, 1, 2, 130), np.float32)
    x[0, 0, 0, 0] = -1.0
    x[0, 0, 0, 65] = -0.5
    x[0, 0, 0, 129] = -3.0
    x[0, 0, 1, 3] = 0.0  # exact zero -> +1 (bit 0)
    x[0, 0, 1, 4] = -0.0  # negative zero -> +1 too (x < 0 is False)
    x[0, 0, 1, 63] = -2.0
    for be in K.available_backends():
        b = K.pack_nhwc(x, backend=be)
        assert b.dtype == np.uint64 and b.shape == (1, 1, 2, 3)
        assert b[0, 0, 0].tolist() == [1, 2, 2]
        assert b[0, 0, 1].tolist() == [1 << 63, 0, 0]
    assert K.count_zeros(x) == 2


@pytest.mark.parametrize("be", ALL)
@pytest.mark.parametrize("c", [1, 63, 64, 65, 200])
def test_pack_roundtrip(be, c):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, 3, 5, c)).astype(np.float32)
    b = K.pack_nhwc(x, backend=be, threads=2)
    np.testing.assert_array_equal(K.unpack_nhwc(b, c), sgn(x))
    if c % 64:
        assert not np.any(b[..., -1] >> np.uint64(c % 64))


def test_pack_weights_layouts():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 70, 3, 2))
    p = K.pack_weights_ohwi(w)
    assert p.shape == (5, 3, 2, 2)
    np.testing.assert_array_equal(K.unpack_nhwc(p, 70), sgn(w.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(K.pack_weights_ohwi(w.transpose(0, 2, 3, 1), layout="ohwi"), p)
    wt = rng.standard_normal((70, 4, 2, 2))
    pt = K.pack_weights_transpose(wt)
    assert pt.shape == (2, 2, 4, 2)
    np.testing.assert_array_equal(K.unpack_nhwc(pt, 70), sgn(wt.transpose(2, 3, 1, 0)))


# ---------------------------------------------------------------------------------------------
# dense conv: bit-exact integer counts

# (N, C, H, W, O, kernel, stride, padding, dilation)
DENSE = [
    (1, 64, 6, 6, 16, 3, 1, 1, 1),
    (2, 70, 7, 5, 13, 3, 1, 1, 1),  # C not a multiple of 64, odd H/W, O not a multiple of 8
    (1, 5, 9, 8, 3, 3, 2, 1, 1),  # C < 64, stride 2
    (1, 130, 5, 7, 24, 1, 1, 0, 1),  # 1x1
    (2, 33, 8, 9, 9, 2, 2, 0, 1),  # k = s = 2 (Transition)
    (1, 20, 11, 10, 17, 7, 1, 3, 1),  # 7x7 pad 3
    (1, 96, 9, 9, 8, 3, 1, 2, 2),  # dilation 2
    (1, 40, 4, 5, 10, 7, 2, 3, 1),  # kernel larger than the map: every pixel is a border pixel
    (1, 129, 13, 12, 40, (3, 1), (2, 1), (1, 0), (1, 1)),  # non-square, 5 panels
    (1, 8, 6, 7, 12, 3, 1, 0, 1),  # padding 0
    (1, 64, 6, 8, 16, (3, 2), 1, (1, 3), (1, 2)),  # pad wider than kernel extent, dilation 2 in W
]


def _case_arrays(case, seed):
    n, c, h, w, o, k, s, p, d = case
    k, s, p, d = (K._pair(v, "v", 0) for v in (k, s, p, d))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((o, c, *k)).astype(np.float32)
    return x, wt, k, s, p, d


@pytest.mark.parametrize("be", ALL)
@pytest.mark.parametrize("pad_mode", ["zero", "one"])
@pytest.mark.parametrize("ci", range(len(DENSE)))
def test_dense_conv_exact(be, pad_mode, ci):
    case = DENSE[ci]
    x, wt, k, s, p, d = _case_arrays(case, ci)
    y = K.binary_conv2d(K.pack_nhwc(x), K.pack_weights_ohwi(wt), x.shape[-1], k, s, p, d,
                        pad_mode=pad_mode, backend=be)
    ref = ref_conv(sgn(x).transpose(0, 3, 1, 2), sgn(wt), s, p, d,
                   0.0 if pad_mode == "zero" else 1.0)
    assert y.dtype == np.float32 and y.shape == nhwc(ref).shape
    np.testing.assert_array_equal(y, nhwc(ref))


@pytest.mark.parametrize("be", COMPILED)
def test_threads_give_identical_results(be):
    rng = np.random.default_rng(5)
    # many rows (row tasks) and few rows (tasks split over output-channel panels)
    for n, h, w, c, o in [(2, 9, 10, 70, 40), (1, 1, 3, 130, 72)]:
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        wt = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        xb, wb = K.pack_nhwc(x), K.pack_weights_ohwi(wt)
        sc = rng.uniform(0.5, 2, (n, o)).astype(np.float32)
        ys = [K.binary_conv2d(xb, wb, c, 3, 1, 1, scale=sc, threads=t, backend=be)
              for t in (1, 2, 3)]
        np.testing.assert_array_equal(ys[0], ys[1])
        np.testing.assert_array_equal(ys[0], ys[2])
        ref = ref_conv(sgn(x).transpose(0, 3, 1, 2), sgn(wt), (1, 1), (1, 1), (1, 1), 0.0)
        np.testing.assert_allclose(ys[0], nhwc(ref) * sc[:, None, None, :], rtol=1e-6)
    xd = rng.standard_normal((2, 7, 6, 70)).astype(np.float32)
    wd = rng.standard_normal((70, 1, 3, 3)).astype(np.float32)
    yd = [K.binary_conv2d(K.pack_nhwc(xd), K.pack_weights_ohwi(wd), 70, 3, 1, 1, groups=70,
                          threads=t, backend=be) for t in (1, 2)]
    np.testing.assert_array_equal(yd[0], yd[1])


@pytest.mark.parametrize("be", ALL)
def test_fused_epilogue(be):
    rng = np.random.default_rng(6)
    n, h, w, c, o = 2, 6, 5, 70, 12
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    scale = rng.uniform(-2, 2, (n, o)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    byp = rng.standard_normal((n, h, w, o)).astype(np.float32)
    slope = rng.uniform(0.1, 0.5, o).astype(np.float32)
    pre = rng.standard_normal(o).astype(np.float32)
    post = rng.standard_normal(o).astype(np.float32)
    y = K.binary_conv2d(K.pack_nhwc(x), K.pack_weights_ohwi(wt), c, 3, 1, 1, scale=scale,
                        bias=bias, bypass=byp, prelu=slope, prelu_pre=pre, prelu_post=post,
                        backend=be)
    dot = nhwc(ref_conv(sgn(x).transpose(0, 3, 1, 2), sgn(wt), (1, 1), (1, 1), (1, 1), 0.0))
    z = dot * scale[:, None, None, :].astype(np.float64) + bias + byp + pre
    ref = np.where(z > 0, z, z * slope) + post
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)
    # the float epilogue is the same float32 arithmetic on every backend: bit-identical
    y_np = K.binary_conv2d(K.pack_nhwc(x), K.pack_weights_ohwi(wt), c, 3, 1, 1, scale=scale,
                           bias=bias, bypass=byp, prelu=slope, prelu_pre=pre, prelu_post=post,
                           backend="numpy")
    np.testing.assert_array_equal(y, y_np)


# ---------------------------------------------------------------------------------------------
# depthwise and grouped

DEPTHWISE = [  # (N, C, H, W, kernel, stride, padding, dilation)
    (2, 70, 9, 8, 3, 1, 1, 1),
    (1, 5, 7, 7, 7, 1, 3, 1),
    (1, 64, 8, 9, 7, 2, 3, 1),
    (1, 130, 6, 5, 3, 1, 2, 2),
    (1, 3, 4, 4, 2, 2, 0, 1),
]


@pytest.mark.parametrize("be", ALL)
@pytest.mark.parametrize("pad_mode", ["zero", "one"])
@pytest.mark.parametrize("ci", range(len(DEPTHWISE)))
def test_depthwise_exact_with_per_channel_alpha(be, pad_mode, ci):
    n, c, h, w, k, s, p, d = DEPTHWISE[ci]
    rng = np.random.default_rng(100 + ci)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    xb, wb = K.pack_nhwc(x), K.pack_weights_ohwi(wt)
    pv = 0.0 if pad_mode == "zero" else 1.0
    dot = nhwc(ref_conv(sgn(x).transpose(0, 3, 1, 2), sgn(wt), (s, s), (p, p), (d, d), pv,
                        groups=c))
    y = K.binary_conv2d(xb, wb, c, k, s, p, d, groups=c, pad_mode=pad_mode, backend=be)
    np.testing.assert_array_equal(y, dot)
    # DAB's per-sample, per-input-channel alpha factors out exactly in the depthwise case
    alpha = rng.uniform(0.1, 3, (n, c)).astype(np.float32)
    ya = K.binary_conv2d(xb, wb, c, k, s, p, d, groups=c, pad_mode=pad_mode, scale=alpha,
                         backend=be)
    np.testing.assert_allclose(ya, dot * alpha[:, None, None, :], rtol=1e-6)


@pytest.mark.parametrize("be", ALL)
@pytest.mark.parametrize("c,o,groups", [(10, 6, 2), (128, 16, 2), (12, 8, 4)])
def test_grouped_conv_exact(be, c, o, groups):
    rng = np.random.default_rng(c + groups)
    x = rng.standard_normal((1, 6, 7, c)).astype(np.float32)
    wt = rng.standard_normal((o, c // groups, 3, 3)).astype(np.float32)
    y = K.binary_conv2d(K.pack_nhwc(x), K.pack_weights_ohwi(wt), c, 3, 1, 1, groups=groups,
                        backend=be)
    ref = ref_conv(sgn(x).transpose(0, 3, 1, 2), sgn(wt), (1, 1), (1, 1), (1, 1), 0.0, groups)
    np.testing.assert_array_equal(y, nhwc(ref))


# ---------------------------------------------------------------------------------------------
# transposed conv (stride == kernel)


@pytest.mark.parametrize("be", ALL)
@pytest.mark.parametrize("c,o,k", [(70, 12, 2), (5, 3, 3), (64, 9, (2, 3))])
def test_conv_transpose_exact(be, c, o, k):
    kh, kw = K._pair(k, "k", 1)
    rng = np.random.default_rng(c * o)
    x = rng.standard_normal((2, 4, 5, c)).astype(np.float32)
    wt = rng.standard_normal((c, o, kh, kw)).astype(np.float32)
    xb, wb = K.pack_nhwc(x), K.pack_weights_transpose(wt)
    ref = nhwc(ref_conv_transpose(sgn(x).transpose(0, 3, 1, 2), sgn(wt)))
    y = K.binary_conv_transpose2d(xb, wb, c, k, backend=be)
    assert y.shape == (2, 4 * kh, 5 * kw, o)
    np.testing.assert_array_equal(y, ref)
    scale = rng.uniform(0.5, 2, o).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    byp = rng.standard_normal(ref.shape).astype(np.float32)
    slope = np.full(o, 0.25, np.float32)
    y2 = K.binary_conv_transpose2d(xb, wb, c, k, scale=scale, bias=bias, bypass=byp,
                                   prelu=slope, backend=be)
    z = ref * scale + bias + byp
    np.testing.assert_allclose(y2, np.where(z > 0, z, 0.25 * z), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# DAB exact float path


@pytest.mark.parametrize("pad_mode", ["zero", "one"])
def test_dab_per_channel_alpha_exact(pad_mode):
    rng = np.random.default_rng(9)
    n, h, w, c, o = 2, 7, 6, 70, 11
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    alpha = rng.uniform(0.05, 2.0, (n, c)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, o).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    y = K.binary_conv2d_dab(K.pack_nhwc(x), alpha, K.pack_weights_ohwi(wt), c, 3, 2, 1,
                            scale=scale, bias=bias, pad_mode=pad_mode)
    a64 = alpha.astype(np.float64)
    xs = sgn(x).transpose(0, 3, 1, 2) * a64[:, :, None, None]
    if pad_mode == "zero":
        ref = ref_conv(xs, sgn(wt), (2, 2), (1, 1), (1, 1), 0.0)
    else:  # pad with +alpha_c: one-padded +-1 conv of the sign, then channel-scaled by hand
        xp = np.pad(sgn(x).transpose(0, 3, 1, 2), ((0, 0), (0, 0), (1, 1), (1, 1)),
                    constant_values=1.0) * a64[:, :, None, None]
        ref = ref_conv(xp, sgn(wt), (2, 2), (0, 0), (1, 1), 0.0)
    ref = nhwc(ref) * scale + bias
    mag = nhwc(ref_conv(np.abs(xs), np.ones_like(wt, dtype=np.float64), (2, 2), (1, 1), (1, 1),
                        0.0 if pad_mode == "zero" else 0.0)) * scale
    assert np.all(np.abs(y - ref) <= 1e-5 * (mag + 1) + 1e-5)
    # with alpha equal over channels it matches the XOR-popcount path with a folded scale
    a_same = np.repeat(alpha[:, :1], c, axis=1)
    y1 = K.binary_conv2d_dab(K.pack_nhwc(x), a_same, K.pack_weights_ohwi(wt), c, 3, 2, 1,
                             scale=scale, bias=bias, pad_mode=pad_mode)
    y2 = K.binary_conv2d(K.pack_nhwc(x), K.pack_weights_ohwi(wt), c, 3, 2, 1, pad_mode=pad_mode,
                         scale=a_same[:, :1] * scale, bias=bias)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# backend selection, fallback, bad input


def test_env_var_forces_backend(monkeypatch):
    monkeypatch.setenv("BIDENSE_KERNEL", "numpy")
    assert K.backend() == "numpy"
    monkeypatch.setenv("BIDENSE_KERNEL", "portable")
    assert K.backend() == "portable"
    monkeypatch.setenv("BIDENSE_KERNEL", "sse9")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        K.backend()
    monkeypatch.delenv("BIDENSE_KERNEL")
    assert K.backend() == K.available_backends()[0]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                          timeout=60)


def test_deploy_imports_no_torch():
    r = _run("import sys, bidense.runtime, bidense.runtime.kernels; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_numpy_fallback_without_extension():
    code = """
import sys, numpy as np
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == 'bidense.runtime._bkernels':
            raise ImportError('blocked for the test')
sys.meta_path.insert(0, Block())
from bidense.runtime import kernels as K
assert K.available_backends() == ['numpy'], K.available_backends()
assert K.backend() == 'numpy' and not K.extension_info()['available']
try:
    K.backend('avx2')
except RuntimeError as e:
    assert 'not available' in str(e)
else:
    raise SystemExit('forcing avx2 without the extension must fail')
x = np.random.default_rng(0).standard_normal((1, 4, 4, 3)).astype(np.float32)
w = np.ones((2, 3, 1, 1), np.float32)
y = K.binary_conv2d(K.pack_nhwc(x), K.pack_weights_ohwi(w), 3, 1)
exp = np.where(x < 0, -1.0, 1.0).sum(-1)
assert np.array_equal(y[..., 0], exp) and np.array_equal(y[..., 1], exp)
print('ok')
"""
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    # and it says so: one warning naming the slower path
    assert "compiled kernels unavailable" in r.stderr and "numpy path" in r.stderr


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 5, 5, 70)).astype(np.float32)
    xb = K.pack_nhwc(x)
    wb = K.pack_weights_ohwi(rng.standard_normal((8, 70, 3, 3)))
    with pytest.raises(ValueError, match="dtype uint64"):
        K.binary_conv2d(xb.astype(np.int64), wb, 70, 3)
    with pytest.raises(ValueError, match="4-D"):
        K.binary_conv2d(xb[0], wb, 70, 3)
    with pytest.raises(ValueError, match="words per position"):
        K.binary_conv2d(xb, wb, 200, 3)
    bad = xb.copy()
    bad[0, 0, 0, 1] |= np.uint64(1) << np.uint64(40)  # channel 104 of a 70-channel tensor
    with pytest.raises(ValueError, match="above channel 70"):
        K.binary_conv2d(bad, wb, 70, 3)
    with pytest.raises(ValueError, match="kernel"):
        K.binary_conv2d(xb, wb, 70, 1)
    with pytest.raises(ValueError, match="pad_mode"):
        K.binary_conv2d(xb, wb, 70, 3, pad_mode="reflect")
    with pytest.raises(ValueError, match="scale must have shape"):
        K.binary_conv2d(xb, wb, 70, 3, scale=np.ones(7))
    with pytest.raises(ValueError, match="bias must have shape"):
        K.binary_conv2d(xb, wb, 70, 3, bias=np.ones((8, 1)))
    with pytest.raises(ValueError, match="bypass must have shape"):
        K.binary_conv2d(xb, wb, 70, 3, bypass=np.ones((1, 5, 5, 8), np.float32))
    with pytest.raises(ValueError, match="threads"):
        K.binary_conv2d(xb, wb, 70, 3, threads=0)
    with pytest.raises(ValueError, match="larger than padded input"):
        K.binary_conv2d(xb[:, :2], wb, 70, 3)
    with pytest.raises(ValueError, match="groups"):
        K.binary_conv2d(xb, wb, 70, 3, groups=3)
    with pytest.raises(ValueError, match="floating-point"):
        K.pack_nhwc(np.ones((1, 2, 2, 3), np.int32))
    with pytest.raises(ValueError, match="NHWC"):
        K.pack_nhwc(np.ones((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="stride == kernel"):
        K.binary_conv_transpose2d(xb, K.pack_weights_transpose(np.ones((70, 4, 2, 2))), 70, 2, 1)
    with pytest.raises(ValueError, match="alpha must have shape"):
        K.binary_conv2d_dab(xb, np.ones((1, 69)), wb, 70, 3)
    with pytest.raises(ValueError, match="unknown kernel backend"):
        K.binary_conv2d(xb, wb, 70, 3, backend="gpu")


def test_extension_calls_are_checked():
    """The C entry points take keywords only and check every buffer, naming the argument."""
    ext = K._ext
    if ext is None:
        pytest.skip("compiled extension not built")
    n, hw, c = 2, 3, 5
    good = dict(x=np.zeros((n, hw, c), np.float32), out=np.empty((n, c)), n=n, hw=hw, c=c,
                threads=1)
    ext.chan_sum(**good)
    ext.chan_sum(**dict(good, n=np.int64(n), c=np.int32(c)))  # __index__ integers are ints
    no_threads = {k: v for k, v in good.items() if k != "threads"}
    with pytest.raises(TypeError, match="keyword arguments only"):
        ext.chan_sum(*good.values())
    with pytest.raises(TypeError, match="missing required keyword argument 'threads'"):
        ext.chan_sum(**no_threads)
    with pytest.raises(TypeError, match="unexpected keyword argument 'thread'"):
        ext.chan_sum(**no_threads, thread=1)
    with pytest.raises(TypeError, match="integer"):
        ext.chan_sum(**dict(good, threads=1.5))
    with pytest.raises(ValueError, match="chan_sum: out has 9 float64 elements, expected 10"):
        ext.chan_sum(**dict(good, out=np.empty(9)))
    with pytest.raises(ValueError, match="chan_sum: x must hold float32"):
        ext.chan_sum(**dict(good, x=np.zeros((n, hw, c))))
    with pytest.raises(ValueError, match="chan_sum: x must be a C-contiguous float32 buffer"):
        ext.chan_sum(**dict(good, x=np.zeros((c, hw, n), np.float32).T))
    read_only = np.empty((n, c))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="chan_sum: out must be a writable"):
        ext.chan_sum(**dict(good, out=read_only))
    with pytest.raises(ValueError, match="chan_sum: x is required"):
        ext.chan_sum(**dict(good, x=None))

    # conv2d: the optional epilogue operands default to None; a bad one fails after the others
    # were acquired, and every view is released (an array.array cannot grow while exported)
    h = w = 4
    o, cw = 8, 2
    conv = dict(x_bits=array("Q", [0]) * (n * h * w * cw), w_bits=np.zeros((o, 3, 3, cw),
                np.uint64), out=np.empty((n, h, w, o), np.float32), n=n, h=h, w=w, c=70, o=o,
                kh=3, kw=3, sh=1, sw=1, ph=1, pw=1, dh=1, dw=1, zero_pad=1,
                scale=np.ones(o, np.float32), scale_per_n=0, bias=np.zeros(o, np.float32),
                path=0, threads=1)
    ext.conv2d(**conv)  # all bits 0: +1 inputs and weights, y = 70 * (number of valid taps)
    taps = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]], np.float32)
    np.testing.assert_array_equal(conv["out"], np.broadcast_to(70 * taps[:, :, None], (n, h, w, o)))
    with pytest.raises(ValueError, match="conv2d: prelu has 7 float32 elements, expected 8"):
        ext.conv2d(**conv, prelu=np.ones(7, np.float32))
    with pytest.raises(ValueError, match="conv2d: w_bits must hold uint64"):
        ext.conv2d(**dict(conv, w_bits=conv["w_bits"].view(np.int64)))
    with pytest.raises(ValueError, match=r"depthwise2d: o \(8\) must equal c \(70\)"):
        ext.depthwise2d(**conv)
    with pytest.raises(TypeError, match="unexpected keyword argument 'stride'"):
        ext.conv2d(**conv, stride=1)
    conv["x_bits"].append(0)
