/* What birnn's C kernels share (gru_kernel.c, lstm_kernel.c): a vectorisable exp, the
 * sigmoid, MKL's matmul as PyTorch's library exports it, and the loop that runs each
 * direction of a layer on a thread of PyTorch's OpenMP pool. */
#ifndef BIRNN_KERNEL_H
#define BIRNN_KERNEL_H

#include <stdint.h>
#include <string.h>

/* exp(x) for x in [-87, 88] (clamped outside): Cephes' expf polynomial after the reduction
 * x = k ln2 + r, relative error about 1e-7; branch-free, so loops over it vectorise (written
 * otherwise, e.g. rounding with a sign test, GCC 12 left the loops scalar: 13x slower). */
static inline float exp_(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* k = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer */
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline float sigmoid_(float x) { return 1.0f / (1.0f + exp_(-x)); }

/* tanh(x) = 2 sigmoid(2x) - 1: the same vectorisable exp */
static inline float tanh_(float x) { return 2.0f * sigmoid_(2.0f * x) - 1.0f; }

/* Column-major BLAS on row-major arrays: y (B, N) = x (B, K) @ W^T with W (N, K) row-major
 * is, read column-major, y^T (N, B) = W^T' x^T, so sgemm_("T", "N", N, B, K); dx (B, K) =
 * dy (B, N) @ W likewise sgemm_("N", "N", K, B, N). */
typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *,
                         const int *, const float *, float *, const int *);
typedef int (*threads_fn)(const int *);

typedef void (*direction_fn)(const void *loop, long d);

/* Runs body(loop, d) for every direction d < dirs, up to `threads` at once, each with
 * `blas_threads` MKL threads of its own (MKL_SET_NUM_THREADS_LOCAL, set back to the
 * process's setting after). OpenMP's threads, not threads of our own: the library links the
 * libgomp PyTorch has loaded, so the directions run on the pool PyTorch's own ops use. A
 * thread of our own found that pool's threads spinning after PyTorch's last parallel op, on
 * the core it needed. */
static void each_direction(direction_fn body, const void *loop, long dirs, long threads,
                           threads_fn local_threads, int blas_threads) {
    const int process_setting = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)threads) schedule(static, 1)
#else
    (void)threads;  /* a compiler without OpenMP: the directions run in turn */
#endif
    for (long d = 0; d < dirs; d++) {
        local_threads(&blas_threads);
        body(loop, d);
        local_threads(&process_setting);
    }
}

#endif
