// Engine<Config>: the inference core. Every buffer is a fixed-size member, so
// sizeof(Engine<Cfg>) is all the RAM it needs (it can live in static storage on a
// microcontroller); it never allocates and never throws. Weights are views into the
// verified .moe buffer.
//
// A token's path (forward_chunk): embed (x embedding multiplier) -> per layer [norm ->
// q,k,v (+ biases) -> q/k norm -> clip -> rope (llama) -> attention over the KV cache ->
// Wo -> residual (x residual multiplier); norm -> router -> top-k -> experts -> weighted
// sum (+ gated shared expert) or a dense MLP -> residual] -> final norm -> lm_head ->
// logits (/ logits scaling). The optional parts are compiled in only where the config
// has them (ModelConfig's optional fields); the multipliers are constants from the file.
//
// Prefill runs up to `Chunk` tokens through each weight matrix at once, and groups the
// chunk's tokens by expert so each chosen expert's weights are read once per chunk.
// Decode is the same path with one token.
//
// Context: the classic family's learned position table has max_context rows. When it
// is full, the engine re-encodes the most recent max_context tokens from position 0,
// exactly as makeMoE's generate() re-reads idx[:, -block_size:] (a token then costs a
// full window prefill). The llama family stops with ErrorCode::context_full instead:
// RoPE models were not trained past max_context, and a silent shift would change the
// numbers the caller compared against.
//
// Expert capacity (makeMoE; ModelConstants::capacity_factor > 0): in a forward pass over
// a window of T tokens each expert takes at most int(T*k/E*factor) tokens, earliest
// first. That limit grows with T, so appending a token changes earlier tokens' states:
// the KV cache cannot be reused, and every prefill/decode re-encodes the whole window,
// as the reference does. (--capacity-factor 0 at conversion drops the rule; it helps only
// within the first max_context tokens, after which the classic family re-encodes anyway.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "moe/config.hpp"
#include "moe/error.hpp"
#include "moe/fp16.hpp"
#include "moe/kernels/activation.hpp"
#include "moe/kernels/attention.hpp"
#include "moe/kernels/linear.hpp"
#include "moe/kernels/linear_q8.hpp"
#include "moe/kernels/norm.hpp"
#include "moe/kernels/rope.hpp"
#include "moe/kernels/softmax.hpp"
#include "moe/kernels/topk.hpp"
#include "moe/model_file.hpp"
#include "moe/model_layout.hpp"
#include "moe/tensor.hpp"
#include "moe/weight_slots.hpp"
#include "moe/work_split.hpp"

namespace moe {

constexpr int default_prefill_chunk(const ModelConfig& c) { return c.max_context < 16 ? c.max_context : 16; }

// What the KV cache stores: f32, or f16 (half the RAM, the largest buffer at long
// contexts; keys and values rounded to 11 significant bits, judged by agreement with
// f32 in tests/test_quantized.cpp). A build-time choice: it sizes the engine.
enum class KvCache : uint8_t { f32, f16 };

template <ModelConfig C, class K = kernels::Best, int Chunk = default_prefill_chunk(C), KvCache Kv = KvCache::f32>
class Engine {
  static_assert(C.d_model > 0 && C.n_layers > 0 && C.n_heads > 0 && C.n_kv_heads > 0 && C.head_dim > 0 &&
                    C.n_experts > 0 && C.expert_hidden > 0 && C.vocab_size > 0 && C.max_context > 0,
                "every dimension in the config key must be positive");
  static_assert(C.n_heads % C.n_kv_heads == 0,
                "n_heads (-h in the config key) must be a multiple of n_kv_heads (-kv) for grouped-query attention");
  static_assert(C.top_k >= 1 && C.top_k <= C.n_experts, "top_k (-k in the config key) must be in 1..n_experts (-e)");
  static_assert(C.family != Family::classic || C.n_kv_heads == C.n_heads,
                "the classic family uses multi-head attention: set -kv equal to -h in the config key");
  static_assert(C.family != Family::llama || C.head_dim % 2 == 0,
                "RoPE needs an even head_dim (-hd in the config key)");
  static_assert(Chunk >= 1 && Chunk <= C.max_context, "the prefill chunk must be in 1..max_context");

 public:
  static constexpr ModelConfig config = C;
  static constexpr int kChunk = Chunk;
  static constexpr KvCache kKvCache = Kv;

  Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Binds the engine to a verified file. Fails, naming both configs, when the file was
  // converted for another config than this engine was compiled for.
  Error load(const ModelFile& file) {
    loaded_ = false;
    if (!(file.config() == C)) {
      return Error::make(ErrorCode::config_mismatch, "model config %s does not match this engine's compiled config %s",
                         ConfigKey(file.config()).c_str(), ConfigKey(C).c_str());
    }
    bind(file);
    rt_ = file.constants();
    attention_factor_ = attention_factor(C, rt_);
    loaded_ = true;
    reset();
    return Error::none();
  }

  // Splits each weight product of at least `min_macs_per_worker` multiply-adds per
  // worker across these workers from now on, or hands them whole experts where a
  // layer's experts give each worker that much (the Workers must outlive the engine's
  // use of them); Workers{} returns to one core. Results do not change: every output
  // row is computed the same way by whichever thread owns it, and experts' outputs are
  // summed in expert order. The default threshold keeps products too small to repay the
  // hand-over (about a microsecond) on one core.
  void set_workers(const Workers& w, long min_macs_per_worker = 16384) { split_ = WorkSplit{w, min_macs_per_worker}; }

  // Where the target multiplies int8 by int8 (kInt8Dot), int8 matrices quantize their
  // input to int8 (the default: faster, judged by held-out loss like the weights'
  // quantization). Off: they widen their weights to f32 against f32 activations, the
  // numerics of targets without integer dot products (Cortex-M, armv7), so a host can
  // reproduce such a board's tokens exactly (the firmware test does).
  void set_int8_activations(bool on) { int8_activations_ = on; }

  // Forgets the sequence: the next prefill starts at position 0.
  void reset() { pos_ = 0; }

  // Appends tokens to the sequence and computes the logits after the last one.
  // `all_logits` (optional, room for n rows of vocab_size) receives the logits after
  // every token; with a classic model whose window overflows, rows of tokens that fell
  // out of the window are left untouched. On error the sequence is unchanged, except
  // non_finite (a NaN or Inf logit: weights that verify but overflow), which resets it.
  Error prefill(const int32_t* tokens, int n, float* all_logits = nullptr) {
    if (!loaded_) return Error::make(ErrorCode::io, "no model loaded: call load() first");
    if (n <= 0) return Error::make(ErrorCode::bad_token, "prefill needs at least one token");
    for (int i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= V)
        return Error::make(ErrorCode::bad_token, "token id %d at index %d is outside the vocabulary [0, %d)",
                           static_cast<int>(tokens[i]), i, V);
    }
    const bool overflow = pos_ + n > T;
    if (overflow && !C.has_position_table()) {
      return Error::make(ErrorCode::context_full, "context is full: %d cached tokens + %d more exceed max_context %d",
                         pos_, n, T);
    }
    if (!overflow && rt_.capacity_factor == 0.) {  // the usual case: extend the KV cache
      std::memcpy(window_ + pos_, tokens, sizeof(int32_t) * static_cast<size_t>(n));
      run(pos_, n, all_logits, pos_);
      pos_ += n;
      return check_logits();
    }
    // Re-encode the window from position 0, keeping its last `total` tokens of
    // (cached ++ incoming): after a slide of the classic position table, or always under
    // expert capacity (see the top of this file).
    const int total = pos_ + n < T ? pos_ + n : T;
    const int fresh = n < total ? n : total;  // incoming tokens that stay in the window
    const int keep = total - fresh;           // cached tokens that stay
    std::memmove(window_, window_ + (pos_ - keep), sizeof(int32_t) * static_cast<size_t>(keep));
    std::memcpy(window_ + keep, tokens + (n - fresh), sizeof(int32_t) * static_cast<size_t>(fresh));
    run(0, total, all_logits ? all_logits + static_cast<long>(n - fresh) * V : nullptr, keep);
    pos_ = total;
    return check_logits();
  }

  Error decode(int32_t token) { return prefill(&token, 1); }

  const float* logits() const { return logits_; }
  int position() const { return pos_; }  // tokens in the KV cache
  bool loaded() const { return loaded_; }
  const ModelConstants& constants() const { return rt_; }

  static constexpr long active_params() { return active_params_per_token(C); }
  // Bytes of keys and values one cached position holds, all layers and kv heads: what a
  // decoded token's attention reads for each position it sees.
  static constexpr long kv_bytes_per_position() { return 2L * L * KVH * HD * static_cast<long>(sizeof(KvElement)); }

 private:
  static constexpr int D = C.d_model, L = C.n_layers, H = C.n_heads, KVH = C.n_kv_heads, HD = C.head_dim;
  static constexpr int E = C.n_experts, TOPK = C.top_k, F = C.expert_hidden, V = C.vocab_size, T = C.max_context;
  static constexpr int QD = C.q_dim(), KVD = C.kv_dim(), P = Chunk;
  static constexpr bool kClassic = C.family == Family::classic;
  static constexpr int kRopeHalf = kClassic ? 1 : HD / 2;  // arrays of unused parts keep one element
  static constexpr int FF = C.max_ffn_hidden();            // widest FFN hidden layer (expert, shared, dense)
  static constexpr bool kSharedExpert = C.has_shared_expert();
  static constexpr int kUpRows = C.gated_experts() ? FF : 1;
  using KvElement = std::conditional_t<Kv == KvCache::f16, uint16_t, float>;  // f16 as its bits

  using ExpertWeights = ExpertSlots<Matrix, Vector>;
  struct LayerWeights : LayerSlots<Matrix, Vector> {
    ExpertWeights experts[E];
  };
  struct Weights : GlobalSlots<Matrix, Vector> {
    LayerWeights layers[L];
  };

  // File tensors in canonical order -> views. ModelFile::open checked every one.
  void bind(const ModelFile& file) {
    int at = 0;
    for_each_tensor_spec(C, [&](const TensorSpec& s) {
      with_weight_slot(w_, s, [&](auto& slot) {
        if constexpr (std::is_same_v<std::remove_reference_t<decltype(slot)>, Matrix>) slot = file.matrix(at);
        else slot = file.vector(at);
      });
      ++at;
    });
  }

  // Sampling from a NaN or Inf would print noise forever: one pass over the vocabulary
  // turns it into an error instead.
  Error check_logits() {
    for (int i = 0; i < V; ++i) {
      if (!(logits_[i] - logits_[i] == 0.f)) {  // false for NaN and +-Inf alike
        const float bad = logits_[i];
        reset();
        return Error::make(
            ErrorCode::non_finite,
            "the model computed a non-finite logit (%g for token %d): its weights are damaged or out of range",
            static_cast<double>(bad), i);
      }
    }
    return Error::none();
  }

  // Runs window_[first, first+count) at positions first.. through the model, chunk by
  // chunk. Logits of positions >= logits_from go to out (row = position - logits_from).
  void run(int first, int count, float* out, int logits_from) {
    if (first == 0) start_window(count);
    const int end = first + count;
    for (int p0 = first; p0 < end; p0 += P) {
      const int n = end - p0 < P ? end - p0 : P;
      forward_chunk(p0, n);
      if (out != nullptr && p0 + n > logits_from) {
        const int t0 = logits_from > p0 ? logits_from - p0 : 0;
        output_head(t0, n - t0, out + static_cast<long>(p0 + t0 - logits_from) * V);
      }
    }
    if (out != nullptr) {
      std::memcpy(logits_, out + static_cast<long>(end - 1 - logits_from) * V, sizeof logits_);
    } else {
      const int last = (end - 1 - first) % P;  // row of the final token in the last chunk
      output_head(last, 1, logits_);
    }
  }

  // A forward pass over a fresh window of `length` tokens begins: set the experts'
  // capacity for it (makeMoE: int(B*T*k/E * factor) with B = 1, in double precision as
  // Python computes it) and empty their loads.
  void start_window(int length) {
    if (rt_.capacity_factor == 0.) return;
    // Clamped to the window's routed choices (what any larger capacity admits anyway)
    // before the cast: a huge factor from a file must not overflow int.
    const double capacity = static_cast<double>(length * TOPK) / E * rt_.capacity_factor;
    capacity_ = capacity >= static_cast<double>(length * TOPK) ? length * TOPK : static_cast<int>(capacity);
    for (int l = 0; l < L; ++l)
      for (int e = 0; e < E; ++e) expert_load_[l][e] = 0;
  }

  void forward_chunk(int p0, int n) {
    for (int t = 0; t < n; ++t) {
      dequantize_row(w_.token_embedding, window_[p0 + t], x_[t]);
      if (rt_.embedding_multiplier != 1.f) kernels::scale(x_[t], rt_.embedding_multiplier, D);
      if constexpr (kClassic) {
        dequantize_row(w_.position_embedding, p0 + t, xn_[t]);
        kernels::add(x_[t], xn_[t], D);
      } else {
        kernels::rope_angles(p0 + t, HD, rt_.rope_theta, rope_cos_[t], rope_sin_[t]);
      }
    }
    for (int l = 0; l < L; ++l) {
      attention_block(l, p0, n);
      if (C.is_dense_layer(l)) dense_block(l, n);
      else moe_block(l, n);
    }
  }

  void run_products(Products& p, bool may_split = true) {
    moe::run_products<K>(split_, p, int8_activations_, may_split);
  }
  void linear(const Matrix& m, const float* x, int n, float* y) {
    ProductInput in{x, n, m.cols};
    Products p{&in, 1, {&m}, {y}, {}, false, act_q_, act_scale_, act_sum_};
    run_products(p);
  }

  void norm(const Vector& w, const Vector& b, const float* in, float* out) const {
    if constexpr (kClassic) kernels::layernorm(K{}, in, w.data, b.data, D, rt_.norm_eps, out);
    else kernels::rmsnorm(K{}, in, w.data, D, rt_.norm_eps, out);
  }

  void attention_block(int l, int p0, int n) {
    const LayerWeights& lw = w_.layers[l];
    for (int t = 0; t < n; ++t) norm(lw.attn_norm, lw.attn_norm_bias, x_[t], xn_[t]);
    // The chunk's keys wait in attn_ (QD >= KVD; the heads write it later), its values
    // in new_values_, until they go to the cache.
    float* const new_keys = attn_[0];  // n rows of KVD floats: a product's output is row-major
    ProductInput in{xn_[0], n, D};
    Products qkv{&in,        3,       {&lw.wq, &lw.wk, &lw.wv}, {q_[0], new_keys, new_values_[0]}, {}, false, act_q_,
                 act_scale_, act_sum_};
    run_products(qkv);
    // Each kv head's positions are contiguous in the cache: attention walks one stream per
    // head (bench_kernels' BM_attention; rows interleaving the kv heads made it strided).
    for (int t = 0; t < n; ++t) {
      float* keys = new_keys + static_cast<long>(t) * KVD;
      if constexpr (C.qkv_bias) {
        kernels::add(q_[t], lw.wq_bias.data, QD);
        kernels::add(keys, lw.wk_bias.data, KVD);
        kernels::add(new_values_[t], lw.wv_bias.data, KVD);
      }
      if constexpr (C.qk_norm == QkNorm::whole) {  // over all heads at once (OLMoE)
        kernels::rmsnorm(K{}, q_[t], lw.q_norm.data, QD, rt_.norm_eps, q_[t]);
        kernels::rmsnorm(K{}, keys, lw.k_norm.data, KVD, rt_.norm_eps, keys);
      } else if constexpr (C.qk_norm == QkNorm::per_head) {  // each head, one shared weight (Qwen3)
        for (int h = 0; h < H; ++h)
          kernels::rmsnorm(K{}, q_[t] + h * HD, lw.q_norm.data, HD, rt_.norm_eps, q_[t] + h * HD);
        for (int h = 0; h < KVH; ++h)
          kernels::rmsnorm(K{}, keys + h * HD, lw.k_norm.data, HD, rt_.norm_eps, keys + h * HD);
      }
      if (rt_.clip_qkv > 0.f) {
        kernels::clamp(q_[t], rt_.clip_qkv, QD);
        kernels::clamp(keys, rt_.clip_qkv, KVD);
        kernels::clamp(new_values_[t], rt_.clip_qkv, KVD);
      }
      if constexpr (!kClassic) {
        kernels::rope(K{}, q_[t], H, HD, rope_cos_[t], rope_sin_[t]);
        kernels::rope(K{}, keys, KVH, HD, rope_cos_[t], rope_sin_[t]);
      }
      for (int kv = 0; kv < KVH; ++kv) {
        store_kv(key_cache_[l][kv][p0 + t], keys + kv * HD);
        store_kv(value_cache_[l][kv][p0 + t], new_values_[t] + kv * HD);
      }
    }
    // Heads are independent: with workers, each takes a share of them. Each multiply-add
    // reads a cached element, so it weighs sizeof(KvElement) units of the split rule (an
    // int8 weight's multiply-add, one byte; bench/README.md, "Design decisions").
    Heads heads{this, l, p0, n};
    split_.share(&Engine::heads_part, &heads, int64_t{2} * H * HD * n * (p0 + n) * int64_t{sizeof(KvElement)});
    linear(lw.wo, attn_[0], n, delta_[0]);
    for (int t = 0; t < n; ++t) {
      if constexpr (kClassic) kernels::add(delta_[t], lw.wo_bias.data, D);
    }
    add_residual(n);
  }

  // x += delta, or x += delta * residual_multiplier (Granite), for the chunk's n tokens.
  void add_residual(int n) {
    const float m = rt_.residual_multiplier;
    for (int t = 0; t < n; ++t) {
      if (m == 1.f) kernels::add(x_[t], delta_[t], D);
      else kernels::axpy(x_[t], m, delta_[t], D);
    }
  }

  // A dense MLP layer (Qwen-MoE's mlp_only_layers): every token through one SwiGLU MLP.
  void dense_block(int l, int n) {
    const LayerWeights& lw = w_.layers[l];
    for (int t = 0; t < n; ++t) norm(lw.ffn_norm, lw.ffn_norm_bias, x_[t], xn_[t]);
    expert_ffn(lw.dense, xn_[0], n, hidden_[0], up_[0], delta_[0], act_q_, act_scale_, act_sum_, true);
    add_residual(n);
  }

  static void store_kv(KvElement* to, const float* from) {
    if constexpr (Kv == KvCache::f32) std::memcpy(to, from, sizeof(float) * HD);
    else
      for (int i = 0; i < HD; ++i) to[i] = float_to_half(from[i]);
  }

  struct Heads {
    Engine* engine;
    int l, p0, n;
  };
  // Token t sees positions [0, p0 + t]: causal within the chunk. Each head has its own
  // scores scratch, so workers can take heads side by side: whole kv heads, each with
  // the query heads that read it (its cache read once for all of them), where the parts
  // divide the kv heads; else query heads one by one. A decode token's kv heads go to
  // attention_kv_heads together (with AVX2 it reads their caches side by side). A
  // chunk's tokens go kAttentionTokens at a time, each pass over the cache serving all of
  // them; the later passes find the cache where the first left it, in the caches
  // (from_memory: t == 0).
  static void heads_part(void* ctx, int part, int parts) {
    const Heads& a = *static_cast<const Heads*>(ctx);
    Engine& e = *a.engine;
    constexpr int group = H / KVH;
    const bool whole_kv = KVH % parts == 0;
    const int units = whole_kv ? KVH : H, size = whole_kv ? group : 1;  // a unit: `size` query heads
    // Decode: the part's kv heads at once.
    if (a.n == 1 && whole_kv) {
      const int kv0 = KVH * part / parts, kv1 = KVH * (part + 1) / parts;
      kernels::attention_kv_heads(K{}, kv1 - kv0, group, e.q_[0] + kv0 * group * HD, e.key_cache_[a.l][kv0][0],
                                  e.value_cache_[a.l][kv0][0], long{T} * HD, a.p0 + 1, HD, e.attention_factor_,
                                  e.scores_[kv0 * group * kScoresRows], T, long{group} * kScoresRows * T,
                                  e.attn_[0] + kv0 * group * HD);
      return;
    }
    for (int u = units * part / parts; u < units * (part + 1) / parts; ++u) {
      const int h = u * size, kv = h / group;
      for (int t = 0; t < a.n; t += kAttentionTokens)
        kernels::attention_chunk(K{}, e.q_[t] + h * HD, QD, std::min(kAttentionTokens, a.n - t), size,
                                 e.key_cache_[a.l][kv][0], e.value_cache_[a.l][kv][0], a.p0 + t + 1, HD,
                                 e.attention_factor_, e.scores_[h * kScoresRows], T, e.attn_[t] + h * HD, QD, t == 0);
    }
  }

  void moe_block(int l, int n) {
    const LayerWeights& lw = w_.layers[l];
    for (int t = 0; t < n; ++t) norm(lw.ffn_norm, lw.ffn_norm_bias, x_[t], xn_[t]);

    // Route: each token picks top_k experts, weighted by a softmax over the k logits
    // or by their probabilities under a softmax over all experts (RouterWeights).
    linear(lw.router, xn_[0], n, router_logits_[0]);
    for (int e = 0; e < E; ++e) expert_count_[e] = 0;
    for (int t = 0; t < n; ++t) {
      if constexpr (kClassic) kernels::add(router_logits_[t], lw.router_bias.data, E);
      int chosen[TOPK];
      float gate[TOPK];
      kernels::topk(K{}, router_logits_[t], E, TOPK, chosen, gate);
      if (rt_.router_weights == RouterWeights::topk_softmax) {
        kernels::softmax(K{}, gate, TOPK);
      } else {
        kernels::softmax(K{}, router_logits_[t], E);
        for (int j = 0; j < TOPK; ++j) gate[j] = router_logits_[t][chosen[j]];
      }
      for (int j = 0; j < TOPK; ++j) {
        const int e = chosen[j];
        // Over capacity: the expert turns the token away; its other experts (and the
        // residual) still carry it, and its gate weights are not renormalised.
        if (rt_.capacity_factor > 0.) {
          if (expert_load_[l][e] >= capacity_) continue;
          ++expert_load_[l][e];
        }
        expert_token_[e][expert_count_[e]] = t;
        expert_gate_[e][expert_count_[e]] = gate[j];
        ++expert_count_[e];
      }
    }

    // Experts in index order (the references' order), each on the tokens routed to it.
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < D; ++i) delta_[t][i] = 0.f;
    if (n == 1 && experts_side_by_side()) {
      // Decode with workers that divide top_k: whole experts (gate, up, down: one
      // hand-over per layer instead of one per product), a part each, claimed by whichever
      // thread is free (a thread another process holds up leaves the rest to the others),
      // each into its own slot; their outputs are summed here in index order, as below.
      SideBySide task{this, &lw, {}, 0};
      for (int e = 0; e < E; ++e)
        if (expert_count_[e] > 0) task.active[task.count++] = e;
      if (task.count > 0) split_.workers.run(split_.workers.pool, &Engine::experts_part, &task, task.count);
      for (int j = 0; j < task.count; ++j) kernels::axpy(delta_[0], expert_gate_[task.active[j]][0], routed_out_[j], D);
    } else if (n > 1 && prefill_experts_side_by_side()) {
      // Prefill with workers: whole experts, a part each (one hand-over per layer, not two
      // per expert), each on its own rows of the routed scratch; the outputs are summed
      // here in index order, as below, so the result does not depend on who ran what.
      PrefillExperts task{this, &lw, {}, {}, 0};
      for (int e = 0, row = 0; e < E; ++e) {
        task.first_row[e] = row;
        row += expert_count_[e];
        if (expert_count_[e] > 0) task.order[task.count++] = e;
      }
      // Largest first (stable): the threads claim them in that order, each taking the
      // next when it is free, so the shares come out even.
      for (int i = 1; i < task.count; ++i)
        for (int j = i; j > 0 && expert_count_[task.order[j]] > expert_count_[task.order[j - 1]]; --j) {
          const int swap = task.order[j];
          task.order[j] = task.order[j - 1];
          task.order[j - 1] = swap;
        }
      split_.workers.run(split_.workers.pool, &Engine::prefill_experts_part, &task, task.count);
      for (int e = 0; e < E; ++e)
        for (int i = 0; i < expert_count_[e]; ++i)
          kernels::axpy(delta_[expert_token_[e][i]], expert_gate_[e][i], routed_out_[task.first_row[e] + i], D);
    } else {
      for (int e = 0; e < E; ++e) {
        const int m = expert_count_[e];
        if (m == 0) continue;
        for (int i = 0; i < m; ++i) std::memcpy(expert_in_[i], xn_[expert_token_[e][i]], sizeof(float) * D);
        expert_ffn(lw.experts[e], expert_in_[0], m, hidden_[0], up_[0], expert_out_[0], act_q_, act_scale_, act_sum_,
                   true);
        for (int i = 0; i < m; ++i) kernels::axpy(delta_[expert_token_[e][i]], expert_gate_[e][i], expert_out_[i], D);
      }
    }
    if constexpr (kSharedExpert) {
      // Every token, after the routed experts: delta += sigmoid(x . g) * shared(x) (Qwen2-MoE).
      expert_ffn(lw.shared, xn_[0], n, hidden_[0], up_[0], expert_out_[0], act_q_, act_scale_, act_sum_, true);
      linear(lw.shared_gate, xn_[0], n, shared_gate_);
      for (int t = 0; t < n; ++t) kernels::axpy(delta_[t], kernels::sigmoid(shared_gate_[t]), expert_out_[t], D);
    }
    add_residual(n);
  }

  // One hand-over per layer instead of one per product, when the token's experts repay
  // it by the rule a product's split follows (WorkSplit::repays); they cost the same, so
  // workers that divide top_k get even shares (bench/README.md, "Design decisions").
  bool experts_side_by_side() const {
    return split_.workers.threads > 1 && TOPK % split_.workers.threads == 0 && split_.repays(int64_t{TOPK} * 3 * D * F);
  }
  struct SideBySide {
    Engine* engine;
    const LayerWeights* lw;
    int active[TOPK];  // the experts the token chose (fewer under capacity), in index order
    int count;
  };
  static void experts_part(void* ctx, int part, int) {  // part: the task's active expert
    const SideBySide& task = *static_cast<const SideBySide*>(ctx);
    Engine& e = *task.engine;
    e.routed_ffn(task.lw->experts[task.active[part]], e.xn_[0], 1, part);
  }

  // Prefill: as in decode, when the chunk's expert work repays a hand-over per worker
  // (the product rule) and there are experts enough to share (two per worker or more).
  bool prefill_experts_side_by_side() const {
    if (kPrefillRoutedRows == 0 || split_.workers.threads < 2) return false;
    int64_t rows = 0;
    int active = 0;
    for (int e = 0; e < E; ++e) {
      rows += expert_count_[e];
      active += expert_count_[e] > 0;
    }
    return active >= 2 * split_.workers.threads && split_.repays(rows * 3 * D * F);
  }
  struct PrefillExperts {
    Engine* engine;
    const LayerWeights* lw;
    int first_row[E];  // each expert's rows of the routed scratch
    int order[E];      // the active experts, most tokens first
    int count;
  };
  static void prefill_experts_part(void* ctx, int part, int) {  // part: the task's order[part]
    const PrefillExperts& task = *static_cast<const PrefillExperts*>(ctx);
    Engine& en = *task.engine;
    const int e = task.order[part], first = task.first_row[e], m = en.expert_count_[e];
    for (int i = 0; i < m; ++i)
      std::memcpy(en.routed_in_[first + i], en.xn_[en.expert_token_[e][i]], sizeof(float) * D);
    en.routed_ffn(task.lw->experts[e], en.routed_in_[first], m, first);
  }

  // An expert on `m` input rows, into routed rows [first, first + m) of the scratch, on
  // this core (its products are not split again).
  void routed_ffn(const ExpertWeights& ew, const float* in_rows, int m, int first) {
    expert_ffn(ew, in_rows, m, routed_hidden_[first], routed_up_[first], routed_out_[first], routed_act_q_[first],
               routed_act_scale_[first], routed_act_sum_[first], false);
  }

  // out [m, D] = expert(in [m, D]), with the given scratch (m rows of its hidden width,
  // at most FF); may_split: its products may be split across the workers. Also the
  // shared expert and a dense layer's MLP, which have the same structure.
  void expert_ffn(const ExpertWeights& ew, const float* in_rows, int m, float* hidden, float* up, float* out,
                  int8_t* act_q, float* act_scale, int32_t* act_sum, bool may_split) {
    const int width = ew.w1.rows;
    ProductInput in{in_rows, m, D};
    if constexpr (kClassic) {
      Products up_proj{&in, 1, {&ew.w1}, {hidden}, {}, false, act_q, act_scale, act_sum};
      run_products(up_proj, may_split);
      for (int i = 0; i < m; ++i) kernels::bias_relu(hidden + static_cast<long>(i) * width, ew.b1.data, width);
    } else {
      Products gate_up{&in, 2, {&ew.w1, &ew.w3}, {hidden, up}, {}, true, act_q, act_scale, act_sum};
      run_products(gate_up, may_split);
    }
    ProductInput mid{hidden, m, width};
    Products down{&mid, 1, {&ew.w2}, {out}, {}, false, act_q, act_scale, act_sum};
    run_products(down, may_split);
    if constexpr (kClassic)
      for (int i = 0; i < m; ++i) kernels::add(out + static_cast<long>(i) * D, ew.b2.data, D);
  }

  // Logits of chunk rows [t0, t0+rows) into out (rows x vocab).
  void output_head(int t0, int rows, float* out) {
    for (int t = t0; t < t0 + rows; ++t) norm(w_.final_norm, w_.final_norm_bias, x_[t], xn_[t]);
    linear(w_.lm_head, xn_[t0], rows, out);
    if constexpr (kClassic)
      for (int r = 0; r < rows; ++r) kernels::add(out + static_cast<long>(r) * V, w_.lm_head_bias.data, V);
    if (rt_.logits_scaling != 1.f) kernels::divide(out, rt_.logits_scaling, rows * V);
  }

  // ---- state ----------------------------------------------------------------------
  Weights w_{};
  ModelConstants rt_{};
  float attention_factor_ = 1.f;  // from rt_.attention_scale
  bool loaded_ = false;
  WorkSplit split_{};
  bool int8_activations_ = true;
  int pos_ = 0;                              // tokens in the cache
  int32_t window_[T] = {};                   // those tokens (the classic family re-encodes them)
  KvElement key_cache_[L][KVH][T][HD] = {};  // roped keys (llama); each kv head's positions contiguous
  KvElement value_cache_[L][KVH][T][HD] = {};

  // Activations of one chunk of up to P tokens.
  float x_[P][D] = {};   // residual stream
  float xn_[P][D] = {};  // normalised input of the current sub-block
  float q_[P][QD] = {};
  float new_values_[P][KVD] = {};  // the chunk's values on their way to the cache
  float attn_[P][QD] = {};  // attention output, before Wo (before that, the chunk's keys on their way to the cache)
  float delta_[P][D] = {};  // what a sub-block adds to the residual
  // Tokens of a chunk that attention_chunk takes at once: as many as fill its passes'
  // (token, query head) pairs with the kv head's query heads. It needs kAttentionPairs
  // rows of scores scratch, so each head has that many: a worker's heads start their
  // rows apart. Bare metal: one token at a time, a row a head (decode's scratch).
#ifdef MOE_BARE_METAL
  static constexpr int kAttentionTokens = 1, kScoresRows = 1;
#else
  static constexpr int kAttentionTokens = std::clamp(kernels::kAttentionPairs / (H / KVH), 1, P);
  static constexpr int kScoresRows = kernels::kAttentionPairs;
#endif
  float scores_[H * kScoresRows][T] = {};  // attention weights
  float rope_cos_[P][kRopeHalf] = {};
  float rope_sin_[P][kRopeHalf] = {};
  float router_logits_[P][E] = {};
  int capacity_ = 0;              // most tokens an expert takes in this window
  int expert_load_[L][E] = {};    // tokens each expert took so far in this window
  int expert_count_[E] = {};      // tokens of the chunk routed to each expert
  int expert_token_[E][P] = {};   // which tokens
  float expert_gate_[E][P] = {};  // with which weight
  float expert_in_[P][D] = {};    // the routed tokens, gathered
  float hidden_[P][FF] = {};
  float up_[P][kUpRows] = {};
  float expert_out_[P][D] = {};
  float shared_gate_[kSharedExpert ? P : 1] = {};  // the shared expert's gate logit per token
  float logits_[V] = {};
  // Experts side by side (experts_side_by_side, prefill_experts_side_by_side): each
  // expert's tokens on their own rows, P * TOPK in all (decode: a row per expert). Bare
  // metal has no workers, so no prefill rows: only decode's TOPK.
#ifdef MOE_BARE_METAL
  static constexpr int kPrefillRoutedRows = 0;
#else
  static constexpr int kPrefillRoutedRows = P * TOPK;
#endif
  static constexpr int kRoutedRows = kPrefillRoutedRows > TOPK ? kPrefillRoutedRows : TOPK;
  float routed_in_[kPrefillRoutedRows > 0 ? kPrefillRoutedRows : 1][D] = {};  // prefill's gathered tokens
  float routed_hidden_[kRoutedRows][F] = {};
  float routed_up_[kRoutedRows][C.gated_experts() ? F : 1] = {};
  float routed_out_[kRoutedRows][D] = {};
  // Quantized activations for the int8 dot-product path (one element when unused), on
  // cache-line boundaries: the kernels' 64-byte loads of them must not straddle lines.
  static constexpr int kMaxCols = D > QD ? (D > FF ? D : FF) : (QD > FF ? QD : FF);
  static constexpr int kActCols = kernels::kInt8Dot ? (kMaxCols + 63) / 64 * 64 : 1;
  alignas(64) int8_t act_q_[P * kActCols] = {};
  float act_scale_[P * kActCols / kernels::kActBlock + 1] = {};
  int32_t act_sum_[P * kActCols / kernels::kActBlock + 1] = {};  // q4 products
  alignas(64) int8_t routed_act_q_[kRoutedRows][kActCols] = {};
  float routed_act_scale_[kRoutedRows][kActCols / kernels::kActBlock + 1] = {};
  int32_t routed_act_sum_[kRoutedRows][kActCols / kernels::kActBlock + 1] = {};
};

}  // namespace moe
