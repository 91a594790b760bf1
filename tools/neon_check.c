/*
 * tools/neon_check.c -- bit-exactness check of every compiled dense conv path, without Python.
 *
 * tests/test_kernels_neon.py builds it twice with the extension's flags: natively, and with
 * aarch64-linux-gnu-gcc to run under qemu-aarch64. It includes csrc/bkernels.c compiled with
 * -DBIDENSE_NO_PYTHON and runs conv2d_run on a fixed grid of cases (channel counts, kernel
 * geometries, fused epilogues) filled by xorshift64*, so every build sees the same inputs. Each
 * case runs on the portable path (one thread) and on every other path this CPU supports (argv[1]
 * threads, default 1); any output that differs from the portable one in a single bit is a
 * mismatch. Output, one line each:
 *   paths <names of the paths that ran>
 *   case <id> <FNV-1a 64 hash of the portable output's bytes>     (compared across builds)
 *   mismatch <id> <path> <first differing index> <portable value> <path value>
 *   done <cases> <mismatches>
 * Exit status 0 when every path matched, 1 on a mismatch, 2 when out of memory.
 *
 * Build: cc -O3 -std=c11 -fno-strict-aliasing -ffp-contract=off [-fopenmp] -DBIDENSE_NO_PYTHON
 *        -Icsrc tools/neon_check.c -o neon_check -lm
 */
#include "bkernels.c"

#include <inttypes.h>
#include <stdio.h>

static const char *const PATH_NAME[] = {
    [P_PORTABLE] = "portable", [P_POPCNT] = "popcnt", [P_AVX2] = "avx2",
    [P_AVX512] = "avx512",     [P_NEON] = "neon"};
#define N_PATHS ((int)(sizeof PATH_NAME / sizeof PATH_NAME[0]))

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [-2, 2) on a 2^-22 grid: exactly representable, so identical on every build. */
static float rng_float(void) { return (float)(rng_next() >> 40) * (1.0f / 4194304.0f) - 2.0f; }

static float *rng_floats(long n) {
    float *a = malloc((size_t)(n > 0 ? n : 1) * sizeof *a);
    if (a)
        for (long i = 0; i < n; i++) a[i] = rng_float();
    return a;
}

/* rows x words packed words for c channels, bits above channel c cleared (the packing
 * convention). */
static uint64_t *rng_bits(long rows, int words, int c) {
    uint64_t *a = malloc((size_t)rows * words * sizeof *a);
    if (!a) return NULL;
    const uint64_t last = c % 64 ? ((uint64_t)1 << (c % 64)) - 1 : ~(uint64_t)0;
    for (long r = 0; r < rows; r++)
        for (int k = 0; k < words; k++)
            a[r * words + k] = rng_next() & (k == words - 1 ? last : ~(uint64_t)0);
    return a;
}

static uint64_t fnv1a(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h;
}

typedef struct {
    const char *name;
    int kh, kw, sh, sw, ph, pw, dh, dw, zero_pad;
} geometry_t;

static const geometry_t GEOMETRIES[] = {
    {"1x1", 1, 1, 1, 1, 0, 0, 1, 1, 1},       {"1x1s2", 1, 1, 2, 2, 0, 0, 1, 1, 1},
    {"3x3p0", 3, 3, 1, 1, 0, 0, 1, 1, 1},     {"3x3p1zero", 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"3x3p1one", 3, 3, 1, 1, 1, 1, 1, 1, 0},  {"3x3s2p1zero", 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {"3x3s2p1one", 3, 3, 2, 2, 1, 1, 1, 1, 0}, {"3x3d2p2zero", 3, 3, 1, 1, 2, 2, 2, 2, 1},
    {"3x3d2p1one", 3, 3, 1, 1, 1, 1, 2, 2, 0}, {"5x5p2zero", 5, 5, 1, 1, 2, 2, 1, 1, 1},
    {"3x1p1zero", 3, 1, 1, 1, 1, 0, 1, 1, 1},
};

/* Epilogue terms present: scale per sample, bypass, PReLU slope, PReLU pre/post biases. */
typedef struct {
    const char *name;
    int scale_per_n, bypass, prelu, pre_post;
} epilogue_t;

static const epilogue_t EPILOGUES[] = {
    {"affine", 0, 0, 0, 0},  {"scale_n", 1, 0, 0, 0},        {"bypass", 0, 1, 0, 0},
    {"prelu", 0, 0, 1, 0},   {"rprelu_all", 1, 1, 1, 1},
};

static const int CHANNELS[] = {1, 63, 64, 65, 130, 256};
static const int OUTPUTS[] = {1, 13, 64, 65};

#define COUNT(a) ((int)(sizeof a / sizeof a[0]))

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    const int N = 2, H = 9, W = 11;
    printf("paths");
    for (int p = 0; p < N_PATHS; p++)
        if (path_supported(p)) printf(" %s", PATH_NAME[p]);
    printf("\n");
    int cases = 0, mismatches = 0;
    for (int ci = 0; ci < COUNT(CHANNELS); ci++)
        for (int oi = 0; oi < COUNT(OUTPUTS); oi++)
            for (int gi = 0; gi < COUNT(GEOMETRIES); gi++)
                for (int ei = 0; ei < COUNT(EPILOGUES); ei++) {
                    const geometry_t *g = &GEOMETRIES[gi];
                    const epilogue_t *e = &EPILOGUES[ei];
                    conv_t c;
                    memset(&c, 0, sizeof c);
                    c.N = N, c.H = H, c.W = W, c.C = CHANNELS[ci], c.O = OUTPUTS[oi];
                    c.KH = g->kh, c.KW = g->kw, c.sh = g->sh, c.sw = g->sw, c.ph = g->ph;
                    c.pw = g->pw, c.dh = g->dh, c.dw = g->dw, c.zero_pad = g->zero_pad;
                    c.scale_per_n = e->scale_per_n;
                    if (conv_sizes(&c) < 0) return 2;
                    const long outs = (long)N * c.Ho * c.Wo * c.O;
                    uint64_t *x = rng_bits((long)N * H * W, c.CW, c.C);
                    uint64_t *w = rng_bits((long)c.O * c.KH * c.KW, c.CW, c.C);
                    float *scale = rng_floats((long)(e->scale_per_n ? N : 1) * c.O);
                    float *bias = rng_floats(c.O);
                    float *bypass = e->bypass ? rng_floats(outs) : NULL;
                    float *slope = e->prelu ? rng_floats(c.O) : NULL;
                    float *pre = e->pre_post ? rng_floats(c.O) : NULL;
                    float *post = e->pre_post ? rng_floats(c.O) : NULL;
                    float *ref = malloc((size_t)outs * sizeof *ref);
                    float *out = malloc((size_t)outs * sizeof *out);
                    if (!x || !w || !scale || !bias || (e->bypass && !bypass) ||
                        (e->prelu && !slope) || (e->pre_post && (!pre || !post)) || !ref ||
                        !out)
                        return 2;
                    c.x = x, c.w = w, c.scale = scale, c.bias = bias, c.bypass = bypass;
                    c.slope = slope, c.pre = pre, c.post = post;
                    char id[96];
                    snprintf(id, sizeof id, "c%d_o%d_%s_%s", c.C, c.O, g->name, e->name);
                    c.path = P_PORTABLE, c.threads = 1, c.out = ref;
                    if (conv2d_run(&c) < 0) return 2;
                    printf("case %s %016" PRIx64 "\n", id, fnv1a(ref, (size_t)outs * 4));
                    for (int p = 0; p < N_PATHS; p++) {
                        if (p == P_PORTABLE || !path_supported(p)) continue;
                        memset(out, 0xff, (size_t)outs * sizeof *out);
                        c.path = p, c.threads = threads, c.out = out;
                        if (conv2d_run(&c) < 0) return 2;
                        if (memcmp(ref, out, (size_t)outs * sizeof *out) != 0) {
                            long i = 0;
                            while (memcmp(ref + i, out + i, sizeof *out) == 0) i++;
                            printf("mismatch %s %s %ld %.9g %.9g\n", id, PATH_NAME[p], i,
                                   (double)ref[i], (double)out[i]);
                            mismatches++;
                        }
                    }
                    cases++;
                    free(x), free(w), free(scale), free(bias), free(bypass), free(slope);
                    free(pre), free(post), free(ref), free(out);
                }
    printf("done %d %d\n", cases, mismatches);
    return mismatches ? 1 : 0;
}
