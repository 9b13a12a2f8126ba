#!/usr/bin/env python3
"""Write a Hub checkpoint of moe_random_checkpoint (bf16 safetensors: granitemoe, olmoe or
mixtral)
as an f16 GGUF for llama.cpp, so that llama.cpp runs the same weights as moe_infer in
bench/vs_llama_cpp.sh (llama-quantize then makes its Q4_0 / Q4_K_M files from it).

  python3 bench/llama_cpp_gguf.py LLAMA_CPP_DIR CHECKPOINT_DIR OUT.gguf

Uses the `gguf` package of the llama.cpp checkout (LLAMA_CPP_DIR/gguf-py) and numpy; no
torch and no tokenizer (the file says tokenizer model "none" with the config's vocab size:
llama-bench feeds token ids). The tensors follow llama.cpp's own converter: Granite's and
Mixtral's q and k rows reordered for its rotary layout, Granite's merged input_linear
split into gate and up, OLMoE's and Mixtral's experts stacked into one tensor per
projection."""
import json
import os
import struct
import sys
import types

import numpy as np

llama_cpp, src, dst = sys.argv[1:4]
try:
    import sentencepiece  # noqa: F401  (gguf imports it for vocabularies this file does not write)
except ImportError:
    sys.modules['sentencepiece'] = types.SimpleNamespace(SentencePieceProcessor=None)
sys.path.insert(0, os.path.join(llama_cpp, 'gguf-py'))
import gguf  # noqa: E402

cfg = json.load(open(os.path.join(src, 'config.json')))
model_type = cfg['model_type']
archs = {'granitemoe': gguf.MODEL_ARCH.GRANITE_MOE, 'olmoe': gguf.MODEL_ARCH.OLMOE, 'mixtral': gguf.MODEL_ARCH.LLAMA}
if model_type not in archs:
    sys.exit(f'llama_cpp_gguf.py: model_type {model_type!r} is not one of {sorted(archs)}')

tensors = {}  # name -> (file, offset of the data, header entry)
for f in sorted(os.listdir(src)):
    if f.endswith('.safetensors'):
        with open(os.path.join(src, f), 'rb') as fh:
            n = struct.unpack('<Q', fh.read(8))[0]
            for name, v in json.loads(fh.read(n)).items():
                if name != '__metadata__':
                    tensors[name] = (os.path.join(src, f), 8 + n, v)


def load(name):
    path, base, v = tensors[name]
    if v['dtype'] != 'BF16':
        sys.exit(f'llama_cpp_gguf.py: {name} is {v["dtype"]}, expected BF16')
    begin, end = v['data_offsets']
    with open(path, 'rb') as fh:
        fh.seek(base + begin)
        bits = np.frombuffer(fh.read(end - begin), dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(v['shape'])


layers, heads, kv_heads = cfg['num_hidden_layers'], cfg['num_attention_heads'], cfg['num_key_value_heads']
w = gguf.GGUFWriter(dst, gguf.MODEL_ARCH_NAMES[archs[model_type]])
w.add_context_length(cfg['max_position_embeddings'])
w.add_embedding_length(cfg['hidden_size'])
w.add_block_count(layers)
w.add_feed_forward_length(cfg['intermediate_size'])
w.add_head_count(heads)
w.add_head_count_kv(kv_heads)
w.add_rope_dimension_count(cfg.get('head_dim') or cfg['hidden_size'] // heads)
w.add_rope_freq_base(cfg.get('rope_theta', 10000.0))
w.add_layer_norm_rms_eps(cfg['rms_norm_eps'])
w.add_expert_count(cfg.get('num_local_experts', cfg.get('num_experts')))
w.add_expert_used_count(cfg['num_experts_per_tok'])
w.add_vocab_size(cfg['vocab_size'])
w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
w.add_tokenizer_model('none')
if model_type == 'granitemoe':
    w.add_attention_scale(cfg['attention_multiplier'])
    w.add_embedding_scale(cfg['embedding_multiplier'])
    w.add_residual_scale(cfg['residual_multiplier'])
    w.add_logit_scale(cfg['logits_scaling'])


def rotary_rows(x, n_head):  # Hub's rotate-half rows to llama.cpp's pairwise layout (its LLaMA rope)
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def put(name, x):  # vectors (norms) stay f32, as llama.cpp's converter keeps them
    w.add_tensor(name, np.ascontiguousarray(x).astype(np.float32 if x.ndim == 1 else np.float16))


put('token_embd.weight', load('model.embed_tokens.weight'))
put('output_norm.weight', load('model.norm.weight'))
put('output.weight', load('lm_head.weight' if 'lm_head.weight' in tensors else 'model.embed_tokens.weight'))
for i in range(layers):
    p = f'model.layers.{i}.'
    put(f'blk.{i}.attn_norm.weight', load(p + 'input_layernorm.weight'))
    put(f'blk.{i}.ffn_norm.weight', load(p + 'post_attention_layernorm.weight'))
    q, k = load(p + 'self_attn.q_proj.weight'), load(p + 'self_attn.k_proj.weight')
    if model_type in ('granitemoe', 'mixtral'):
        q, k = rotary_rows(q, heads), rotary_rows(k, kv_heads)
    put(f'blk.{i}.attn_q.weight', q)
    put(f'blk.{i}.attn_k.weight', k)
    put(f'blk.{i}.attn_v.weight', load(p + 'self_attn.v_proj.weight'))
    put(f'blk.{i}.attn_output.weight', load(p + 'self_attn.o_proj.weight'))
    if model_type == 'granitemoe':
        put(f'blk.{i}.ffn_gate_inp.weight', load(p + 'block_sparse_moe.router.layer.weight'))
        gate_up, f = load(p + 'block_sparse_moe.input_linear.weight'), cfg['intermediate_size']
        put(f'blk.{i}.ffn_gate_exps.weight', gate_up[:, :f, :])
        put(f'blk.{i}.ffn_up_exps.weight', gate_up[:, f:, :])
        put(f'blk.{i}.ffn_down_exps.weight', load(p + 'block_sparse_moe.output_linear.weight'))
    elif model_type == 'mixtral':
        put(f'blk.{i}.ffn_gate_inp.weight', load(p + 'block_sparse_moe.gate.weight'))
        for hub, ours in (('w1', 'ffn_gate_exps'), ('w3', 'ffn_up_exps'), ('w2', 'ffn_down_exps')):
            put(f'blk.{i}.{ours}.weight', np.stack(
                [load(p + f'block_sparse_moe.experts.{e}.{hub}.weight') for e in range(cfg['num_local_experts'])]))
    else:
        put(f'blk.{i}.attn_q_norm.weight', load(p + 'self_attn.q_norm.weight'))
        put(f'blk.{i}.attn_k_norm.weight', load(p + 'self_attn.k_norm.weight'))
        put(f'blk.{i}.ffn_gate_inp.weight', load(p + 'mlp.gate.weight'))
        for hub, ours in (('gate_proj', 'ffn_gate_exps'), ('up_proj', 'ffn_up_exps'), ('down_proj', 'ffn_down_exps')):
            put(f'blk.{i}.{ours}.weight',
                np.stack([load(p + f'mlp.experts.{e}.{hub}.weight') for e in range(cfg['num_experts'])]))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
