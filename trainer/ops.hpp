// The trainer's operations, each forward beside its backward (llm.c style), over a
// batch of N = B*T tokens laid out [N, C] row-major. Templated on the scalar type: float
// for training, double for gradient checks against finite differences.
//
// Conventions: a backward that takes `dx` *adds* into it (residual streams sum their
// gradients); parameter gradients (dw, db) are *written* (each parameter gets exactly one
// contribution per step, so the gradient buffer needs no zeroing pass). Reductions over
// tokens run in token order whatever the thread count, so results are bit-identical
// with 1 or 2 threads.
#pragma once

#include <cmath>
#include <cstdint>

#include "trainer/gemm.hpp"
#include "trainer/rng.hpp"

namespace moe::train {

// ---- linear: out = in W^T (+ b), W [OC, C] as nn.Linear stores it ------------------------

template <class T>
void linear_forward(T* out, const T* in, const T* w, const T* b, int N, int C, int OC) {
  gemm<T>(N, OC, C, in, C, 1, w, 1, C, out, OC, false);
  if (b != nullptr) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) out[static_cast<long>(n) * OC + o] += b[o];
  }
}

// din (+)= dout W;  dw = dout^T in;  db = sum over tokens of dout. `din` may be null.
template <class T>
void linear_backward(T* din, bool din_accumulate, T* dw, T* db, const T* dout, const T* in, const T* w, int N, int C,
                     int OC) {
  if (din != nullptr) gemm<T>(N, C, OC, dout, OC, 1, w, C, 1, din, C, din_accumulate);
  gemm<T>(OC, C, N, dout, 1, OC, in, C, 1, dw, C, false);
  if (db != nullptr) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; ++o) {
      T s = 0;
      for (int n = 0; n < N; ++n) s += dout[static_cast<long>(n) * OC + o];
      db[o] = s;
    }
  }
}

// ---- LayerNorm (classic family) -----------------------------------------------------------

template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int N, int C, T eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* xn = x + static_cast<long>(n) * C;
    T m = 0;
    for (int i = 0; i < C; ++i) m += xn[i];
    m /= C;
    T v = 0;
    for (int i = 0; i < C; ++i) v += (xn[i] - m) * (xn[i] - m);
    v /= C;
    const T r = T(1) / std::sqrt(v + eps);
    T* o = out + static_cast<long>(n) * C;
    for (int i = 0; i < C; ++i) o[i] = (xn[i] - m) * r * w[i] + b[i];
    mean[n] = m;
    rstd[n] = r;
  }
}

template <class T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, const T* mean, const T* rstd, int N,
                        int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* d = dout + static_cast<long>(n) * C;
    const T* xn = x + static_cast<long>(n) * C;
    T dnorm_mean = 0, dnorm_norm_mean = 0;
    for (int i = 0; i < C; ++i) {
      const T norm = (xn[i] - mean[n]) * rstd[n];
      dnorm_mean += w[i] * d[i];
      dnorm_norm_mean += w[i] * d[i] * norm;
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    T* dxn = dx + static_cast<long>(n) * C;
    for (int i = 0; i < C; ++i) {
      const T norm = (xn[i] - mean[n]) * rstd[n];
      dxn[i] += (w[i] * d[i] - dnorm_mean - norm * dnorm_norm_mean) * rstd[n];
    }
  }
#pragma omp parallel for schedule(static)
  for (int i = 0; i < C; ++i) {
    T sw = 0, sb = 0;
    for (int n = 0; n < N; ++n) {
      const T g = dout[static_cast<long>(n) * C + i];
      sw += g * (x[static_cast<long>(n) * C + i] - mean[n]) * rstd[n];
      sb += g;
    }
    dw[i] = sw;
    db[i] = sb;
  }
}

// ---- RMSNorm (llama family) ------------------------------------------------------------

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int C, T eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* xn = x + static_cast<long>(n) * C;
    T ss = 0;
    for (int i = 0; i < C; ++i) ss += xn[i] * xn[i];
    const T r = T(1) / std::sqrt(ss / C + eps);
    T* o = out + static_cast<long>(n) * C;
    for (int i = 0; i < C; ++i) o[i] = w[i] * (xn[i] * r);
    rstd[n] = r;
  }
}

template <class T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* d = dout + static_cast<long>(n) * C;
    const T* xn = x + static_cast<long>(n) * C;
    const T r = rstd[n];
    T dot = 0;  // sum_i (w_i d_i) x_i
    for (int i = 0; i < C; ++i) dot += w[i] * d[i] * xn[i];
    const T k = r * r * r * dot / C;
    T* dxn = dx + static_cast<long>(n) * C;
    for (int i = 0; i < C; ++i) dxn[i] += w[i] * d[i] * r - xn[i] * k;
  }
#pragma omp parallel for schedule(static)
  for (int i = 0; i < C; ++i) {
    T s = 0;
    for (int n = 0; n < N; ++n) s += dout[static_cast<long>(n) * C + i] * x[static_cast<long>(n) * C + i] * rstd[n];
    dw[i] = s;
  }
}

// ---- dropout: out = in * mask, mask = 0 or 1/(1-p), drawn from (seed, stream) -------------

template <class T>
void dropout_mask(T* mask, long n, float p, const CounterRng& rng) {
  const T keep = T(1) / (T(1) - static_cast<T>(p));
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) mask[i] = rng.uniform(static_cast<uint64_t>(i)) < p ? T(0) : keep;
}

// ---- RoPE, rotate-half layout (as transformers) ------------------------------------------

// Rotates the n_heads heads of each token (row stride `stride`) by its position t % T.
template <class T>
void rope_forward(T* x, int N, int T_len, int n_heads, int head_dim, long stride, float theta, bool inverse) {
  const int half = head_dim / 2;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const int pos = n % T_len;
    for (int i = 0; i < half; ++i) {
      const float inv_freq = 1.f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
      const float angle = static_cast<float>(pos) * inv_freq;  // float32, as transformers
      const T c = static_cast<T>(std::cos(static_cast<double>(angle)));
      const T s =
          static_cast<T>(inverse ? -std::sin(static_cast<double>(angle)) : std::sin(static_cast<double>(angle)));
      for (int h = 0; h < n_heads; ++h) {
        T* v = x + static_cast<long>(n) * stride + h * head_dim;
        const T a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}
// The backward of a rotation is the inverse rotation of the gradient.
template <class T>
void rope_backward(T* dx, int N, int T_len, int n_heads, int head_dim, long stride, float theta) {
  rope_forward(dx, N, T_len, n_heads, head_dim, stride, theta, /*inverse=*/true);
}

// ---- causal self-attention (grouped-query: head h reads kv head h / (H/KVH)) ---------------

struct AttentionShape {
  int B, T, H, KVH, hd;
  long q_stride, kv_stride;  // row strides of q and of k/v (one fused q|k|v buffer: equal)
  long out_stride;           // row stride of the output (and its gradient)
  float scale;
};

// att [B, H, T, T] softmax probabilities; mask (optional, same shape) dropout multipliers.
template <class T>
void attention_forward(T* out, T* att, const T* mask, const T* q, const T* k, const T* v, const AttentionShape& s) {
  const int group = s.H / s.KVH;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; ++b) {
    for (int h = 0; h < s.H; ++h) {
      const int g = h / group;
      for (int t = 0; t < s.T; ++t) {
        const T* qt = q + static_cast<long>(b * s.T + t) * s.q_stride + h * s.hd;
        T* a = att + ((static_cast<long>(b) * s.H + h) * s.T + t) * s.T;
        T m = -INFINITY;
        for (int u = 0; u <= t; ++u) {
          const T* ku = k + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
          T dot = 0;
          for (int i = 0; i < s.hd; ++i) dot += qt[i] * ku[i];
          a[u] = dot * static_cast<T>(s.scale);
          m = a[u] > m ? a[u] : m;
        }
        T z = 0;
        for (int u = 0; u <= t; ++u) z += (a[u] = std::exp(a[u] - m));
        for (int u = 0; u <= t; ++u) a[u] /= z;
        for (int u = t + 1; u < s.T; ++u) a[u] = 0;
        T* o = out + static_cast<long>(b * s.T + t) * s.out_stride + h * s.hd;
        for (int i = 0; i < s.hd; ++i) o[i] = 0;
        for (int u = 0; u <= t; ++u) {
          const T p = mask ? a[u] * mask[a - att + u] : a[u];
          const T* vu = v + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
          for (int i = 0; i < s.hd; ++i) o[i] += p * vu[i];
        }
      }
    }
  }
}

// dq, dk, dv are written (every element gets its full sum here).
template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* att, const T* mask, const T* q, const T* k,
                        const T* v, const AttentionShape& s) {
  const int group = s.H / s.KVH;
  // One task per (batch, kv head): the heads that share a kv head add into the same dk, dv.
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; ++b) {
    for (int g = 0; g < s.KVH; ++g) {
      for (int u = 0; u < s.T; ++u) {
        T* dku = dk + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
        T* dvu = dv + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
        for (int i = 0; i < s.hd; ++i) dku[i] = dvu[i] = 0;
      }
      T datt[4096];  // T <= 4096 (checked by the model)
      for (int h = g * group; h < (g + 1) * group; ++h) {
        for (int t = 0; t < s.T; ++t) {
          const T* a = att + ((static_cast<long>(b) * s.H + h) * s.T + t) * s.T;
          const T* mk = mask ? mask + (a - att) : nullptr;
          const T* dot_ = dout + static_cast<long>(b * s.T + t) * s.out_stride + h * s.hd;
          const T* qt = q + static_cast<long>(b * s.T + t) * s.q_stride + h * s.hd;
          T sum = 0;
          for (int u = 0; u <= t; ++u) {
            const T* vu = v + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
            T* dvu = dv + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
            const T p = mk ? a[u] * mk[u] : a[u];
            T d = 0;
            for (int i = 0; i < s.hd; ++i) {
              d += dot_[i] * vu[i];
              dvu[i] += p * dot_[i];
            }
            datt[u] = mk ? d * mk[u] : d;
            sum += a[u] * datt[u];
          }
          T* dqt = dq + static_cast<long>(b * s.T + t) * s.q_stride + h * s.hd;
          for (int i = 0; i < s.hd; ++i) dqt[i] = 0;
          for (int u = 0; u <= t; ++u) {
            const T dscore = a[u] * (datt[u] - sum) * static_cast<T>(s.scale);
            const T* ku = k + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
            T* dku = dk + static_cast<long>(b * s.T + u) * s.kv_stride + g * s.hd;
            for (int i = 0; i < s.hd; ++i) {
              dqt[i] += dscore * ku[i];
              dku[i] += dscore * qt[i];
            }
          }
        }
      }
    }
  }
}

// ---- expert activations -------------------------------------------------------------------

// classic: z = relu(h + b)  (h is the W1 product; b1 added here)
template <class T>
void bias_relu_forward(T* h, const T* b, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < C; ++i) {
      T& x = h[static_cast<long>(n) * C + i];
      x += b[i];
      x = x > 0 ? x : T(0);
    }
}
// dh = dz where z > 0 (z is the output: relu'(x) = [z > 0])
template <class T>
void relu_backward(T* dh, const T* z, long n) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) dh[i] = z[i] > 0 ? dh[i] : T(0);
}

// llama: z = silu(g) * u
template <class T>
void swiglu_forward(T* z, const T* g, const T* u, long n) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) z[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
}
template <class T>
void swiglu_backward(T* dg, T* du, const T* dz, const T* g, const T* u, long n) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) {
    const T sig = T(1) / (T(1) + std::exp(-g[i]));
    const T silu = g[i] * sig;
    du[i] = dz[i] * silu;
    dg[i] = dz[i] * u[i] * (sig * (T(1) + g[i] * (T(1) - sig)));
  }
}

// ---- softmax cross-entropy over the vocabulary ------------------------------------------------

// probs = softmax(logits); losses[n] = -log probs[target]; returns their mean, summed in
// token order (an OpenMP reduction would make the logged loss depend on thread timing).
template <class T>
double crossentropy_forward(T* probs, double* losses, const T* logits, const int32_t* targets, int N, int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const T* l = logits + static_cast<long>(n) * V;
    T* p = probs + static_cast<long>(n) * V;
    T m = l[0];
    for (int i = 1; i < V; ++i) m = l[i] > m ? l[i] : m;
    T z = 0;
    for (int i = 0; i < V; ++i) z += (p[i] = std::exp(l[i] - m));
    for (int i = 0; i < V; ++i) p[i] /= z;
    losses[n] = std::log(static_cast<double>(z)) - static_cast<double>(l[targets[n]] - m);  // log-sum-exp form
  }
  double total = 0;
  for (int n = 0; n < N; ++n) total += losses[n];
  return total / N;
}
template <class T>
void crossentropy_backward(T* dlogits, const T* probs, const int32_t* targets, int N, int V) {
  const T scale = T(1) / N;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < V; ++i)
      dlogits[static_cast<long>(n) * V + i] =
          (probs[static_cast<long>(n) * V + i] - (i == targets[n] ? T(1) : T(0))) * scale;
}

}  // namespace moe::train
