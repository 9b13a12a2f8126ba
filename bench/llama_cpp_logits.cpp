// llama.cpp's logits after each prompt token, for bench/vs_llama_cpp.sh's check that the
// GGUF it runs is the model moe_infer runs (moe_infer --logits-out writes the same JSON).
// Built by that script against a llama.cpp checkout outside this tree (libllama's API of
// 2025-02); not part of this project's build.
//   llama_cpp_logits MODEL.gguf ID...   > {"logits": [[...], ...]}
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: llama_cpp_logits MODEL.gguf ID...\n");
    return 2;
  }
  llama_backend_init();
  llama_model* model = llama_model_load_from_file(argv[1], llama_model_default_params());
  if (!model) return 1;
  std::vector<llama_token> ids;
  for (int i = 2; i < argc; ++i) ids.push_back(std::atoi(argv[i]));
  const int n = static_cast<int>(ids.size());
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(n < 64 ? 64 : n);
  llama_context* ctx = llama_init_from_model(model, cp);
  llama_batch batch = llama_batch_init(n, 0, 1);
  for (int t = 0; t < n; ++t) {
    batch.token[t] = ids[t];
    batch.pos[t] = t;
    batch.n_seq_id[t] = 1;
    batch.seq_id[t][0] = 0;
    batch.logits[t] = 1;
  }
  batch.n_tokens = n;
  if (llama_decode(ctx, batch) != 0) return 1;
  const int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  std::printf("{\"logits\": [");
  for (int t = 0; t < n; ++t) {
    const float* row = llama_get_logits_ith(ctx, t);
    for (int v = 0; v < vocab; ++v) std::printf("%s%.7g", v ? "," : t ? ",[" : "[", row[v]);
    std::printf("]");
  }
  std::printf("]}\n");
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
}
