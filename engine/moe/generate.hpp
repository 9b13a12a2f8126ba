// The generation loop shared by moe_infer, the firmware example and the tests.
#pragma once

#include "moe/error.hpp"

namespace moe {

// From the engine's current logits, samples up to n_new tokens, feeding each back in.
// on_token(id) is called for every token and returns false to stop early. The last
// sampled token is not fed back (its logits would be unused). Returns the error that
// stopped generation (e.g. context_full for a llama model), if any.
template <class EngineT, class SamplerT, class OnToken>
Error generate(EngineT& engine, SamplerT& sampler, int n_new, OnToken&& on_token) {
  for (int i = 0; i < n_new; ++i) {
    const int32_t id = sampler.sample(engine.logits());
    if (!on_token(id)) break;
    if (i + 1 == n_new) break;
    if (Error e = engine.decode(id)) return e;
  }
  return Error::none();
}

}  // namespace moe
