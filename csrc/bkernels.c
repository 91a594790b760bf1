/*
 * bidense.runtime._bkernels -- XNOR/XOR-popcount binary convolution kernels and the float32
 * helpers of the graph runtime.
 *
 * Plain CPython C API over the buffer protocol: no numpy headers, no torch.
 * Conventions (see docs/runtime.md and shared/reference/engines.md section 5):
 *   - activations NHWC, channels packed LSB-first into uint64 words, 64 per word,
 *     bit 1 = -1 (the float sign bit), bit 0 = +1, unused high bits are 0;
 *   - weights packed the same way in OHWI order;
 *   - the +-1 dot product over K true bit positions is K - 2*popcount(x XOR w).
 * Dense convs use implicit GEMM over contiguous row segments of a one-padded copy of the
 * input, 8-output-channel weight panels and an ISA-specific micro-kernel chosen at run time
 * (AVX-512 VPOPCNTDQ, AVX2 nibble LUT with byte accumulators, scalar POPCNT, NEON vcnt with
 * byte accumulators on aarch64, portable C).
 * Zero padding (PyTorch semantics) is restored exactly by a per-output-channel border
 * correction: the one-padded count includes the -1 weights of padded taps, which we subtract.
 *
 * Calling convention (bidense.runtime.kernels is the one caller):
 *   - every entry point with more than one argument takes keyword arguments only: the fields
 *     of the `*_args` struct next to it, listed once in its `*_kw` table (conv2d and
 *     depthwise2d share conv_args and conv_parse); operands that may be None (epilogue terms,
 *     tau, dev, fp_gemm's scale/bias) default to None, everything else is required. A
 *     positional, missing or misnamed argument raises TypeError, so adding a keyword cannot
 *     shift the others;
 *   - every array operand goes through get_buf: a C-contiguous buffer of the element type the
 *     entry point states (uint64, int64, float32, float64) holding exactly the element count its
 *     sizes imply, writable for outputs; anything else raises ValueError naming the argument.
 *     The views of one call are collected in a views_t and released at its one cleanup label.
 *
 * -DBIDENSE_NO_PYTHON compiles the kernels and the dense conv driver (conv_sizes, conv2d_run)
 * without the CPython glue, for C test drivers such as tools/neon_check.c.
 */
#ifndef BIDENSE_NO_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define BK_X86 1
#include <immintrin.h>
#else
#define BK_X86 0
#endif

/* NEON is mandatory on aarch64, so its kernels are a compile-time choice. */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define BK_NEON 1
#include <arm_neon.h>
#else
#define BK_NEON 0
#endif

/* Kernel paths (kernels._PATH_ID). P_POPCNT, P_AVX2 and P_AVX512 exist on x86 only, P_NEON on
 * aarch64 only (path_supported says which run here). */
enum { P_PORTABLE = 0, P_POPCNT = 1, P_AVX2 = 2, P_AVX512 = 3, P_NEON = 4 };

/* Segments of the reduction: each is `len` contiguous input words at offset `off` (relative to
 * the pixel's base word) matched with weight K-words starting at `k`. */
typedef struct {
    int n;
    long off[64];
    int len[64];
    int k[64];
} segs_t;

/* ------------------------------------------------------------------------------------------ */
/* Portable and scalar-POPCNT micro-kernels: 8 oc x 2 px.                                      */

static inline int popc_swar(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}

#define SCALAR_MK(NAME, ATTR, POPC, NR)                                                         \
    ATTR static void NAME(const segs_t *sg, const uint64_t *base, long ps,                     \
                          const uint64_t *panel, int32_t *cnt, long cstride) {                  \
        int64_t acc[NR][8];                                                                     \
        for (int p = 0; p < NR; p++)                                                            \
            for (int i = 0; i < 8; i++) acc[p][i] = 0;                                          \
        for (int s = 0; s < sg->n; s++) {                                                       \
            const uint64_t *a = base + sg->off[s];                                              \
            const uint64_t *w = panel + (long)sg->k[s] * 8;                                     \
            int len = sg->len[s];                                                               \
            for (int k = 0; k < len; k++) {                                                     \
                for (int p = 0; p < NR; p++) {                                                  \
                    uint64_t v = a[p * ps + k];                                                 \
                    for (int i = 0; i < 8; i++) acc[p][i] += POPC(v ^ w[k * 8 + i]);            \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int p = 0; p < NR; p++)                                                            \
            for (int i = 0; i < 8; i++) cnt[p * cstride + i] = (int32_t)acc[p][i];              \
    }

SCALAR_MK(mk_portable_2, , popc_swar, 2)
SCALAR_MK(mk_portable_1, , popc_swar, 1)

#if BK_X86
#define POPC_HW(x) __builtin_popcountll(x)
SCALAR_MK(mk_popcnt_2, __attribute__((target("popcnt"))), POPC_HW, 2)
SCALAR_MK(mk_popcnt_1, __attribute__((target("popcnt"))), POPC_HW, 1)

/* ------------------------------------------------------------------------------------------ */
/* AVX2: nibble-LUT popcount into byte accumulators, vpsadbw flush at most every 31 K-words
 * (a byte gains at most 8 per step: 31 * 8 = 248 <= 255). 8 oc (two ymm) x NR px. */

#define AVX2_MK(NR)                                                                             \
    __attribute__((target("avx2,popcnt"))) static void mk_avx2_##NR(                            \
        const segs_t *sg, const uint64_t *base, long ps, const uint64_t *panel, int32_t *cnt,   \
        long cstride) {                                                                         \
        const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,    \
                                             0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);   \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                              \
        const __m256i zero = _mm256_setzero_si256();                                            \
        __m256i sA[NR], sB[NR], bA[NR], bB[NR];                                                 \
        for (int p = 0; p < NR; p++) sA[p] = sB[p] = bA[p] = bB[p] = zero;                      \
        int since = 0;                                                                          \
        for (int s = 0; s < sg->n; s++) {                                                       \
            const uint64_t *a = base + sg->off[s];                                              \
            const uint64_t *w = panel + (long)sg->k[s] * 8;                                     \
            int len = sg->len[s];                                                               \
            int k = 0;                                                                          \
            while (k < len) {                                                                   \
                int chunk = len - k;                                                            \
                if (chunk > 31 - since) chunk = 31 - since;                                     \
                for (int j = 0; j < chunk; j++, k++) {                                          \
                    __m256i wA = _mm256_loadu_si256((const __m256i *)(w + k * 8));              \
                    __m256i wB = _mm256_loadu_si256((const __m256i *)(w + k * 8 + 4));          \
                    for (int p = 0; p < NR; p++) {                                              \
                        __m256i v = _mm256_set1_epi64x((long long)a[p * ps + k]);               \
                        __m256i x = _mm256_xor_si256(v, wA);                                    \
                        __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4));         \
                        __m256i hi = _mm256_shuffle_epi8(                                       \
                            lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4));                \
                        bA[p] = _mm256_add_epi8(bA[p], _mm256_add_epi8(lo, hi));                \
                        x = _mm256_xor_si256(v, wB);                                            \
                        lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4));                 \
                        hi = _mm256_shuffle_epi8(lut,                                           \
                                                 _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)); \
                        bB[p] = _mm256_add_epi8(bB[p], _mm256_add_epi8(lo, hi));                \
                    }                                                                           \
                }                                                                               \
                since += chunk;                                                                 \
                if (since == 31) {                                                              \
                    for (int p = 0; p < NR; p++) {                                              \
                        sA[p] = _mm256_add_epi64(sA[p], _mm256_sad_epu8(bA[p], zero));          \
                        sB[p] = _mm256_add_epi64(sB[p], _mm256_sad_epu8(bB[p], zero));          \
                        bA[p] = bB[p] = zero;                                                   \
                    }                                                                           \
                    since = 0;                                                                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int p = 0; p < NR; p++) {                                                          \
            sA[p] = _mm256_add_epi64(sA[p], _mm256_sad_epu8(bA[p], zero));                      \
            sB[p] = _mm256_add_epi64(sB[p], _mm256_sad_epu8(bB[p], zero));                      \
            int64_t t[8];                                                                       \
            _mm256_storeu_si256((__m256i *)t, sA[p]);                                           \
            _mm256_storeu_si256((__m256i *)(t + 4), sB[p]);                                     \
            for (int i = 0; i < 8; i++) cnt[p * cstride + i] = (int32_t)t[i];                   \
        }                                                                                       \
    }

AVX2_MK(4)
AVX2_MK(1)

/* ------------------------------------------------------------------------------------------ */
/* AVX-512 VPOPCNTDQ: one zmm = 8 oc x 64 bits of one K-word; vpopcntq gives per-oc counts in
 * 64-bit lanes directly, so no flush is needed. NPAN panels (8 oc each) x NR px. */

#define AVX512_MK(NPAN, NR)                                                                     \
    __attribute__((target("avx512f,avx512vpopcntdq"))) static void mk_avx512_##NPAN##_##NR(     \
        const segs_t *sg, const uint64_t *base, long ps, const uint64_t *panel, long pstride,   \
        int32_t *cnt, long cstride) {                                                           \
        __m512i acc[NPAN][NR];                                                                  \
        for (int q = 0; q < NPAN; q++)                                                          \
            for (int p = 0; p < NR; p++) acc[q][p] = _mm512_setzero_si512();                    \
        for (int s = 0; s < sg->n; s++) {                                                       \
            const uint64_t *a = base + sg->off[s];                                              \
            const uint64_t *w = panel + (long)sg->k[s] * 8;                                     \
            int len = sg->len[s];                                                               \
            for (int k = 0; k < len; k++) {                                                     \
                __m512i wv[NPAN];                                                               \
                for (int q = 0; q < NPAN; q++)                                                  \
                    wv[q] = _mm512_loadu_si512((const void *)(w + q * pstride + k * 8));        \
                for (int p = 0; p < NR; p++) {                                                  \
                    __m512i v = _mm512_set1_epi64((long long)a[p * ps + k]);                    \
                    for (int q = 0; q < NPAN; q++)                                              \
                        acc[q][p] = _mm512_add_epi64(                                           \
                            acc[q][p], _mm512_popcnt_epi64(_mm512_xor_si512(v, wv[q])));        \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int q = 0; q < NPAN; q++)                                                          \
            for (int p = 0; p < NR; p++)                                                        \
                _mm256_storeu_si256((__m256i *)(cnt + p * cstride + q * 8),                     \
                                    _mm512_cvtepi64_epi32(acc[q][p]));                          \
    }

AVX512_MK(2, 6)
AVX512_MK(2, 1)
AVX512_MK(1, 6)
AVX512_MK(1, 1)
#endif /* BK_X86 */

#if BK_NEON
/* ------------------------------------------------------------------------------------------ */
/* NEON: one q register holds 2 oc x 64 bits of one K-word; vcntq_u8 gives byte popcounts of
 * x XOR w, summed in byte accumulators and flushed at most every 31 K-words (31 * 8 = 248 <=
 * 255, as on AVX2) by pairwise widening adds into uint32 per-oc counts. 8 oc (four q
 * registers) x NR px. */

/* Add the byte counts b (oc pairs 01, 23, 45, 67) to the per-oc counts lo (oc 0-3) and hi
 * (oc 4-7) and clear them: vpaddlq_u8 + vpaddlq_u16 leave each oc's count in two uint32
 * lanes, and vpaddq_u32 adds those pairs across two registers. */
static inline void neon_flush(uint8x16_t b[4], uint32x4_t *lo, uint32x4_t *hi) {
    uint32x4_t h[4];
    for (int q = 0; q < 4; q++) {
        h[q] = vpaddlq_u16(vpaddlq_u8(b[q]));
        b[q] = vdupq_n_u8(0);
    }
    *lo = vaddq_u32(*lo, vpaddq_u32(h[0], h[1]));
    *hi = vaddq_u32(*hi, vpaddq_u32(h[2], h[3]));
}

#define NEON_MK(NR)                                                                             \
    static void mk_neon_##NR(const segs_t *sg, const uint64_t *base, long ps,                  \
                             const uint64_t *panel, int32_t *cnt, long cstride) {               \
        uint8x16_t b[NR][4];                                                                    \
        uint32x4_t lo[NR], hi[NR];                                                              \
        for (int p = 0; p < NR; p++) {                                                          \
            for (int q = 0; q < 4; q++) b[p][q] = vdupq_n_u8(0);                                \
            lo[p] = hi[p] = vdupq_n_u32(0);                                                     \
        }                                                                                       \
        int since = 0;                                                                          \
        for (int s = 0; s < sg->n; s++) {                                                       \
            const uint64_t *a = base + sg->off[s];                                              \
            const uint64_t *w = panel + (long)sg->k[s] * 8;                                     \
            int len = sg->len[s];                                                               \
            int k = 0;                                                                          \
            while (k < len) {                                                                   \
                int chunk = len - k;                                                            \
                if (chunk > 31 - since) chunk = 31 - since;                                     \
                for (int j = 0; j < chunk; j++, k++) {                                          \
                    uint8x16_t wv[4];                                                           \
                    for (int q = 0; q < 4; q++)                                                 \
                        wv[q] = vreinterpretq_u8_u64(vld1q_u64(w + k * 8 + q * 2));             \
                    for (int p = 0; p < NR; p++) {                                              \
                        uint8x16_t v = vreinterpretq_u8_u64(vld1q_dup_u64(a + p * ps + k));     \
                        for (int q = 0; q < 4; q++)                                             \
                            b[p][q] = vaddq_u8(b[p][q], vcntq_u8(veorq_u8(v, wv[q])));          \
                    }                                                                           \
                }                                                                               \
                since += chunk;                                                                 \
                if (since == 31) {                                                              \
                    for (int p = 0; p < NR; p++) neon_flush(b[p], &lo[p], &hi[p]);              \
                    since = 0;                                                                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int p = 0; p < NR; p++) {                                                          \
            neon_flush(b[p], &lo[p], &hi[p]);                                                   \
            vst1q_s32(cnt + p * cstride, vreinterpretq_s32_u32(lo[p]));                         \
            vst1q_s32(cnt + p * cstride + 4, vreinterpretq_s32_u32(hi[p]));                     \
        }                                                                                       \
    }

NEON_MK(4)
NEON_MK(1)
#endif /* BK_NEON */

/* ------------------------------------------------------------------------------------------ */
/* CPU features and path selection.                                                           */

static int cpu_has(const char *what) {
    if (!strcmp(what, "neon")) return BK_NEON;
#if BK_X86
    __builtin_cpu_init();
    if (!strcmp(what, "popcnt")) return __builtin_cpu_supports("popcnt") ? 1 : 0;
    if (!strcmp(what, "avx2")) return __builtin_cpu_supports("avx2") ? 1 : 0;
    if (!strcmp(what, "avx512f")) return __builtin_cpu_supports("avx512f") ? 1 : 0;
    if (!strcmp(what, "avx512vpopcntdq"))
        return __builtin_cpu_supports("avx512vpopcntdq") ? 1 : 0;
    if (!strcmp(what, "fma")) return __builtin_cpu_supports("fma") ? 1 : 0;
    if (!strcmp(what, "bmi2")) return __builtin_cpu_supports("bmi2") ? 1 : 0;
#else
    (void)what;
#endif
    return 0;
}

static int path_supported(int path) {
    switch (path) {
    case P_PORTABLE: return 1;
    case P_POPCNT: return cpu_has("popcnt");
    case P_AVX2: return cpu_has("avx2") && cpu_has("popcnt");
    case P_AVX512: return cpu_has("avx512f") && cpu_has("avx512vpopcntdq");
    case P_NEON: return cpu_has("neon");
    default: return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Dense conv driver.                                                                          */

/* One conv2d / depthwise2d call: the parsed keywords (conv_parse), derived sizes, the operands'
 * data and the dense driver's work arrays. A depthwise call has O == C and reads x and w as
 * given. */
typedef struct {
    int N, H, W, C, CW, O, KH, KW, sh, sw, ph, pw, dh, dw, zero_pad;
    int Ho, Wo, Hp, Wp, NP, K;
    const uint64_t *x;      /* input as given (N, H, W, CW) */
    const uint64_t *w;      /* weights as given: dense (O, KH, KW, CW), depthwise (KH, KW, CW) */
    const uint64_t *in;     /* input the kernels read: dense (N, Hp, Wp, CW), depthwise = x */
    const uint64_t *panels; /* dense: (NP, K, 8) */
    const int32_t *negw;    /* dense: (O, KH*KW), number of -1 weights per tap (true channels) */
    const float *scale;     /* (O,) or (N, O) */
    int scale_per_n;
    const float *bias;      /* (O,) */
    const float *bypass;    /* (N, Ho, Wo, O) or NULL */
    const float *pre, *slope, *post; /* (O,) or NULL: y = PReLU(y + pre; slope) + post */
    float *out;             /* (N, Ho, Wo, O) */
    segs_t sg;
    int path, threads;
} conv_t;

/* Fused epilogue for one output pixel, channels [o0, o1), from (already corrected) counts:
 * y = (K - 2c) * scale + bias (+ bypass) then PReLU(y + pre; slope) + post. Separate simple
 * loops over restrict pointers so the compiler vectorises them; the float operations and their
 * order match the numpy path exactly, so every backend gives bit-identical floats. */
static void epi_pixel(const conv_t *c, int n, long pix, const int32_t *restrict cp, int o0,
                      int o1, int K) {
    float *restrict yp = c->out + pix * c->O;
    const float *restrict sc = c->scale + (c->scale_per_n ? (long)n * c->O : 0);
    const float *restrict bi = c->bias;
    for (int o = o0; o < o1; o++) yp[o] = (float)(K - 2 * cp[o]) * sc[o] + bi[o];
    if (c->bypass) {
        const float *restrict by = c->bypass + pix * c->O;
        for (int o = o0; o < o1; o++) yp[o] += by[o];
    }
    if (c->slope) {
        const float *restrict sl = c->slope;
        if (c->pre)
            for (int o = o0; o < o1; o++) yp[o] += c->pre[o];
        for (int o = o0; o < o1; o++) yp[o] = yp[o] > 0.0f ? yp[o] : yp[o] * sl[o];
        if (c->post)
            for (int o = o0; o < o1; o++) yp[o] += c->post[o];
    }
}

/* Counts for output row (n, oy), panels [p0, p1), then the fused epilogue. */
static void conv_row(const conv_t *c, int n, int oy, int p0, int p1, int32_t *cnt) {
    const long cstride = (long)c->NP * 8;
    const long ps = (long)c->sw * c->CW;
    const uint64_t *rowbase = c->in + ((long)n * c->Hp + (long)oy * c->sh) * c->Wp * c->CW;
    const long pstride = (long)c->K * 8;
    int p = p0;
    while (p < p1) {
        const uint64_t *panel = c->panels + (long)p * pstride;
        int npan = 1;
#if BK_X86
        if (c->path == P_AVX512 && p + 1 < p1) npan = 2;
#endif
        int ox = 0;
        while (ox < c->Wo) {
            const uint64_t *base = rowbase + (long)ox * ps;
            int32_t *cp = cnt + (long)ox * cstride + (long)p * 8;
            int done = 1;
            switch (c->path) {
#if BK_X86
            case P_AVX512:
                if (c->Wo - ox >= 6) {
                    if (npan == 2) mk_avx512_2_6(&c->sg, base, ps, panel, pstride, cp, cstride);
                    else mk_avx512_1_6(&c->sg, base, ps, panel, pstride, cp, cstride);
                    done = 6;
                } else {
                    if (npan == 2) mk_avx512_2_1(&c->sg, base, ps, panel, pstride, cp, cstride);
                    else mk_avx512_1_1(&c->sg, base, ps, panel, pstride, cp, cstride);
                }
                break;
            case P_AVX2:
                if (c->Wo - ox >= 4) {
                    mk_avx2_4(&c->sg, base, ps, panel, cp, cstride);
                    done = 4;
                } else {
                    mk_avx2_1(&c->sg, base, ps, panel, cp, cstride);
                }
                break;
            case P_POPCNT:
                if (c->Wo - ox >= 2) {
                    mk_popcnt_2(&c->sg, base, ps, panel, cp, cstride);
                    done = 2;
                } else {
                    mk_popcnt_1(&c->sg, base, ps, panel, cp, cstride);
                }
                break;
#endif
#if BK_NEON
            case P_NEON:
                if (c->Wo - ox >= 4) {
                    mk_neon_4(&c->sg, base, ps, panel, cp, cstride);
                    done = 4;
                } else {
                    mk_neon_1(&c->sg, base, ps, panel, cp, cstride);
                }
                break;
#endif
            default:
                if (c->Wo - ox >= 2) {
                    mk_portable_2(&c->sg, base, ps, panel, cp, cstride);
                    done = 2;
                } else {
                    mk_portable_1(&c->sg, base, ps, panel, cp, cstride);
                }
                break;
            }
            ox += done;
        }
        p += npan;
    }

    /* Epilogue. Zero padding: subtract the -1 weights of taps that fell into the padding and
     * use the count of valid taps in K_eff. Row validity is shared by the whole output row. */
    const int T = c->KH * c->KW;
    int rowpad[64];
    int nrowpad = 0;
    for (int ky = 0; ky < c->KH; ky++) {
        int iy = oy * c->sh - c->ph + ky * c->dh;
        rowpad[ky] = (iy < 0 || iy >= c->H);
        nrowpad += rowpad[ky];
    }
    const int o0 = p0 * 8, o1 = (p1 * 8 < c->O) ? p1 * 8 : c->O;
    for (int ox = 0; ox < c->Wo; ox++) {
        long pix = ((long)n * c->Ho + oy) * c->Wo + ox;
        int32_t *cp = cnt + (long)ox * cstride;
        int colpad[64];
        int ncolpad = 0;
        for (int kx = 0; kx < c->KW; kx++) {
            int ix = ox * c->sw - c->pw + kx * c->dw;
            colpad[kx] = (ix < 0 || ix >= c->W);
            ncolpad += colpad[kx];
        }
        int border = c->zero_pad && (nrowpad || ncolpad);
        if (!border) {
            epi_pixel(c, n, pix, cp, o0, o1, T * c->C);
        } else {
            for (int o = o0; o < o1; o++) {
                const int32_t *nw = c->negw + (long)o * T;
                int corr = 0;
                for (int ky = 0; ky < c->KH; ky++) {
                    for (int kx = 0; kx < c->KW; kx++)
                        if (rowpad[ky] || colpad[kx]) corr += nw[ky * c->KW + kx];
                }
                cp[o] -= corr; /* counts over valid taps only */
            }
            epi_pixel(c, n, pix, cp, o0, o1, (c->KH - nrowpad) * (c->KW - ncolpad) * c->C);
        }
    }
}

static int popc_any(uint64_t x) { return popc_swar(x); }

/* Derived sizes of a conv_t whose geometry is set: words per pixel, padded input, output.
 * Returns -1 when the dilated kernel does not fit the padded input. */
static int conv_sizes(conv_t *c) {
    c->CW = (c->C + 63) / 64;
    c->Hp = c->H + 2 * c->ph;
    c->Wp = c->W + 2 * c->pw;
    if (c->Hp - c->dh * (c->KH - 1) - 1 < 0 || c->Wp - c->dw * (c->KW - 1) - 1 < 0) return -1;
    c->Ho = (c->Hp - c->dh * (c->KH - 1) - 1) / c->sh + 1;
    c->Wo = (c->Wp - c->dw * (c->KW - 1) - 1) / c->sw + 1;
    return 0;
}

/* conv2d's computation on a conv_t filled as conv_parse does: one-padded input copy, 8-oc
 * weight panels, per-tap -1 weight counts, then the rows on c->threads threads. Needs no
 * Python (it runs with the GIL released). Returns -1 when out of memory, else 0. */
static int conv2d_run(conv_t *c) {
    c->K = c->KH * c->KW * c->CW;
    c->NP = (c->O + 7) / 8;
    const int T = c->KH * c->KW;
    const int threads = c->threads;

    /* Segments: with dilation 1 the KW taps of one kernel row are one contiguous run (conv_parse
     * limits dilated kernels to 64 taps, one segment each). */
    if (c->dw == 1) {
        c->sg.n = c->KH;
        for (int ky = 0; ky < c->KH; ky++) {
            c->sg.off[ky] = (long)ky * c->dh * c->Wp * c->CW;
            c->sg.len[ky] = c->KW * c->CW;
            c->sg.k[ky] = ky * c->KW * c->CW;
        }
    } else {
        c->sg.n = T;
        for (int ky = 0; ky < c->KH; ky++)
            for (int kx = 0; kx < c->KW; kx++) {
                int t = ky * c->KW + kx;
                c->sg.off[t] = ((long)ky * c->dh * c->Wp + (long)kx * c->dw) * c->CW;
                c->sg.len[t] = c->CW;
                c->sg.k[t] = t * c->CW;
            }
    }

    uint64_t *padded = NULL, *panels = NULL;
    int32_t *negw = NULL;
    int failed = 0;

    if (c->ph || c->pw) {
        /* one-padding: 0 words are +1 inputs */
        padded = (uint64_t *)calloc((size_t)c->N * c->Hp * c->Wp * c->CW + 8, 8);
        if (!padded) failed = 1;
        else {
            for (int n = 0; n < c->N; n++)
                for (int y = 0; y < c->H; y++)
                    memcpy(padded + (((long)n * c->Hp + y + c->ph) * c->Wp + c->pw) * c->CW,
                           c->x + ((long)n * c->H + y) * c->W * c->CW,
                           (size_t)c->W * c->CW * 8);
            c->in = padded;
        }
    } else {
        c->in = c->x;
    }
    panels = (uint64_t *)calloc((size_t)c->NP * c->K * 8, 8);
    negw = (int32_t *)calloc((size_t)c->O * T, 4);
    if (!panels || !negw) failed = 1;
    if (!failed) {
        for (int o = 0; o < c->O; o++) {
            const uint64_t *wo = c->w + (long)o * c->K;
            for (int k = 0; k < c->K; k++)
                panels[((long)(o / 8) * c->K + k) * 8 + (o % 8)] = wo[k];
            for (int t = 0; t < T; t++) {
                int s = 0;
                for (int cw = 0; cw < c->CW; cw++) s += popc_any(wo[t * c->CW + cw]);
                negw[(long)o * T + t] = s;
            }
        }
        c->panels = panels;
        c->negw = negw;

        /* Tasks: output rows x panel blocks, handed out dynamically so that a thread preempted
         * by other load on a shared machine does not stall the whole call; split panels only
         * when rows are too few to keep every thread busy. Each output element is computed by
         * exactly one task with the same arithmetic, so results do not depend on the thread
         * count. */
        long rows = (long)c->N * c->Ho;
        int nblk = 1;
        if (rows < 4L * threads) {
            nblk = (int)((4L * threads + rows - 1) / rows);
            if (nblk > c->NP) nblk = c->NP;
        }
        /* keep panel pairs together for the 16-oc AVX-512 micro-kernel */
        int per = (c->NP + nblk - 1) / nblk;
        if (per % 2 && per < c->NP) per++;
        nblk = (c->NP + per - 1) / per;
        long ntask = rows * nblk;
        size_t cntsz = (size_t)c->Wo * c->NP * 8;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
        {
            int32_t *cnt = (int32_t *)malloc(cntsz * 4);
            if (!cnt) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                failed = 1;
            }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
            for (long t = 0; t < ntask; t++) {
                if (!cnt) continue;
                long r = t / nblk;
                int b = (int)(t % nblk);
                int p0 = b * per, p1 = p0 + per < c->NP ? p0 + per : c->NP;
                conv_row(c, (int)(r / c->Ho), (int)(r % c->Ho), p0, p1, cnt);
            }
            free(cnt);
        }
    }
    free(padded);
    free(panels);
    free(negw);
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Depthwise conv (groups = C): per-channel counts with bit-sliced counters over the taps.     */

static void dw_row(const conv_t *d, int n, int oy) {
    uint64_t planes[16];
    for (int ox = 0; ox < d->Wo; ox++) {
        long pix = ((long)n * d->Ho + oy) * d->Wo + ox;
        int nvalid = 0;
        for (int ky = 0; ky < d->KH; ky++) {
            int iy = oy * d->sh - d->ph + ky * d->dh;
            for (int kx = 0; kx < d->KW; kx++) {
                int ix = ox * d->sw - d->pw + kx * d->dw;
                nvalid += (iy >= 0 && iy < d->H && ix >= 0 && ix < d->W);
            }
        }
        long K = d->zero_pad ? nvalid : (long)d->KH * d->KW;
        for (int cw = 0; cw < d->CW; cw++) {
            int nb = 0;
            for (int ky = 0; ky < d->KH; ky++) {
                int iy = oy * d->sh - d->ph + ky * d->dh;
                int rowok = iy >= 0 && iy < d->H;
                for (int kx = 0; kx < d->KW; kx++) {
                    int ix = ox * d->sw - d->pw + kx * d->dw;
                    uint64_t wv = d->w[((long)ky * d->KW + kx) * d->CW + cw];
                    uint64_t xv;
                    if (rowok && ix >= 0 && ix < d->W)
                        xv = d->in[(((long)n * d->H + iy) * d->W + ix) * d->CW + cw] ^ wv;
                    else if (!d->zero_pad)
                        xv = wv; /* +1 input: XOR with bit 0 */
                    else
                        continue;
                    /* ripple-carry add of one bit per lane into the sliced counter */
                    uint64_t carry = xv;
                    for (int b = 0; carry; b++) {
                        if (b == nb) planes[nb++] = 0;
                        uint64_t t = planes[b] & carry;
                        planes[b] ^= carry;
                        carry = t;
                    }
                }
            }
            int cmax = d->C - cw * 64;
            if (cmax > 64) cmax = 64;
            for (int j = 0; j < cmax; j++) {
                long cnt = 0;
                for (int b = 0; b < nb; b++) cnt |= (long)((planes[b] >> j) & 1u) << b;
                int o = cw * 64 + j;
                float y = (float)(K - 2 * cnt) *
                              d->scale[(d->scale_per_n ? (long)n * d->C : 0) + o] +
                          d->bias[o];
                if (d->bypass) y += d->bypass[pix * d->C + o];
                if (d->slope) {
                    if (d->pre) y += d->pre[o];
                    y = y > 0.0f ? y : y * d->slope[o];
                    if (d->post) y += d->post[o];
                }
                d->out[pix * d->C + o] = y;
            }
        }
    }
}

#ifndef BIDENSE_NO_PYTHON
/* ------------------------------------------------------------------------------------------ */
/* Python glue: keyword parsing and buffer checks shared by every entry point.                */

/* Keyword arguments. Each entry point parses into its own `*_args` struct whose field names ARE
 * its keywords: its kw_spec table lists the fields (KW_* macros: name, C type, offset), so a
 * keyword and its destination cannot disagree and adding one cannot shift the others. Entry
 * points are METH_FASTCALL | METH_KEYWORDS: names are matched against interned copies by
 * pointer first, so parsing costs well under a microsecond (PyArg_ParseTupleAndKeywords builds
 * a str per keyword per call, about 10 us for conv2d's 26: as much as a small kernel). */
typedef enum { K_OBJECT, K_INT, K_SSIZE } kw_kind;

typedef struct {
    const char *name;
    kw_kind kind;
    size_t offset, size;
    int may_be_none; /* an operand that may be None, which is also its default */
} kw_spec;

#define KW_FIELD(f, kind, none) {#f, kind, offsetof(KW_ARGS, f), sizeof(((KW_ARGS *)0)->f), none}
#define KW_OBJ(f) KW_FIELD(f, K_OBJECT, 0)
#define KW_NONE(f) KW_FIELD(f, K_OBJECT, 1)
#define KW_INT(f) KW_FIELD(f, K_INT, 0)
#define KW_SSIZE(f) KW_FIELD(f, K_SSIZE, 0)

#define BK_MAX_KW 32

typedef struct {
    const char *fn;             /* entry point, for messages */
    const kw_spec *spec;        /* its keywords */
    int n;                      /* how many */
    PyObject *names[BK_MAX_KW]; /* interned keyword names, made on first use */
} kw_table;

#define KW_TABLE(fn, spec) {fn, spec, (int)(sizeof spec / sizeof spec[0]), {NULL}}

static int kw_table_init(kw_table *t) {
    static const size_t kind_size[] = {
        [K_OBJECT] = sizeof(PyObject *), [K_INT] = sizeof(int), [K_SSIZE] = sizeof(Py_ssize_t)};
    if (t->n > BK_MAX_KW) {
        PyErr_Format(PyExc_SystemError, "_bkernels.%s: too many keywords", t->fn);
        return -1;
    }
    for (int i = 0; i < t->n; i++) {
        if (t->spec[i].size != kind_size[t->spec[i].kind]) {
            PyErr_Format(PyExc_SystemError, "_bkernels.%s: keyword %s has the wrong C type",
                         t->fn, t->spec[i].name);
            return -1;
        }
        if (!t->names[i] && !(t->names[i] = PyUnicode_InternFromString(t->spec[i].name)))
            return -1;
    }
    return 0;
}

/* Parse keyword-only arguments into the struct `dst` described by t. A positional, unknown or
 * missing argument is a TypeError; int fields take Python ints (or __index__ objects) in range. */
static int parse_kw(kw_table *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    void *dst) {
    if (nargs > 0) {
        PyErr_Format(PyExc_TypeError,
                     "_bkernels.%s() takes keyword arguments only (got %zd positional)", t->fn,
                     nargs);
        return -1;
    }
    if (!t->names[t->n - 1] && kw_table_init(t) < 0) return -1;
    uint64_t seen = 0;
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j);
        int i = 0;
        while (i < t->n && key != t->names[i]) i++;
        if (i == t->n) /* a name built at run time is not the interned object */
            for (i = 0; i < t->n && PyUnicode_Compare(key, t->names[i]) != 0; i++) {}
        if (i == t->n) {
            PyErr_Format(PyExc_TypeError, "_bkernels.%s() got an unexpected keyword argument "
                         "'%U'", t->fn, key);
            return -1;
        }
        const kw_spec *s = &t->spec[i];
        PyObject *v = args[j];
        char *field = (char *)dst + s->offset;
        if (s->kind == K_OBJECT) {
            *(PyObject **)field = v;
        } else {
            PyObject *index = PyNumber_Index(v); /* ints and __index__ objects (numpy ints) */
            if (!index) return -1;
            Py_ssize_t x = PyLong_AsSsize_t(index);
            Py_DECREF(index);
            if (x == -1 && PyErr_Occurred()) return -1;
            if (s->kind == K_SSIZE) {
                *(Py_ssize_t *)field = x;
            } else if (x >= INT_MIN && x <= INT_MAX) {
                *(int *)field = (int)x;
            } else {
                PyErr_Format(PyExc_OverflowError, "_bkernels.%s(): %s=%zd is out of range",
                             t->fn, s->name, x);
                return -1;
            }
        }
        seen |= (uint64_t)1 << i;
    }
    for (int i = 0; i < t->n; i++) {
        if (seen >> i & 1) continue;
        if (!t->spec[i].may_be_none) {
            PyErr_Format(PyExc_TypeError, "_bkernels.%s() missing required keyword argument "
                         "'%s'", t->fn, t->spec[i].name);
            return -1;
        }
        *(PyObject **)((char *)dst + t->spec[i].offset) = Py_None;
    }
    return 0;
}

typedef enum { T_U64, T_I64, T_F32, T_F64 } elem_t;

/* Element types: buffer-protocol format codes (numpy exports uint64 as 'L' on LP64 systems and
 * 'Q' elsewhere) and the item size. */
static const struct {
    const char *label, *codes;
    Py_ssize_t size;
} ELEM[] = {
    [T_U64] = {"uint64", "QL", 8},
    [T_I64] = {"int64", "ql", 8},
    [T_F32] = {"float32", "f", 4},
    [T_F64] = {"float64", "d", 8},
};

#if PY_LITTLE_ENDIAN
#define BK_NATIVE_ORDER '<'
#else
#define BK_NATIVE_ORDER '>'
#endif

static int format_is(const Py_buffer *v, elem_t type) {
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=' || *f == BK_NATIVE_ORDER) f++;
    return v->itemsize == ELEM[type].size && f[0] && !f[1] && strchr(ELEM[type].codes, f[0]);
}

#define BK_MAX_VIEWS 12

/* The buffer views one entry point holds; views_release (at its cleanup label) frees them all.
 * After the first failed get_buf the set is `failed` and later get_buf calls do nothing, so an
 * entry point acquires all operands in a row and checks once. */
typedef struct {
    const char *fn; /* entry point, for messages */
    int n, failed;
    Py_buffer view[BK_MAX_VIEWS];
} views_t;

enum { BUF_IN = 0, BUF_OUT = 1, BUF_OPTIONAL = 2 };

/* Acquire operand `name` as a C-contiguous buffer of exactly `count` elements of `type`
 * (writable with BUF_OUT; None accepted with BUF_OPTIONAL, giving NULL). Returns its data, or
 * NULL with vs->failed set and a ValueError naming the argument. */
static void *get_buf(views_t *vs, PyObject *obj, const char *name, elem_t type,
                     Py_ssize_t count, int flags) {
    if (vs->failed) return NULL;
    if (obj == Py_None) {
        if (flags & BUF_OPTIONAL) return NULL;
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: %s is required (got None)", vs->fn, name);
        vs->failed = 1;
        return NULL;
    }
    if (vs->n == BK_MAX_VIEWS) {
        PyErr_Format(PyExc_SystemError, "_bkernels.%s: more than %d operands", vs->fn,
                     BK_MAX_VIEWS);
        vs->failed = 1;
        return NULL;
    }
    Py_buffer *v = &vs->view[vs->n];
    const int req = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (flags & BUF_OUT ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, req) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: %s must be a %sC-contiguous %s buffer, "
                     "got %s", vs->fn, name, flags & BUF_OUT ? "writable " : "",
                     ELEM[type].label, Py_TYPE(obj)->tp_name);
        vs->failed = 1;
        return NULL;
    }
    vs->n++;
    if (!format_is(v, type)) {
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: %s must hold %s, got format '%s' with "
                     "item size %zd", vs->fn, name, ELEM[type].label,
                     v->format ? v->format : "B", v->itemsize);
        vs->failed = 1;
        return NULL;
    }
    if (v->len != count * ELEM[type].size) {
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: %s has %zd %s elements, expected %zd",
                     vs->fn, name, v->len / ELEM[type].size, ELEM[type].label, count);
        vs->failed = 1;
        return NULL;
    }
    return v->buf;
}

static void views_release(views_t *vs) {
    for (int i = 0; i < vs->n; i++) PyBuffer_Release(&vs->view[i]);
    vs->n = 0;
}

static int clamp_threads(int t) {
    if (t < 1) t = 1;
    if (t > 1024) t = 1024;
    return t;
}

/* conv2d / depthwise2d keywords: operands (x_bits uint64 (n, h, w, ceil(c/64)), w_bits uint64,
 * out float32 (n, Ho, Wo, o)), geometry (o outputs, kernel kh x kw, stride sh, sw, symmetric
 * padding ph, pw, dilation dh, dw; zero_pad 1 = PyTorch zero padding, 0 = +1 inputs), epilogue
 * (float32 scale (o,) or (n, o) with scale_per_n, bias (o,); may be None: bypass (n, Ho, Wo, o),
 * prelu_pre, prelu (the slopes), prelu_post (o,)), kernel path and threads. */
typedef struct {
    PyObject *x_bits, *w_bits, *out;
    int n, h, w, c, o, kh, kw, sh, sw, ph, pw, dh, dw, zero_pad;
    PyObject *scale;
    int scale_per_n;
    PyObject *bias, *bypass, *prelu_pre, *prelu, *prelu_post;
    int path, threads;
} conv_args;

#define KW_ARGS conv_args
static const kw_spec conv_kw[] = {
    KW_OBJ(x_bits), KW_OBJ(w_bits),   KW_OBJ(out),     KW_INT(n),           KW_INT(h),
    KW_INT(w),      KW_INT(c),        KW_INT(o),       KW_INT(kh),          KW_INT(kw),
    KW_INT(sh),     KW_INT(sw),       KW_INT(ph),      KW_INT(pw),          KW_INT(dh),
    KW_INT(dw),     KW_INT(zero_pad), KW_OBJ(scale),   KW_INT(scale_per_n), KW_OBJ(bias),
    KW_NONE(bypass), KW_NONE(prelu_pre), KW_NONE(prelu), KW_NONE(prelu_post), KW_INT(path),
    KW_INT(threads)};
#undef KW_ARGS
static kw_table conv2d_kw = KW_TABLE("conv2d", conv_kw);
static kw_table depthwise2d_kw = KW_TABLE("depthwise2d", conv_kw);

/* Parse and check one conv2d / depthwise2d call into c and acquire its operands into vs. */
static int conv_parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int depthwise,
                      conv_t *c, views_t *vs) {
    conv_args a;
    if (parse_kw(depthwise ? &depthwise2d_kw : &conv2d_kw, args, nargs, kwnames, &a) < 0)
        return -1;
    memset(c, 0, sizeof *c);
    c->N = a.n, c->H = a.h, c->W = a.w, c->C = a.c, c->O = a.o, c->KH = a.kh, c->KW = a.kw;
    c->sh = a.sh, c->sw = a.sw, c->ph = a.ph, c->pw = a.pw, c->dh = a.dh, c->dw = a.dw;
    c->zero_pad = a.zero_pad, c->scale_per_n = a.scale_per_n, c->path = a.path;
    c->threads = clamp_threads(a.threads);
    const int bad_kernel = depthwise ? c->KH * c->KW > 65535 : c->KH > 64 || c->KW > 64;
    if (c->N < 1 || c->H < 1 || c->W < 1 || c->C < 1 || c->O < 1 || c->KH < 1 || c->KW < 1 ||
        c->sh < 1 || c->sw < 1 || c->ph < 0 || c->pw < 0 || c->dh < 1 || c->dw < 1 ||
        bad_kernel) {
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: invalid geometry", vs->fn);
        return -1;
    }
    if (depthwise && c->O != c->C) {
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: o (%d) must equal c (%d)", vs->fn, c->O,
                     c->C);
        return -1;
    }
    if (!depthwise && c->dw > 1 && c->KH * c->KW > 64) {
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: dilated kernels support <= 64 taps",
                     vs->fn);
        return -1;
    }
    if (!path_supported(c->path)) {
        PyErr_Format(PyExc_RuntimeError, "_bkernels.%s: path %d not supported on this CPU",
                     vs->fn, c->path);
        return -1;
    }
    if (conv_sizes(c) < 0) {
        PyErr_Format(PyExc_ValueError, "_bkernels.%s: kernel larger than padded input", vs->fn);
        return -1;
    }
    const Py_ssize_t taps = (Py_ssize_t)c->KH * c->KW * c->CW;
    const Py_ssize_t outs = (Py_ssize_t)c->N * c->Ho * c->Wo * c->O;
    c->x = get_buf(vs, a.x_bits, "x_bits", T_U64, (Py_ssize_t)c->N * c->H * c->W * c->CW, BUF_IN);
    c->w = get_buf(vs, a.w_bits, "w_bits", T_U64, (depthwise ? 1 : c->O) * taps, BUF_IN);
    c->out = get_buf(vs, a.out, "out", T_F32, outs, BUF_OUT);
    c->scale = get_buf(vs, a.scale, "scale", T_F32,
                       (Py_ssize_t)(c->scale_per_n ? c->N : 1) * c->O, BUF_IN);
    c->bias = get_buf(vs, a.bias, "bias", T_F32, c->O, BUF_IN);
    c->bypass = get_buf(vs, a.bypass, "bypass", T_F32, outs, BUF_OPTIONAL);
    c->pre = get_buf(vs, a.prelu_pre, "prelu_pre", T_F32, c->O, BUF_OPTIONAL);
    c->slope = get_buf(vs, a.prelu, "prelu", T_F32, c->O, BUF_OPTIONAL);
    c->post = get_buf(vs, a.prelu_post, "prelu_post", T_F32, c->O, BUF_OPTIONAL);
    return vs->failed ? -1 : 0;
}

/* conv2d(**conv_args): dense binary conv, out = epilogue(K_eff - 2 popcount(x XOR w)); w_bits
 * (o, kh, kw, ceil(c/64)). */
static PyObject *py_conv2d(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames) {
    (void)self;
    conv_t c;
    views_t vs = {.fn = "conv2d"};
    PyObject *ret = NULL;
    if (conv_parse(args, nargs, kwnames, 0, &c, &vs) < 0) goto done;
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = conv2d_run(&c);
    Py_END_ALLOW_THREADS

    if (failed) PyErr_NoMemory();
    else ret = Py_NewRef(Py_None);
done:
    views_release(&vs);
    return ret;
}

/* depthwise2d(**conv_args), o == c: groups = C binary conv on one ISA-independent routine
 * (every supported path runs it); w_bits (kh, kw, ceil(c/64)) has channel c's weight in bit c. */
static PyObject *py_depthwise2d(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    (void)self;
    conv_t d;
    views_t vs = {.fn = "depthwise2d"};
    PyObject *ret = NULL;
    if (conv_parse(args, nargs, kwnames, 1, &d, &vs) < 0) goto done;
    d.in = d.x;
    long rows = (long)d.N * d.Ho;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel for num_threads(d.threads) schedule(dynamic, 1)
#endif
    for (long r = 0; r < rows; r++) dw_row(&d, (int)(r / d.Ho), (int)(r % d.Ho));
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    views_release(&vs);
    return ret;
}

static void pack_row(const float *xr, uint64_t *orow, int C) {
    int CW = (C + 63) / 64;
    for (int cw = 0; cw < CW; cw++) {
        int n = C - cw * 64 < 64 ? C - cw * 64 : 64;
        uint64_t word = 0;
        for (int j = 0; j < n; j++) word |= (uint64_t)(xr[cw * 64 + j] < 0.0f) << j;
        orow[cw] = word;
    }
}

#if BK_X86
/* vcmpltps + vmovmskps: 8 sign bits per instruction pair, LSB-first (engines.md 5.8). The
 * ordered "<" keeps +0.0, -0.0 and NaN at bit 0, like the scalar path. */
__attribute__((target("avx2"))) static void pack_row_avx2(const float *xr, uint64_t *orow, int C) {
    const __m256 zero = _mm256_setzero_ps();
    int full = C / 64;
    for (int cw = 0; cw < full; cw++) {
        uint64_t word = 0;
        for (int g = 0; g < 8; g++) {
            __m256 v = _mm256_loadu_ps(xr + cw * 64 + g * 8);
            word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ))
                    << (g * 8);
        }
        orow[cw] = word;
    }
    if (C % 64) pack_row(xr + full * 64, orow + full, C % 64);
}
#endif

/* pack_f32(x=, out=, rows=, c=, threads=, path=): x float32 (rows, c) -> out uint64
 * (rows, ceil(c/64)); bit = (x < 0), so +0.0, -0.0 and NaN all map to bit 0 (+1). */
typedef struct {
    PyObject *x, *out;
    Py_ssize_t rows;
    int c, threads, path;
} pack_f32_args;

#define KW_ARGS pack_f32_args
static const kw_spec pack_f32_spec[] = {KW_OBJ(x),   KW_OBJ(out),     KW_SSIZE(rows),
                                        KW_INT(c),   KW_INT(threads), KW_INT(path)};
#undef KW_ARGS
static kw_table pack_f32_kw = KW_TABLE("pack_f32", pack_f32_spec);

static PyObject *py_pack_f32(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    (void)self;
    pack_f32_args a;
    if (parse_kw(&pack_f32_kw, args, nargs, kwnames, &a) < 0) return NULL;
    const Py_ssize_t rows = a.rows;
    const int C = a.c, path = a.path;
    int threads = a.threads;
    int use_avx2 = path >= P_AVX2 && path_supported(P_AVX2);
    (void)use_avx2;
    if (rows < 0 || C < 1) {
        PyErr_SetString(PyExc_ValueError, "_bkernels.pack_f32: invalid shape");
        return NULL;
    }
    const int CW = (C + 63) / 64;
    views_t vs = {.fn = "pack_f32"};
    PyObject *ret = NULL;
    const float *x = get_buf(&vs, a.x, "x", T_F32, rows * C, BUF_IN);
    uint64_t *out = get_buf(&vs, a.out, "out", T_U64, rows * CW, BUF_OUT);
    if (vs.failed) goto done;
    threads = clamp_threads(threads);
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (Py_ssize_t r = 0; r < rows; r++) {
#if BK_X86
        if (use_avx2) pack_row_avx2(x + r * C, out + r * CW, C);
        else
#endif
            pack_row(x + r * C, out + r * CW, C);
    }
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    views_release(&vs);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Graph-runtime helpers: threshold packing with DAB statistics, channel sums, bilinear resize.  */

#include <math.h>

/* Fixed pixel chunk for the per-channel double sums: partial sums are taken per chunk and added
 * in chunk order, so the result does not depend on the thread count. */
#define BK_CHUNK 256

/* One pixel row of C floats against thresholds t (NULL = 0): bit = x < t (LSB-first, bit 1 =
 * -1), zeros += count(x == t), dev[c] += |x - t| in double when dev is not NULL. */
static void thr_row(const float *xr, const float *t, uint64_t *orow, int C, double *dev,
                    long *zeros) {
    int CW = (C + 63) / 64;
    long z = 0;
    for (int cw = 0; cw < CW; cw++) {
        int n = C - cw * 64 < 64 ? C - cw * 64 : 64;
        uint64_t word = 0;
        for (int j = 0; j < n; j++) {
            int c = cw * 64 + j;
            float v = xr[c], tt = t ? t[c] : 0.0f;
            word |= (uint64_t)(v < tt) << j;
            z += v == tt;
            if (dev) dev[c] += fabs((double)v - (double)tt);
        }
        orow[cw] = word;
    }
    *zeros += z;
}

#if BK_X86
__attribute__((target("avx2,popcnt"))) static void thr_row_avx2(const float *xr, const float *t,
                                                                uint64_t *orow, int C,
                                                                double *dev, long *zeros) {
    int full = C / 64;
    long z = 0;
    const __m256 zero = _mm256_setzero_ps();
    const __m256d signmask = _mm256_set1_pd(-0.0);
    for (int cw = 0; cw < full; cw++) {
        uint64_t word = 0;
        for (int g = 0; g < 8; g++) {
            int c = cw * 64 + g * 8;
            __m256 v = _mm256_loadu_ps(xr + c);
            __m256 tt = t ? _mm256_loadu_ps(t + c) : zero;
            word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, tt, _CMP_LT_OQ))
                    << (g * 8);
            z += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, tt,
                                                                                _CMP_EQ_OQ)));
            if (dev) {
                __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                           _mm256_cvtps_pd(_mm256_castps256_ps128(tt)));
                __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)),
                                           _mm256_cvtps_pd(_mm256_extractf128_ps(tt, 1)));
                _mm256_storeu_pd(dev + c, _mm256_add_pd(_mm256_loadu_pd(dev + c),
                                                        _mm256_andnot_pd(signmask, lo)));
                _mm256_storeu_pd(dev + c + 4, _mm256_add_pd(_mm256_loadu_pd(dev + c + 4),
                                                            _mm256_andnot_pd(signmask, hi)));
            }
        }
        orow[cw] = word;
    }
    *zeros += z;
    if (C % 64)
        thr_row(xr + full * 64, t ? t + full * 64 : NULL, orow + full, C % 64,
                dev ? dev + full * 64 : NULL, zeros);
}
#endif

/* pack_thresh(x=, tau=None, out=, dev=None, n=, hw=, c=, per_n=, threads=, path=) -> ties
 * x float32 (n, hw, c); tau float32 (n, c) if per_n, (c,) otherwise, or None (threshold 0);
 * out uint64 (n, hw, ceil(c/64)) gets bits x < tau; dev float64 (n, c) or None receives
 * sum over pixels of |x - tau| (double, chunked in a thread-independent order). Returns the
 * number of exact ties x == tau (torch.sign's 0). */
typedef struct {
    PyObject *x, *tau, *out, *dev;
    Py_ssize_t n, hw;
    int c, per_n, threads, path;
} pack_thresh_args;

#define KW_ARGS pack_thresh_args
static const kw_spec pack_thresh_spec[] = {KW_OBJ(x),   KW_NONE(tau),  KW_OBJ(out),
                                           KW_NONE(dev), KW_SSIZE(n),  KW_SSIZE(hw),
                                           KW_INT(c),   KW_INT(per_n), KW_INT(threads),
                                           KW_INT(path)};
#undef KW_ARGS
static kw_table pack_thresh_kw = KW_TABLE("pack_thresh", pack_thresh_spec);

static PyObject *py_pack_thresh(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
    (void)self;
    pack_thresh_args a;
    if (parse_kw(&pack_thresh_kw, args, nargs, kwnames, &a) < 0) return NULL;
    const Py_ssize_t N = a.n, HW = a.hw;
    const int C = a.c, per_n = a.per_n, path = a.path;
    int threads = a.threads;
    if (N < 0 || HW < 0 || C < 1) {
        PyErr_SetString(PyExc_ValueError, "_bkernels.pack_thresh: invalid shape");
        return NULL;
    }
    const int CW = (C + 63) / 64;
    views_t vs = {.fn = "pack_thresh"};
    PyObject *ret = NULL;
    double *part = NULL;
    long *zpart = NULL;
    const float *x = get_buf(&vs, a.x, "x", T_F32, N * HW * C, BUF_IN);
    const float *tau = get_buf(&vs, a.tau, "tau", T_F32, (per_n ? N : 1) * C, BUF_OPTIONAL);
    uint64_t *out = get_buf(&vs, a.out, "out", T_U64, N * HW * CW, BUF_OUT);
    double *dev = get_buf(&vs, a.dev, "dev", T_F64, N * C, BUF_OUT | BUF_OPTIONAL);
    if (vs.failed) goto done;
    int use_avx2 = path >= P_AVX2 && path_supported(P_AVX2);
    (void)use_avx2;
    long nch = (long)((HW + BK_CHUNK - 1) / BK_CHUNK);
    long tasks = (long)N * nch;
    zpart = (long *)calloc((size_t)(tasks > 0 ? tasks : 1), sizeof(long));
    if (dev) part = (double *)calloc((size_t)(tasks > 0 ? tasks : 1) * C, sizeof(double));
    if (!zpart || (dev && !part)) {
        PyErr_NoMemory();
        goto done;
    }
    threads = clamp_threads(threads);
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (long task = 0; task < tasks; task++) {
        long n = task / nch, ch = task % nch;
        long p0 = ch * BK_CHUNK, p1 = p0 + BK_CHUNK < HW ? p0 + BK_CHUNK : HW;
        const float *t = tau ? tau + (per_n ? n * C : 0) : NULL;
        double *d = part ? part + task * C : NULL;
        long z = 0;
        for (long p = p0; p < p1; p++) {
            const float *xr = x + (n * HW + p) * C;
            uint64_t *orow = out + (n * HW + p) * CW;
#if BK_X86
            if (use_avx2) thr_row_avx2(xr, t, orow, C, d, &z);
            else
#endif
                thr_row(xr, t, orow, C, d, &z);
        }
        zpart[task] = z;
    }
    Py_END_ALLOW_THREADS
    long zeros = 0;
    for (long task = 0; task < tasks; task++) zeros += zpart[task];
    if (dev) {
        for (long n = 0; n < N; n++) {
            double *dn = dev + n * C;
            for (int c = 0; c < C; c++) dn[c] = 0.0;
            for (long ch = 0; ch < nch; ch++) {
                const double *pp = part + (n * nch + ch) * C;
                for (int c = 0; c < C; c++) dn[c] += pp[c];
            }
        }
    }
    ret = PyLong_FromLong(zeros);
done:
    free(zpart);
    free(part);
    views_release(&vs);
    return ret;
}

/* chan_sum(x=, out=, n=, hw=, c=, threads=): out float64 (n, c) = sum over pixels of x float32
 * (n, hw, c), chunked in a thread-independent order. */
typedef struct {
    PyObject *x, *out;
    Py_ssize_t n, hw;
    int c, threads;
} chan_sum_args;

#define KW_ARGS chan_sum_args
static const kw_spec chan_sum_spec[] = {KW_OBJ(x),    KW_OBJ(out), KW_SSIZE(n),
                                        KW_SSIZE(hw), KW_INT(c),   KW_INT(threads)};
#undef KW_ARGS
static kw_table chan_sum_kw = KW_TABLE("chan_sum", chan_sum_spec);

static PyObject *py_chan_sum(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    (void)self;
    chan_sum_args a;
    if (parse_kw(&chan_sum_kw, args, nargs, kwnames, &a) < 0) return NULL;
    const Py_ssize_t N = a.n, HW = a.hw;
    const int C = a.c;
    int threads = a.threads;
    if (N < 0 || HW < 0 || C < 1) {
        PyErr_SetString(PyExc_ValueError, "_bkernels.chan_sum: invalid shape");
        return NULL;
    }
    views_t vs = {.fn = "chan_sum"};
    PyObject *ret = NULL;
    double *part = NULL;
    const float *x = get_buf(&vs, a.x, "x", T_F32, N * HW * C, BUF_IN);
    double *out = get_buf(&vs, a.out, "out", T_F64, N * C, BUF_OUT);
    if (vs.failed) goto done;
    long nch = (long)((HW + BK_CHUNK - 1) / BK_CHUNK);
    long tasks = (long)N * nch;
    part = (double *)calloc((size_t)(tasks > 0 ? tasks : 1) * C, sizeof(double));
    if (!part) {
        PyErr_NoMemory();
        goto done;
    }
    threads = clamp_threads(threads);
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (long task = 0; task < tasks; task++) {
        long n = task / nch, ch = task % nch;
        long p0 = ch * BK_CHUNK, p1 = p0 + BK_CHUNK < HW ? p0 + BK_CHUNK : HW;
        double *d = part + task * C;
        for (long p = p0; p < p1; p++) {
            const float *xr = x + (n * HW + p) * C;
            for (int c = 0; c < C; c++) d[c] += (double)xr[c];
        }
    }
    for (long n = 0; n < N; n++) {
        double *dn = out + n * C;
        for (int c = 0; c < C; c++) dn[c] = 0.0;
        for (long ch = 0; ch < nch; ch++) {
            const double *pp = part + (n * nch + ch) * C;
            for (int c = 0; c < C; c++) dn[c] += pp[c];
        }
    }
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    free(part);
    views_release(&vs);
    return ret;
}

/* bilinear_nhwc(x=, out=, h0=, h1=, lh=, w0=, w1=, lw=, n=, h=, w=, c=, oh=, ow=, threads=):
 * separable bilinear resize of NHWC float32 data x (n, h, w, c) to out (n, oh, ow, c) with
 * precomputed source indices h0, h1 (oh,), w0, w1 (ow,) (int64) and weights lh (oh,), lw (ow,)
 * (float32), rows first then columns, in exactly the float32 operations of the numpy path:
 * top = a * (1 - lh) + b * lh; out = top0 * (1 - lw) + top1 * lw. */
typedef struct {
    PyObject *x, *out, *h0, *h1, *lh, *w0, *w1, *lw;
    Py_ssize_t n, h, w, oh, ow;
    int c, threads;
} bilinear_args;

#define KW_ARGS bilinear_args
static const kw_spec bilinear_spec[] = {
    KW_OBJ(x),   KW_OBJ(out), KW_OBJ(h0),  KW_OBJ(h1),    KW_OBJ(lh),     KW_OBJ(w0),
    KW_OBJ(w1),  KW_OBJ(lw),  KW_SSIZE(n), KW_SSIZE(h),   KW_SSIZE(w),    KW_INT(c),
    KW_SSIZE(oh), KW_SSIZE(ow), KW_INT(threads)};
#undef KW_ARGS
static kw_table bilinear_kw = KW_TABLE("bilinear_nhwc", bilinear_spec);

static PyObject *py_bilinear_nhwc(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    (void)self;
    bilinear_args a;
    if (parse_kw(&bilinear_kw, args, nargs, kwnames, &a) < 0) return NULL;
    const Py_ssize_t N = a.n, H = a.h, W = a.w, OH = a.oh, OW = a.ow;
    const int C = a.c;
    int threads = a.threads;
    views_t vs = {.fn = "bilinear_nhwc"};
    PyObject *ret = NULL;
    const float *x = get_buf(&vs, a.x, "x", T_F32, N * H * W * C, BUF_IN);
    float *out = get_buf(&vs, a.out, "out", T_F32, N * OH * OW * C, BUF_OUT);
    const int64_t *h0 = get_buf(&vs, a.h0, "h0", T_I64, OH, BUF_IN);
    const int64_t *h1 = get_buf(&vs, a.h1, "h1", T_I64, OH, BUF_IN);
    const float *lh = get_buf(&vs, a.lh, "lh", T_F32, OH, BUF_IN);
    const int64_t *w0 = get_buf(&vs, a.w0, "w0", T_I64, OW, BUF_IN);
    const int64_t *w1 = get_buf(&vs, a.w1, "w1", T_I64, OW, BUF_IN);
    const float *lw = get_buf(&vs, a.lw, "lw", T_F32, OW, BUF_IN);
    if (vs.failed) goto done;
    int bad = 0;
    for (Py_ssize_t i = 0; i < OH; i++)
        bad |= h0[i] < 0 || h0[i] >= H || h1[i] < 0 || h1[i] >= H;
    for (Py_ssize_t j = 0; j < OW; j++)
        bad |= w0[j] < 0 || w0[j] >= W || w1[j] < 0 || w1[j] >= W;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "_bkernels.bilinear_nhwc: index out of range");
        goto done;
    }
    threads = clamp_threads(threads);
    long rows = (long)(N * OH);
    int fail = 0;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        float *top = (float *)malloc((size_t)W * C * sizeof(float));
        if (!top) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            fail = 1;
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (long r = 0; r < rows; r++) {
            if (!top) continue;
            long n = r / OH, i = r % OH;
            const float *a = x + ((n * H + h0[i]) * W) * C, *b = x + ((n * H + h1[i]) * W) * C;
            float l1 = lh[i], l0 = 1.0f - l1;
            for (long k = 0; k < (long)W * C; k++) {
                float p = a[k] * l0;
                float q = b[k] * l1;
                top[k] = p + q;
            }
            float *orow = out + (n * OH + i) * OW * C;
            for (Py_ssize_t j = 0; j < OW; j++) {
                const float *t0 = top + w0[j] * C, *t1 = top + w1[j] * C;
                float m1 = lw[j], m0 = 1.0f - m1;
                float *o = orow + j * C;
                for (int c = 0; c < C; c++) {
                    float p = t0[c] * m0;
                    float q = t1[c] * m1;
                    o[c] = p + q;
                }
            }
        }
        free(top);
    }
    Py_END_ALLOW_THREADS
    if (fail) PyErr_NoMemory();
    else ret = Py_NewRef(Py_None);
done:
    views_release(&vs);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Float32 GEMM for the runtime's FP convs (stem, 1x1 shortcuts, classifier).                  */

/* fp_gemm(x=, w=, out=, m=, k=, o=, threads=, variant=, scale=None, bias=None): out (M, O) =
 * x (M, K) @ w (K, O), then out = out * scale[o] and out = out + bias[o] (each optional, two
 * float32 roundings as the numpy path). Every output element is ONE float32 accumulator summed
 * over k = 0..K-1 in order (fused multiply-add on the AVX-512 path, multiply then add
 * elsewhere), and threads split the rows only, so the result is bit-identical for every thread
 * count (OpenBLAS's threaded sgemm is not, and its spinning workers slow the OpenMP kernels
 * around it). variant -1 picks this CPU's (gemm_kind), 0..2 force one for tests. */
#define GEMM_MR 8
#define GEMM_ROWS 64 /* rows per parallel task */

#define GEMM_SCALAR(NAME, ATTR)                                                                 \
    ATTR static void NAME(const float *restrict x, const float *restrict w, float *restrict out, \
                          const float *scale, const float *bias, long m0, long m1, int K, int O, \
                          float *restrict acc) {                                                \
        for (long m = m0; m < m1; m++) {                                                        \
            const float *xr = x + m * K;                                                        \
            for (int o = 0; o < O; o++) acc[o] = 0.0f;                                          \
            for (int k = 0; k < K; k++) {                                                       \
                const float xv = xr[k];                                                         \
                const float *restrict wr = w + (long)k * O;                                     \
                for (int o = 0; o < O; o++) {                                                   \
                    float p = xv * wr[o];                                                       \
                    acc[o] = acc[o] + p;                                                        \
                }                                                                               \
            }                                                                                   \
            float *restrict orow = out + m * O;                                                 \
            for (int o = 0; o < O; o++) {                                                       \
                float v = acc[o];                                                               \
                if (scale) v = v * scale[o];                                                    \
                if (bias) v = v + bias[o];                                                      \
                orow[o] = v;                                                                    \
            }                                                                                   \
        }                                                                                       \
    }

GEMM_SCALAR(gemm_rows_plain, )
#if BK_X86
GEMM_SCALAR(gemm_rows_avx2, __attribute__((target("avx2"))))

__attribute__((target("avx512f"))) static inline __m512 gemm_epi512(__m512 v, const float *scale,
                                                                     const float *bias, int o,
                                                                     __mmask16 mk) {
    if (scale) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mk, scale + o));
    if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, bias + o));
    return v;
}

/* 8 rows x (1 or 2) 16-column panels per tile; remainder rows one at a time with the same
 * per-element operations (fmadd in k order), so tiling never changes a result. */
__attribute__((target("avx512f"))) static void gemm_rows_avx512(
    const float *restrict x, const float *restrict w, float *restrict out, const float *scale,
    const float *bias, long m0, long m1, int K, int O, float *restrict unused) {
    (void)unused;
    const int np = (O + 15) / 16;
    for (int j = 0; j < np; j += 2) {
        const int two = np - j >= 2;
        const int o0 = j * 16, o1 = o0 + 16;
        const int r0 = O - o0, r1 = O - o1;
        const __mmask16 k0 = r0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << r0) - 1u);
        const __mmask16 k1 = !two ? (__mmask16)0 : r1 >= 16 ? (__mmask16)0xFFFF
                                                             : (__mmask16)((1u << r1) - 1u);
        long m = m0;
        if (two) {
            for (; m + GEMM_MR <= m1; m += GEMM_MR) {
                __m512 a0[GEMM_MR], a1[GEMM_MR];
#pragma GCC unroll 8
                for (int i = 0; i < GEMM_MR; i++) a0[i] = a1[i] = _mm512_setzero_ps();
                const float *xr = x + m * K;
                for (int k = 0; k < K; k++) {
                    const __m512 w0 = _mm512_maskz_loadu_ps(k0, w + (long)k * O + o0);
                    const __m512 w1 = _mm512_maskz_loadu_ps(k1, w + (long)k * O + o1);
#pragma GCC unroll 8
                    for (int i = 0; i < GEMM_MR; i++) {
                        const __m512 xb = _mm512_set1_ps(xr[(long)i * K + k]);
                        a0[i] = _mm512_fmadd_ps(xb, w0, a0[i]);
                        a1[i] = _mm512_fmadd_ps(xb, w1, a1[i]);
                    }
                }
#pragma GCC unroll 8
                for (int i = 0; i < GEMM_MR; i++) {
                    float *orow = out + (m + i) * O;
                    _mm512_mask_storeu_ps(orow + o0, k0, gemm_epi512(a0[i], scale, bias, o0, k0));
                    _mm512_mask_storeu_ps(orow + o1, k1, gemm_epi512(a1[i], scale, bias, o1, k1));
                }
            }
        } else {
            for (; m + GEMM_MR <= m1; m += GEMM_MR) {
                __m512 a0[GEMM_MR];
#pragma GCC unroll 8
                for (int i = 0; i < GEMM_MR; i++) a0[i] = _mm512_setzero_ps();
                const float *xr = x + m * K;
                for (int k = 0; k < K; k++) {
                    const __m512 w0 = _mm512_maskz_loadu_ps(k0, w + (long)k * O + o0);
#pragma GCC unroll 8
                    for (int i = 0; i < GEMM_MR; i++)
                        a0[i] = _mm512_fmadd_ps(_mm512_set1_ps(xr[(long)i * K + k]), w0, a0[i]);
                }
#pragma GCC unroll 8
                for (int i = 0; i < GEMM_MR; i++)
                    _mm512_mask_storeu_ps(out + (m + i) * O + o0, k0,
                                          gemm_epi512(a0[i], scale, bias, o0, k0));
            }
        }
        for (; m < m1; m++) {
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            const float *xr = x + m * K;
            for (int k = 0; k < K; k++) {
                const __m512 xb = _mm512_set1_ps(xr[k]);
                a0 = _mm512_fmadd_ps(xb, _mm512_maskz_loadu_ps(k0, w + (long)k * O + o0), a0);
                if (two)
                    a1 = _mm512_fmadd_ps(xb, _mm512_maskz_loadu_ps(k1, w + (long)k * O + o1), a1);
            }
            _mm512_mask_storeu_ps(out + m * O + o0, k0, gemm_epi512(a0, scale, bias, o0, k0));
            if (two)
                _mm512_mask_storeu_ps(out + m * O + o1, k1, gemm_epi512(a1, scale, bias, o1, k1));
        }
    }
}
#endif

typedef void (*gemm_fn)(const float *, const float *, float *, const float *, const float *, long,
                        long, int, int, float *);

/* The GEMM variant of this CPU (fixed per machine, never per thread count): 2 AVX-512 FMA,
 * 1 AVX2 (multiply + add), 0 plain C. */
static int gemm_kind(void) {
#if BK_X86
    if (cpu_has("avx512f")) return 2;
    if (cpu_has("avx2")) return 1;
#endif
    return 0;
}

/* fp_gemm keywords (see above); scale and bias may be None. */
typedef struct {
    PyObject *x, *w, *out, *scale, *bias;
    Py_ssize_t m;
    int k, o, threads, variant;
} fp_gemm_args;

#define KW_ARGS fp_gemm_args
static const kw_spec fp_gemm_spec[] = {KW_OBJ(x),  KW_OBJ(w),  KW_OBJ(out),     KW_NONE(scale),
                                       KW_NONE(bias), KW_SSIZE(m), KW_INT(k),   KW_INT(o),
                                       KW_INT(threads), KW_INT(variant)};
#undef KW_ARGS
static kw_table fp_gemm_kw = KW_TABLE("fp_gemm", fp_gemm_spec);

static PyObject *py_fp_gemm(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames) {
    (void)self;
    fp_gemm_args a;
    if (parse_kw(&fp_gemm_kw, args, nargs, kwnames, &a) < 0) return NULL;
    const Py_ssize_t M = a.m;
    const int K = a.k, O = a.o, variant = a.variant;
    int threads = a.threads;
    if (variant < -1 || variant > gemm_kind()) {
        PyErr_Format(PyExc_ValueError, "_bkernels.fp_gemm: variant %d cannot run here", variant);
        return NULL;
    }
    if (M < 0 || K < 1 || O < 1) {
        PyErr_SetString(PyExc_ValueError, "_bkernels.fp_gemm: invalid shape");
        return NULL;
    }
    views_t vs = {.fn = "fp_gemm"};
    PyObject *ret = NULL;
    const float *x = get_buf(&vs, a.x, "x", T_F32, M * K, BUF_IN);
    const float *w = get_buf(&vs, a.w, "w", T_F32, (Py_ssize_t)K * O, BUF_IN);
    float *out = get_buf(&vs, a.out, "out", T_F32, M * O, BUF_OUT);
    const float *sc = get_buf(&vs, a.scale, "scale", T_F32, O, BUF_OPTIONAL);
    const float *bi = get_buf(&vs, a.bias, "bias", T_F32, O, BUF_OPTIONAL);
    if (vs.failed) goto done;
    gemm_fn fn = gemm_rows_plain;
    (void)variant;
#if BK_X86
    int kind = variant < 0 ? gemm_kind() : variant;
    fn = kind == 2 ? gemm_rows_avx512 : kind == 1 ? gemm_rows_avx2 : gemm_rows_plain;
#endif
    threads = clamp_threads(threads);
    long tasks = (long)((M + GEMM_ROWS - 1) / GEMM_ROWS);
    if (tasks < threads) threads = tasks > 0 ? (int)tasks : 1;
    int fail = 0;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        float *acc = (float *)malloc((size_t)O * sizeof(float));
        if (!acc) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            fail = 1;
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (long t = 0; t < tasks; t++) {
            if (!acc) continue;
            long m0 = t * GEMM_ROWS, m1 = m0 + GEMM_ROWS < M ? m0 + GEMM_ROWS : M;
            fn(x, w, out, sc, bi, m0, m1, K, O, acc);
        }
        free(acc);
    }
    Py_END_ALLOW_THREADS
    if (fail) PyErr_NoMemory();
    else ret = Py_NewRef(Py_None);
done:
    views_release(&vs);
    return ret;
}

static PyObject *py_gemm_kind(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(gemm_kind());
}

/* cfb_nhwc(x=, out=, p=, cin=, cout=, contiguous=, threads=): BiDense's channel-adaptive bypass
 * on NHWC float32 rows (p pixels, x (p, cin) -> out (p, cout)): r = Cout / Cin copies of the row,
 * then m = Cout % Cin means: m - 1 regular means of g = Cin / m inputs (strided: channels j,
 * j + (m-1), ...; contiguous: channels j*g .. j*g + g - 1) and one mean of the remaining
 * Cin - g*(m-1) inputs. Means are float64 sums in channel order divided by the count, rounded
 * once to float32 (the numpy path's mean(dtype=float64)); pixels are independent, so threads
 * cannot change a result. */
typedef struct {
    PyObject *x, *out;
    Py_ssize_t p;
    int cin, cout, contiguous, threads;
} cfb_args;

#define KW_ARGS cfb_args
static const kw_spec cfb_spec[] = {KW_OBJ(x),    KW_OBJ(out),        KW_SSIZE(p),    KW_INT(cin),
                                   KW_INT(cout), KW_INT(contiguous), KW_INT(threads)};
#undef KW_ARGS
static kw_table cfb_kw = KW_TABLE("cfb_nhwc", cfb_spec);

static PyObject *py_cfb_nhwc(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    (void)self;
    cfb_args a;
    if (parse_kw(&cfb_kw, args, nargs, kwnames, &a) < 0) return NULL;
    const Py_ssize_t P = a.p;
    const int Cin = a.cin, Cout = a.cout, contiguous = a.contiguous;
    int threads = a.threads;
    if (P < 0 || Cin < 1 || Cout < 1) {
        PyErr_SetString(PyExc_ValueError, "_bkernels.cfb_nhwc: invalid shape");
        return NULL;
    }
    views_t vs = {.fn = "cfb_nhwc"};
    PyObject *ret = NULL;
    const float *x = get_buf(&vs, a.x, "x", T_F32, P * Cin, BUF_IN);
    float *out = get_buf(&vs, a.out, "out", T_F32, P * Cout, BUF_OUT);
    if (vs.failed) goto done;
    const int r = Cout / Cin, m = Cout % Cin;
    const int g = m ? Cin / m : 0, nreg = m ? g * (m - 1) : 0;
    threads = clamp_threads(threads);
    if ((long)P * Cout < 32768) threads = 1; /* a wake-up costs more than the work */
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (Py_ssize_t p = 0; p < P; p++) {
        const float *xr = x + p * Cin;
        float *o = out + p * Cout;
        for (int t = 0; t < r; t++) memcpy(o + (long)t * Cin, xr, (size_t)Cin * sizeof(float));
        if (m) {
            float *om = o + (long)r * Cin;
            for (int j = 0; j < m - 1; j++) {
                double s = 0.0;
                if (contiguous)
                    for (int i = 0; i < g; i++) s += (double)xr[j * g + i];
                else
                    for (int i = 0; i < g; i++) s += (double)xr[i * (m - 1) + j];
                om[j] = (float)(s / (double)g);
            }
            double s = 0.0;
            for (int c = nreg; c < Cin; c++) s += (double)xr[c];
            om[m - 1] = (float)(s / (double)(Cin - nreg));
        }
    }
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    views_release(&vs);
    return ret;
}

static PyObject *py_cpu_features(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    const char *names[] = {"popcnt", "avx2", "fma", "bmi2", "avx512f", "avx512vpopcntdq", "neon"};
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (PyDict_SetItemString(d, names[i], cpu_has(names[i]) ? Py_True : Py_False) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *py_path_supported(PyObject *self, PyObject *args) {
    (void)self;
    int p;
    if (!PyArg_ParseTuple(args, "i", &p)) return NULL;
    return PyBool_FromLong(path_supported(p));
}

static PyObject *py_build_info(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
#ifdef _OPENMP
    int omp = 1;
#else
    int omp = 0;
#endif
    return Py_BuildValue("{s:O,s:O,s:s}", "openmp", omp ? Py_True : Py_False, "x86_kernels",
                         BK_X86 ? Py_True : Py_False, "compiler",
#if defined(__clang__)
                         "clang " __clang_version__
#elif defined(__GNUC__)
                         "gcc " __VERSION__
#else
                         "unknown"
#endif
    );
}

/* Keyword entry points (METH_FASTCALL functions are registered through a PyCFunction cast). */
#define KW_METHOD(name, fn, doc)                                                                \
    { name, (PyCFunction)(void (*)(void))fn, METH_FASTCALL | METH_KEYWORDS, doc }

static PyMethodDef methods[] = {
    KW_METHOD("conv2d", py_conv2d, "Dense binary conv (see bidense.runtime.kernels)."),
    KW_METHOD("depthwise2d", py_depthwise2d, "Depthwise binary conv."),
    KW_METHOD("pack_f32", py_pack_f32, "Pack float32 rows to sign bits."),
    KW_METHOD("pack_thresh", py_pack_thresh, "Pack x < tau bits, count ties, |x - tau|."),
    KW_METHOD("chan_sum", py_chan_sum, "Per-channel float64 sums of NHWC float32 data."),
    KW_METHOD("bilinear_nhwc", py_bilinear_nhwc, "Bilinear resize of NHWC float32."),
    KW_METHOD("fp_gemm", py_fp_gemm, "Thread-count-independent float32 GEMM."),
    KW_METHOD("cfb_nhwc", py_cfb_nhwc, "BiDense CFB bypass on NHWC float32."),
    {"gemm_kind", py_gemm_kind, METH_NOARGS, "fp_gemm variant: 2 avx512, 1 avx2, 0 C."},
    {"cpu_features", py_cpu_features, METH_NOARGS, "Run-time CPU features."},
    {"path_supported", py_path_supported, METH_VARARGS, "Whether a kernel path runs here."},
    {"build_info", py_build_info, METH_NOARGS, "Compile-time facts."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_bkernels",
                                    "Binary XOR-popcount kernels for bidense.runtime.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__bkernels(void) { return PyModule_Create(&moddef); }
#endif /* BIDENSE_NO_PYTHON */
