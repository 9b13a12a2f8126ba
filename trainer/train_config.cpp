#include "trainer/train_config.hpp"

#include <cmath>

#include "converter/input_error.hpp"

namespace moe::train {

using nlohmann::json;

std::string TrainConfig::problem() const {
  const ModelConfig& m = model;
  if (m.n_heads > 0 && m.d_model % m.n_heads != 0 && m.family == Family::classic)
    return "d_model " + std::to_string(m.d_model) + " is not divisible by the " + std::to_string(m.n_heads) + " heads";
  if (const char* why = config_problem(m)) return why;
  if (m.has_optional_parts())
    return "the trainer trains the classic and Mixtral structures; q/k norms, q/k/v biases, shared experts and dense "
           "layers (Qwen-MoE, OLMoE) are inference-only";
  if (constants.has_family_constants())
    return "the trainer does not train with Granite's multipliers, clip_qkv or full-softmax router weights";
  if (batch <= 0) return "batch must be positive";
  if (steps < 0) return "steps must be >= 0";
  if (!(dropout >= 0.f && dropout < 1.f)) return "dropout must be in [0, 1)";
  if (!(constants.capacity_factor >= 0.) || !std::isfinite(constants.capacity_factor))
    return "capacity factor must be a finite number >= 0";
  if (!(lr > 0.f) || !std::isfinite(lr)) return "learning rate must be a finite number > 0";
  if (aux_loss == AuxLoss::cv_squared && m.top_k == m.n_experts)
    return "the CV^2 load loss needs top_k < n_experts (with dense gating every expert is always selected)";
  if (eval_interval <= 0 || eval_batches <= 0 || log_interval <= 0 || checkpoint_interval <= 0)
    return "eval/log/checkpoint intervals and eval batches must be positive";
  return "";
}

namespace {
const char* aux_name(AuxLoss a) {
  return a == AuxLoss::none ? "none" : a == AuxLoss::switch_transformer ? "switch" : "cv";
}
AuxLoss aux_from(const std::string& s) {
  if (s == "none") return AuxLoss::none;
  if (s == "switch") return AuxLoss::switch_transformer;
  if (s == "cv") return AuxLoss::cv_squared;
  throw InputError("unknown aux loss '" + s + "' (none, switch, cv)");
}
}  // namespace

json TrainConfig::to_json() const {
  return json{{"model", ConfigKey(model).c_str()},
              {"router_noise", router_noise},
              {"capacity_factor", constants.capacity_factor},
              {"dropout", dropout},
              {"aux_loss", aux_name(aux_loss)},
              {"aux_coef", aux_coef},
              {"z_loss_coef", z_loss_coef},
              {"norm_eps", constants.norm_eps},
              {"rope_theta", constants.rope_theta},
              {"attention_scale", attention_scale_name(constants.attention_scale)},
              {"batch", batch},
              {"steps", steps},
              {"lr", lr},
              {"min_lr", min_lr},
              {"warmup", warmup},
              {"schedule", schedule == Schedule::cosine ? "cosine" : "constant"},
              {"weight_decay", weight_decay},
              {"decay_everything", decay_everything},
              {"beta1", beta1},
              {"beta2", beta2},
              {"adam_eps", adam_eps},
              {"grad_clip", grad_clip},
              {"seed", seed},
              {"eval_interval", eval_interval},
              {"eval_batches", eval_batches},
              {"checkpoint_interval", checkpoint_interval},
              {"log_interval", log_interval}};
}

TrainConfig TrainConfig::from_json(const json& j) {
  try {
    TrainConfig c;
    const std::string key = j.at("model").get<std::string>();
    if (!try_parse_config_key(key.c_str(), c.model)) throw InputError("malformed model key '" + key + "'");
    c.router_noise = j.at("router_noise").get<bool>();
    c.constants.capacity_factor = j.at("capacity_factor").get<double>();
    c.dropout = j.at("dropout").get<float>();
    c.aux_loss = aux_from(j.at("aux_loss").get<std::string>());
    c.aux_coef = j.at("aux_coef").get<float>();
    c.z_loss_coef = j.at("z_loss_coef").get<float>();
    c.constants.norm_eps = j.at("norm_eps").get<float>();
    c.constants.rope_theta = j.at("rope_theta").get<float>();
    const std::string scale = j.at("attention_scale").get<std::string>();
    if (!parse_attention_scale(scale.c_str(), c.constants.attention_scale))
      throw InputError("malformed training config: attention_scale '" + scale + "'");
    c.batch = j.at("batch").get<int>();
    c.steps = j.at("steps").get<int>();
    c.lr = j.at("lr").get<float>();
    c.min_lr = j.at("min_lr").get<float>();
    c.warmup = j.at("warmup").get<int>();
    c.schedule = j.at("schedule").get<std::string>() == "cosine" ? Schedule::cosine : Schedule::constant;
    c.weight_decay = j.at("weight_decay").get<float>();
    c.decay_everything = j.at("decay_everything").get<bool>();
    c.beta1 = j.at("beta1").get<float>();
    c.beta2 = j.at("beta2").get<float>();
    c.adam_eps = j.at("adam_eps").get<float>();
    c.grad_clip = j.at("grad_clip").get<float>();
    c.seed = j.at("seed").get<uint64_t>();
    c.eval_interval = j.at("eval_interval").get<int>();
    c.eval_batches = j.at("eval_batches").get<int>();
    c.checkpoint_interval = j.at("checkpoint_interval").get<int>();
    c.log_interval = j.at("log_interval").get<int>();
    return c;
  } catch (const json::exception& e) {
    throw InputError(std::string("malformed training config: ") + e.what());
  }
}

const char* preset_names() { return "makemoe, quick, tiny, switch, gshard, dense, mixtral"; }

TrainConfig preset(const std::string& name) {
  TrainConfig c;
  // vocab_size is set from the corpus.
  c.model = config_from_key("classic-d128-l8-h8-kv8-hd16-e8-k2-f512-v1-c32");
  // makeMoE's: its Head scales by C**-0.5 (C = n_embed) and SparseMoE has capacity 1.0.
  c.constants.attention_scale = AttentionScaleRule::inv_sqrt_model_dim;
  c.constants.capacity_factor = 1.0;
  if (name == "makemoe") return c;
  if (name == "quick") {
    c.steps = 1500;
    return c;
  }
  if (name == "tiny") {
    c.model = config_from_key("classic-d32-l2-h4-kv4-hd8-e4-k2-f128-v1-c32");
    c.steps = 300;
    c.eval_interval = 100;
    c.eval_batches = 20;
    c.checkpoint_interval = 100;
    return c;
  }
  if (name == "switch") {
    c.model.top_k = 1;
    c.router_noise = false;
    c.constants.capacity_factor = 1.25;
    c.aux_loss = AuxLoss::switch_transformer;
    return c;
  }
  if (name == "gshard") {
    c.router_noise = false;
    c.constants.capacity_factor = 2.0;
    c.aux_loss = AuxLoss::switch_transformer;
    return c;
  }
  if (name == "dense") {
    c.model.top_k = c.model.n_experts;
    c.router_noise = false;
    c.constants.capacity_factor = 0.;
    return c;
  }
  if (name == "mixtral") {
    c.model = config_from_key("llama-d128-l8-h8-kv4-hd16-e8-k2-f512-v1-c32");
    c.constants.attention_scale = AttentionScaleRule::inv_sqrt_head_dim;
    c.router_noise = false;
    c.constants.capacity_factor = 0.;
    c.aux_loss = AuxLoss::switch_transformer;
    return c;
  }
  throw InputError("unknown preset '" + name + "' (" + preset_names() + ")");
}

}  // namespace moe::train
