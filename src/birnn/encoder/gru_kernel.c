/* The element-wise part of one time step of birnn's GRU recurrence (birnn/encoder/gru.py),
 * forward and backward, for `rows` independent rows (directions x batch) of `H` units.
 *
 * PyTorch runs this part as a dozen small ops per step forward and twenty backward, each a
 * few microseconds of dispatch for a few microseconds of work; here it is one loop over the
 * rows, which the compiler vectorises (given -fno-trapping-math: native.py). The matmuls
 * stay in PyTorch (gru.py). Compiled on first use by birnn/encoder/native.py and called
 * through ctypes, so it has no Python or
 * PyTorch headers: plain C99 and no libm (exp is computed here, so the loops vectorise
 * without -ffast-math, which would change the floating-point mode of the whole process).
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
