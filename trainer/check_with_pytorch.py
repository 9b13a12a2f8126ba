#!/usr/bin/python3
"""Loads a moe_train checkpoint (makeMoE layout) into PyTorch's own makeMoE model
(bench/pytorch_makemoe.py) and prints its greedy continuation of a prompt, made the
reference's way (re-reading the last block_size tokens every step, router noise off).
Compare with: moe_infer -m <fp32 .moe> -p PROMPT -n N --temp 0 --no-stats

  /usr/bin/python3 trainer/check_with_pytorch.py runs/shakespeare "ROMEO:" 200
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import pytorch_makemoe as mk  # noqa: E402

ckpt, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = json.load(open(os.path.join(ckpt, "config.json")))
chars = json.load(open(os.path.join(ckpt, "tokenizer.json")))["chars"]
mk.block_size, mk.n_embed, mk.n_head, mk.n_layer = cfg["block_size"], cfg["n_embed"], cfg["n_head"], cfg["n_layer"]
mk.num_experts, mk.top_k, mk.capacity_factor = cfg["num_experts"], cfg["top_k"], cfg["capacity_factor"] or 0.0
model = mk.SparseMoELanguageModel(len(chars))


def read_safetensors(path):
    import struct
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[8 + n + b : 8 + n + e]), dtype=torch.float32).reshape(info["shape"])
    return out


state = read_safetensors(os.path.join(ckpt, "model.safetensors"))
missing, unexpected = model.load_state_dict(state, strict=False)
missing = [k for k in missing if not k.endswith(".tril")]
assert not missing and not unexpected, (missing, unexpected)
model.eval()
torch.randn_like = lambda t: torch.zeros_like(t)  # router noise off, as moe_train evaluates and moe_infer runs
stoi = {c: i for i, c in enumerate(chars)}
idx = torch.tensor([[stoi[c] for c in prompt]])
with torch.no_grad():
    for _ in range(n):
        x = idx[:, -mk.block_size :]
        B, T = x.shape
        h = model.token_embedding_table(x) + model.position_embedding_table(torch.arange(T))
        logits = model.lm_head(model.ln_f(model.blocks(h)))[:, -1, :]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
print("".join(chars[i] for i in idx[0].tolist()))
