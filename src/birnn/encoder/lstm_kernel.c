/* birnn's LSTM recurrence (birnn/encoder/lstm.py): the whole fp32 loop over the time steps,
 * forward and backward, each direction on a thread of its own as TensorFlow runs a
 * bidirectional layer, each step's matmul MKL's sgemm_ on that thread (kernel.h). PyTorch's
 * CPU LSTM (oneDNN's kernel) splits each step's small matmul over all threads and meets at
 * every step; here the directions share nothing and meet only at the end.
 *
 * The equations are nn.LSTM's (gate order i, f, g, o):
 *   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o),
 *   c' = f c + i g,   h' = o tanh(c')
 * with a = gi + W_h h, gi the input gates W_i x + b_i + b_h (both biases, computed by the
 * caller for every step with one matmul), which the forward loop turns into the activated
 * gates in place: the backward pass needs them.
 *
 * Arrays, as in lstm.py, direction first: gates (D, T, B, 4H), states h and c (D, T, B, H),
 * weights (D, 4H, H).
 */
#include "kernel.h"

struct lstm_loop {
    long steps, dirs, batch, H;
    const float *w, *zero, *grad_out;
    float *gates, *h, *c, *carry, *mm, *d_gates;
    sgemm_fn gemm;
};

/* Forward step for `rows` rows: a (rows, 4H), the gates' pre-activations, becomes the
 * activated gates [i, f, g, o]; c (rows, H) and h (rows, H) the new states. */
static void lstm_forward_step(long rows, long H, float *restrict a,
                              const float *restrict c_prev, float *restrict c,
                              float *restrict h) {
    for (long r = 0; r < rows; r++) {
        float *restrict q = a + r * 4 * H;
        const float *restrict cp = c_prev + r * H;
        float *restrict c_row = c + r * H, *restrict h_row = h + r * H;
        for (long j = 0; j < H; j++) {
            float i = sigmoid_(q[j]), f = sigmoid_(q[H + j]), g = tanh_(q[2 * H + j]),
                  o = sigmoid_(q[3 * H + j]);
            float cv = f * cp[j] + i * g;
            q[j] = i;
            q[H + j] = f;
            q[2 * H + j] = g;
            q[3 * H + j] = o;
            c_row[j] = cv;
            h_row[j] = o * tanh_(cv);
        }
    }
}

/* Backward step: the gradient reaching h_t is dh = grad_out_t + mm, mm being the step
 * after's d_gates @ W_h (zeros at the last step); that reaching c_t is
 *   dc = carry + dh o (1 - tanh(c)^2),   carry <- dc f for the step before,
 * and the gates' pre-activations get (d_gates, rows x 4H)
 *   [dc g i (1 - i), dc c_prev f (1 - f), dc i (1 - g^2), dh tanh(c) o (1 - o)],
 * the gradient of the input gates gi and of W_h h alike. */
static void lstm_backward_step(long rows, long H, const float *restrict a,
                               const float *restrict c, const float *restrict c_prev,
                               const float *restrict grad_out, const float *restrict mm,
                               float *restrict carry, float *restrict d_gates) {
    for (long r = 0; r < rows; r++) {
        const float *restrict q = a + r * 4 * H;
        const float *restrict c_row = c + r * H, *restrict cp = c_prev + r * H;
        const float *restrict go = grad_out + r * H, *restrict m = mm + r * H;
        float *restrict k = carry + r * H, *restrict dq = d_gates + r * 4 * H;
        for (long j = 0; j < H; j++) {
            float i = q[j], f = q[H + j], g = q[2 * H + j], o = q[3 * H + j];
            float tc = tanh_(c_row[j]);
            float dh = go[j] + m[j];
            float dc = k[j] + dh * o * (1.0f - tc * tc);
            dq[j] = dc * g * i * (1.0f - i);
            dq[H + j] = dc * cp[j] * f * (1.0f - f);
            dq[2 * H + j] = dc * i * (1.0f - g * g);
            dq[3 * H + j] = dh * tc * o * (1.0f - o);
            k[j] = dc * f;
        }
    }
}

static void lstm_forward_direction(const void *arg, long d) {
    const struct lstm_loop *l = arg;
    const long B = l->batch, H = l->H, T = l->steps, G = 4 * H;
    const int m = (int)G, n = (int)B, k = (int)H;
    const float one = 1.0f;
    const float *w = l->w + d * G * H;
    for (long t = 0; t < l->steps; t++) {
        const long at = d * T + t, before = at - 1;  /* (D, T, ...) arrays */
        float *a = l->gates + at * B * G;  /* W_i x + b, to become the activated gates */
        const float *h_prev = t ? l->h + before * B * H : l->zero;
        const float *c_prev = t ? l->c + before * B * H : l->zero;
        float *restrict h = l->h + at * B * H, *restrict c = l->c + at * B * H;
        if (t) l->gemm("T", "N", &m, &n, &k, &one, w, &k, h_prev, &k, &one, a, &m);
        lstm_forward_step(B, H, a, c_prev, c, h);
    }
}

/* From the last step down (lstm_backward_step). */
static void lstm_backward_direction(const void *arg, long d) {
    const struct lstm_loop *l = arg;
    const long B = l->batch, H = l->H, T = l->steps, G = 4 * H;
    const int m = (int)H, n = (int)B, k = (int)G;
    const float one = 1.0f, zero = 0.0f;
    const float *w = l->w + d * G * H;
    float *mm = l->mm + d * B * H, *carry = l->carry + d * B * H;
    for (long t = l->steps - 1; t >= 0; t--) {
        const long at = d * T + t;  /* (D, T, ...) arrays */
        const float *a = l->gates + at * B * G, *c = l->c + at * B * H;
        const float *c_prev = t ? l->c + (at - 1) * B * H : l->zero;
        const float *go = l->grad_out + at * B * H;
        float *dg_all = l->d_gates + at * B * G;
        lstm_backward_step(B, H, a, c, c_prev, go, mm, carry, dg_all);
        if (t) l->gemm("N", "N", &m, &n, &k, &one, w, &m, dg_all, &k, &zero, mm, &m);
    }
}

/* h, c (D, T, B, H) from gates (D, T, B, 4H), the input gates W_i x + b_i + b_h, which
 * become the activated gates [i, f, g, o]; zero: B * H zeros. */
void birnn_lstm_forward_loop_f32(long steps, long dirs, long batch, long H, float *gates,
                                 const float *w, const float *zero, float *h, float *c,
                                 void *gemm, void *local_threads, long threads,
                                 long blas_threads) {
    struct lstm_loop l = {.steps = steps, .dirs = dirs, .batch = batch, .H = H,
                          .gates = gates, .w = w, .zero = zero, .h = h, .c = c,
                          .gemm = (sgemm_fn)gemm};
    each_direction(lstm_forward_direction, &l, dirs, threads, (threads_fn)local_threads,
                   (int)blas_threads);
}

/* d_gates (D, T, B, 4H) from grad_out (D, T, B, H); carry and mm: (D, B, H) zeros. */
void birnn_lstm_backward_loop_f32(long steps, long dirs, long batch, long H, const float *gates,
                                  const float *c, const float *zero, const float *w,
                                  const float *grad_out, float *carry, float *mm,
                                  float *d_gates, void *gemm, void *local_threads,
                                  long threads, long blas_threads) {
    struct lstm_loop l = {.steps = steps, .dirs = dirs, .batch = batch, .H = H, .gates =
                          (float *)gates, .c = (float *)c, .zero = zero, .w = w,
                          .grad_out = grad_out, .carry = carry, .mm = mm, .d_gates = d_gates,
                          .gemm = (sgemm_fn)gemm};
    each_direction(lstm_backward_direction, &l, dirs, threads, (threads_fn)local_threads,
                   (int)blas_threads);
}
