/* The element-wise part of one time step of birnn's GRU recurrence (birnn/encoder/gru.py),
 * forward and backward, for `rows` independent rows (directions x batch) of `H` units.
 *
 * PyTorch runs this part as a dozen small ops per step forward and twenty backward, each a
 * few microseconds of dispatch for a few microseconds of work; here it is one loop over the
 * rows, which the compiler vectorises (given -fno-trapping-math: native.py). The fp32 loop
 * over the time steps can run here too, with MKL's matmul (below); otherwise the matmuls stay
 * in PyTorch (gru.py). Compiled on first use by birnn/encoder/native.py and called through
 * ctypes, so it has no Python or PyTorch headers: C99 with OpenMP and no libm (exp is
 * computed in kernel.h, so the loops vectorise without -ffast-math, which would change the
 * floating-point mode of the whole process).
 *
 * The equations are nn.GRU's (gate order r, z, n):
 *   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
 *   h' = n + z * (h - n)
 * with gi the input gates (W_i x + b_i) and gh the recurrent ones (W_h h + b_h).
 *
 * Each function exists for fp32 inputs (`_f32`) and bf16 ones (`_bf16`: gi and gh as the
 * bf16 results of autocast's matmuls); the state, the gates kept for the backward pass and
 * the gradients are fp32 in both.
 */
#include <stdint.h>
#include <string.h>

#include "kernel.h"

typedef uint16_t bf16;

static inline float from_f32(float x) { return x; }

static inline float from_bf16(bf16 x) {
    uint32_t bits = (uint32_t)x << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline bf16 to_bf16(float f) {  /* round to nearest even, as PyTorch does */
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (bf16)((bits >> 16) | 0x40);  /* NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (bf16)(bits >> 16);
}

/* Forward step. gi, gh: (rows, 3H); h_prev: (rows, H) (zeros at the first step); writes
 * rz (rows, 2H) = [r, z], n (rows, H), h (rows, H) and, when not NULL, h_mm (rows, H), h in
 * bf16 for the next step's matmul. */
#define FORWARD(SUFFIX, IN)                                                                   \
    void birnn_gru_forward_##SUFFIX(long rows, long H, const IN *gi, const IN *gh,            \
                                    const float *h_prev, float *restrict rz,                  \
                                    float *restrict n, float *restrict h,                     \
                                    bf16 *restrict h_mm) {                                    \
        for (long i = 0; i < rows; i++) {                                                     \
            const IN *restrict a = gi + i * 3 * H, *restrict b = gh + i * 3 * H;              \
            float *restrict r_out = rz + i * 2 * H, *restrict z_out = r_out + H;              \
            float *restrict n_out = n + i * H, *restrict h_out = h + i * H;                   \
            const float *restrict hp = h_prev + i * H;                                        \
            for (long j = 0; j < H; j++) {                                                    \
                float r = sigmoid_(from_##SUFFIX(a[j]) + from_##SUFFIX(b[j]));                \
                float z = sigmoid_(from_##SUFFIX(a[H + j]) + from_##SUFFIX(b[H + j]));        \
                float pre = from_##SUFFIX(a[2 * H + j]) + r * from_##SUFFIX(b[2 * H + j]);    \
                float nn = 2.0f * sigmoid_(2.0f * pre) - 1.0f;                                \
                float hv = hp[j];                                                             \
                r_out[j] = r;                                                                 \
                z_out[j] = z;                                                                 \
                n_out[j] = nn;                                                                \
                h_out[j] = nn + z * (hv - nn);                                                \
            }                                                                                 \
            if (h_mm)                                                                         \
                for (long j = 0; j < H; j++) h_mm[i * H + j] = to_bf16(h_out[j]);             \
        }                                                                                     \
    }

/* Backward step, from the last time step down. The gradient reaching h_t is
 *   g = carry + (mm ? mm : 0) + grad_out,
 * carry being the previous call's dh * z and mm the recurrent matmul's d_hh_{t+1} @ W_h
 * (both zeros at the last step); h_prev is zeros at the first step. Writes
 *   d_hh (rows, 3H) = gradient of gh:            [dr, dz, dn * r],
 *   d_in (rows, 3H) = gradient of gi:            [dr, dz, dn],
 *   d_mm (rows, 3H) = d_hh in bf16 (when not NULL), for the next matmul,
 *   carry (rows, H) <- g * z,
 * with dn = g (1 - z)(1 - n^2), dz = g (h_prev - n) z (1 - z), dr = dn gh_n r (1 - r). */
#define BACKWARD(SUFFIX, IN)                                                                  \
    void birnn_gru_backward_##SUFFIX(long rows, long H, const float *rz, const float *n,      \
                                     const IN *gh, const float *h_prev,                       \
                                     const float *grad_out, const IN *mm,                     \
                                     float *restrict carry, float *restrict d_hh,             \
                                     float *restrict d_in, bf16 *restrict d_mm) {             \
        for (long i = 0; i < rows; i++) {                                                     \
            const float *restrict r_in = rz + i * 2 * H, *restrict z_in = r_in + H;           \
            const float *restrict n_in = n + i * H, *restrict hp = h_prev + i * H;            \
            const float *restrict go = grad_out + i * H;                                      \
            const IN *restrict g_n = gh + i * 3 * H + 2 * H, *restrict m = mm + i * H;        \
            float *restrict c = carry + i * H, *restrict dh_row = d_hh + i * 3 * H;           \
            float *restrict di_row = d_in + i * 3 * H;                                        \
            for (long j = 0; j < H; j++) {                                                    \
                float r = r_in[j], z = z_in[j], nn = n_in[j], hv = hp[j];                     \
                float g = c[j] + go[j] + from_##SUFFIX(m[j]);                                  \
                float dn = g * (1.0f - z) * (1.0f - nn * nn);                                 \
                float dz = g * (hv - nn) * z * (1.0f - z);                                    \
                float dr = dn * from_##SUFFIX(g_n[j]) * r * (1.0f - r);                       \
                dh_row[j] = dr;                                                               \
                dh_row[H + j] = dz;                                                           \
                dh_row[2 * H + j] = dn * r;                                                   \
                di_row[j] = dr;                                                               \
                di_row[H + j] = dz;                                                           \
                di_row[2 * H + j] = dn;                                                       \
                c[j] = g * z;                                                                 \
            }                                                                                 \
            if (d_mm)                                                                         \
                for (long j = 0; j < 3 * H; j++) d_mm[i * 3 * H + j] = to_bf16(dh_row[j]);    \
        }                                                                                     \
    }

FORWARD(f32, float)
FORWARD(bf16, bf16)
BACKWARD(f32, float)
BACKWARD(bf16, bf16)

/* The whole fp32 loop over the time steps, forward or backward, each direction on a thread
 * of its own as TensorFlow runs a bidirectional layer: the directions share nothing, so the
 * threads meet only at the end (each_direction, kernel.h). The per-step matmul is MKL's
 * sgemm_ from PyTorch's own library (its address passed in by native.py), on the
 * `blas_threads` MKL threads each direction's thread gets. In Python the same loop runs one
 * small op at a time over all threads (gru.py), which on 2 cores splits each 6-MFLOP matmul
 * in two and synchronises every step.
 *
 * The matmuls as kernel.h writes them: gh (B, 3H) = h (B, H) @ W^T is sgemm_("T", "N", 3H, B,
 * H); dh (B, H) = d_hh (B, 3H) @ W is sgemm_("N", "N", H, B, 3H).
 * Arrays are laid out as in gru.py: gates (T, D, B, 3H), states (T, D, B, H), weights
 * (D, 3H, H), biases (D, 3H); with keep == 0 the forward keeps one step's gates. */

struct loop {
    long steps, dirs, batch, H, keep;
    const float *gi, *w, *b, *zero, *grad_out;
    float *out, *rz, *n, *gh, *carry, *mm, *d_hh, *d_in;
    sgemm_fn gemm;
};

static void forward_direction(const void *arg, long d) {
    const struct loop *l = arg;
    const long B = l->batch, H = l->H, D = l->dirs, W = 3 * H;
    const int m = (int)W, n = (int)B, k = (int)H;
    const float one = 1.0f;
    const float *w = l->w + d * W * H, *bias = l->b + d * W;
    for (long t = 0; t < l->steps; t++) {
        const long kt = l->keep ? t : 0;
        float *gh = l->gh + (kt * D + d) * B * W;
        const float *h_prev = t ? l->out + ((t - 1) * D + d) * B * H : l->zero;
        for (long r = 0; r < B; r++) memcpy(gh + r * W, bias, W * sizeof(float));
        if (t) l->gemm("T", "N", &m, &n, &k, &one, w, &k, h_prev, &k, &one, gh, &m);
        birnn_gru_forward_f32(B, H, l->gi + (t * D + d) * B * W, gh, h_prev,
                              l->rz + (kt * D + d) * B * 2 * H, l->n + (kt * D + d) * B * H,
                              l->out + (t * D + d) * B * H, NULL);
    }
}

static void backward_direction(const void *arg, long d) {
    const struct loop *l = arg;
    const long B = l->batch, H = l->H, D = l->dirs, W = 3 * H;
    const int m = (int)H, n = (int)B, k = (int)W;
    const float one = 1.0f, zero = 0.0f;
    const float *w = l->w + d * W * H;
    float *mm = l->mm + d * B * H, *carry = l->carry + d * B * H;
    for (long t = l->steps - 1; t >= 0; t--) {
        const long at = t * D + d;
        float *d_hh = l->d_hh + at * B * W;
        birnn_gru_backward_f32(B, H, l->rz + at * B * 2 * H, l->n + at * B * H,
                               l->gh + at * B * W,
                               t ? l->out + ((t - 1) * D + d) * B * H : l->zero,
                               l->grad_out + at * B * H, mm, carry, d_hh,
                               l->d_in + at * B * W, NULL);
        if (t) l->gemm("N", "N", &m, &n, &k, &one, w, &m, d_hh, &k, &zero, mm, &m);
    }
}

void birnn_gru_forward_loop_f32(long steps, long dirs, long batch, long H, long keep,
                                const float *gi, const float *w, const float *b,
                                const float *zero, float *out, float *rz, float *n, float *gh,
                                void *gemm, void *local_threads, long threads,
                                long blas_threads) {
    struct loop l = {.steps = steps, .dirs = dirs, .batch = batch, .H = H, .keep = keep,
                     .gi = gi, .w = w, .b = b, .zero = zero, .out = out, .rz = rz, .n = n,
                     .gh = gh, .gemm = (sgemm_fn)gemm};
    each_direction(forward_direction, &l, dirs, threads, (threads_fn)local_threads,
                   (int)blas_threads);
}

void birnn_gru_backward_loop_f32(long steps, long dirs, long batch, long H, float *rz,
                                 float *n, float *gh, float *out,
                                 const float *zero, const float *w, const float *grad_out,
                                 float *carry, float *mm, float *d_hh, float *d_in,
                                 void *gemm, void *local_threads, long threads,
                                 long blas_threads) {
    struct loop l = {.steps = steps, .dirs = dirs, .batch = batch, .H = H, .rz = rz, .n = n,
                     .gh = gh, .out = out, .zero = zero, .w = w,
                     .grad_out = grad_out, .carry = carry, .mm = mm, .d_hh = d_hh,
                     .d_in = d_in, .gemm = (sgemm_fn)gemm};
    each_direction(backward_direction, &l, dirs, threads, (threads_fn)local_threads,
                   (int)blas_threads);
}
