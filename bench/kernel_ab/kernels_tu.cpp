// One build of the decode and prefill kernels behind a plain-C entry point. kernel_ab.sh
// compiles it twice, from two versions of engine/moe, the old one with `-Dmoe=moe_old` so
// both fit in one program; MOE_AB_FN names the entry point.
#include <cstdlib>

#include "moe/kernels/attention.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q8.hpp"
#if __has_include("moe/kernels/linear_q4.hpp")
#include "moe/kernels/linear_q4.hpp"
#define MOE_AB_Q4 1
#endif

// y = W x for n tokens (x [n, cols], y [n, rows]): dtype 0 f32, 1 f16 (x), 2 int8
// weights against int8 activations (xq, xs) where the target multiplies int8 by int8,
// else widened against x; 3 q4 weights, x quantized here as the engine does (a version
// without q4 exits).
void MOE_AB_FN(const void* w, const float* scales, int dtype, int rows, int cols, int n, const float* x,
               const int8_t* xq, const float* xs, float* y) {
  if (dtype == 3) {
#ifdef MOE_AB_Q4
    constexpr int kMaxValues = 64 * 8192;
    alignas(64) static int8_t q[kMaxValues];
    static float q_scales[kMaxValues / 32];
    static int32_t q_sums[kMaxValues / 32];
    if (static_cast<long>(n) * cols > kMaxValues) std::abort();
    moe::kernels::quantize_activations_q4(moe::kernels::Simd{}, x, n, cols, q, q_scales, q_sums);
    moe::Matrix m{w, nullptr, moe::DType::q4, rows, cols, moe::kQ4Block};
    moe::kernels::linear_q4(moe::kernels::Simd{}, m, moe::kernels::ActQ4{q, q_scales, q_sums}, n, y);
    return;
#else
    std::abort();
#endif
  }
  const moe::Matrix m{w, scales, static_cast<moe::DType>(dtype), rows, cols, cols};
  if (dtype == 2 && moe::kernels::kInt8Dot) moe::kernels::linear_q8(moe::kernels::Simd{}, m, xq, xs, n, y);
  else moe::kernels::linear(moe::kernels::Simd{}, m, x, n, y);
}

// The attention of a chunk's last `chunk` tokens (1: a decode token) over the KV cache: L
// layers of kv_heads kv heads, each read by `group` query heads; token i of the chunk sees
// n_pos - chunk + 1 + i positions. Each kv head's cache holds `context` positions (as the
// engine's: its positions contiguous, the next kv head's a context further on). q and out
// hold a token's heads one after another, the tokens one after another; scores, a kv
// head's rows (chunk x group of n_pos each). As the engine's heads run: a decode token
// through attention_kv_heads where the version has it (its kv heads side by side); else
// the chunk's tokens in passes over the cache where the version has attention_chunk, else
// token by token, each token's group in one pass where it has attention_group, else head
// by head; a chunk's first token from memory.
namespace {
template <class K>  // a template, so that older versions compile too
void kv_head(K k, const float* q, long q_stride, int chunk, int group, const float* keys, const float* values,
             int n_pos, int head_dim, float* scores, float* out) {
  const int first = n_pos - chunk + 1;
  if constexpr (requires {
                  attention_chunk(k, q, 0L, chunk, group, keys, values, n_pos, head_dim, 0.f, scores, 0L, out, 0L,
                                  true);
                })
    attention_chunk(k, q, q_stride, chunk, group, keys, values, first, head_dim, 0.125f, scores,
                    static_cast<long>(n_pos), out, q_stride, true);
  else
    for (int t = 0; t < chunk; ++t) {
      const float* qt = q + t * q_stride;
      float* ot = out + t * q_stride;
      if constexpr (requires { attention_group(k, q, group, keys, values, n_pos, head_dim, 0.f, scores, 0L, out); })
        attention_group(k, qt, group, keys, values, first + t, head_dim, 0.125f, scores, static_cast<long>(n_pos), ot,
                        t == 0);
      else
        for (int g = 0; g < group; ++g)
          attention(k, qt + g * head_dim, keys, values, first + t, head_dim, 0.125f,
                    scores + static_cast<long>(g) * n_pos, ot + g * head_dim);
    }
}
// A layer's decode token over all its kv heads at once; false where the version has no
// attention_kv_heads.
template <class K>
bool kv_heads(K k, const float* q, int kv_heads, int group, const float* keys, const float* values, long kv_stride,
              int n_pos, int head_dim, float* scores, float* out) {
  if constexpr (requires {
                  attention_kv_heads(k, kv_heads, group, q, keys, values, kv_stride, n_pos, head_dim, 0.f, scores, 0L,
                                     0L, out);
                }) {
    attention_kv_heads(k, kv_heads, group, q, keys, values, kv_stride, n_pos, head_dim, 0.125f, scores,
                       static_cast<long>(n_pos), static_cast<long>(group) * n_pos, out);
    return true;
  } else {
    return false;
  }
}
}  // namespace

void MOE_AB_ATTN_FN(const float* keys, const float* values, const float* q, float* scores, float* out, int L,
                    int kv_heads, int group, int head_dim, int n_pos, int chunk, int context) {
  const long head = static_cast<long>(context) * head_dim, q_stride = static_cast<long>(kv_heads) * group * head_dim;
  for (int l = 0; l < L; ++l) {
    const long layer = static_cast<long>(l) * kv_heads * head;
    if (chunk == 1 && ::kv_heads(moe::kernels::Simd{}, q, kv_heads, group, keys + layer, values + layer, head, n_pos,
                                 head_dim, scores, out))
      continue;
    for (int kv = 0; kv < kv_heads; ++kv) {
      const long at = static_cast<long>(kv) * group * head_dim;
      kv_head(moe::kernels::Simd{}, q + at, q_stride, chunk, group, keys + layer + kv * head,
              values + layer + kv * head, n_pos, head_dim, scores + static_cast<long>(kv) * chunk * group * n_pos,
              out + at);
    }
  }
}
