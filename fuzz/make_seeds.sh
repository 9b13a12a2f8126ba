#!/usr/bin/env bash
# Writes the fuzz seed corpora (fuzz/corpus/<target>/), small and deterministic, with
# the release build's tools: micro models of the two configs fuzz_model_file compiles
# in (random weights, several recipes, one with a BPE tokenizer: fuzz/seed_tokenizer.json), the same as checkpoint directories for
# fuzz_checkpoint (plus the fixtures' config.json files), and prompts.
#   cmake --preset release && cmake --build --preset release && fuzz/make_seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release/converter
corpus=fuzz/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$corpus" && mkdir -p "$corpus"/{model_file,checkpoint,prompt,tokenizer}
sep=$'\n#moe-fuzz-next-file#\n'

llama=llama-d8-l2-h2-kv1-hd4-e3-k2-f16-v16-c8
classic=classic-d8-l2-h2-kv2-hd4-e3-k2-f16-v16-c8
"$bin/moe_random_checkpoint" --config $llama --out "$work/llama" --seed 1 >/dev/null
"$bin/moe_random_checkpoint" --config $classic --out "$work/classic" --seed 2 --chars "abcdefghijklmn é" >/dev/null

convert() { "$bin/moe_convert" "$work/$1" -o "$corpus/model_file/$2.moe" -q "${@:3}"; }
convert llama llama-f32 --experts fp32 --attention fp32 --embeddings fp32
convert llama llama-default
convert llama llama-int8-g4 --experts int8 --attention int8 --embeddings int8 --group-size 4
# the llama micro model with a small BPE tokenizer (NFC, a Split regex, Digits, byte fallback, added tokens)
mkdir -p "$work/llama-bpe" && cp "$work/llama/"* "$work/llama-bpe/" && cp fuzz/seed_tokenizer.json "$work/llama-bpe/tokenizer.json"
convert llama-bpe llama-bpe
convert classic classic-default
convert classic classic-int8-capacity --experts int8 --attention int8 --embeddings int8 --capacity-factor 1

join() { { cat "$1"; printf '%s' "$sep"; [ -f "$2" ] && cat "$2"; printf '%s' "$sep"; cat "$3"; } > "$4"; }
join "$work/llama/config.json" /nonexistent "$work/llama/model.safetensors" "$corpus/checkpoint/llama"
join "$work/classic/config.json" "$work/classic/tokenizer.json" "$work/classic/model.safetensors" "$corpus/checkpoint/classic"
join tests/fixtures/mixtral-tiny-a/config.json /nonexistent "$work/llama/model.safetensors" "$corpus/checkpoint/mixtral-tiny-a-config"
join tests/fixtures/makemoe-tiny/config.json tests/fixtures/makemoe-tiny/tokenizer.json "$work/classic/model.safetensors" "$corpus/checkpoint/makemoe-tiny-config"

printf 'ROMEO:\nWhat, ho! apothecary!' > "$corpus/prompt/romeo"
printf 'caf\xc3\xa9 \xe2\x82\xac \xe4\xb8\xad \xf0\x9f\x98\x80' > "$corpus/prompt/multibyte"
printf 'bad \xc3( \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf' > "$corpus/prompt/invalid-utf8"
# fuzz_tokenizer: first byte 0 Mistral / 1 Qwen3 encode, 2 / 3 decode of 2-byte ids
printf '\x00Hello  world,\n\tI'"'"'m here \xc3\xa9 \xe4\xb8\xad' > "$corpus/tokenizer/mistral-text"
printf '\x01Hello  world,\n\tI'"'"'M here e\xcc\x81 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd 12345' > "$corpus/tokenizer/qwen3-text"
printf '\x01<|im_start|>user\nhi<|im_end|>' > "$corpus/tokenizer/qwen3-special"
printf '\x02\x00\x01\x6f\x07\x00\xe8\x00\xe9' > "$corpus/tokenizer/mistral-ids"
printf '\x03\x00\xc3\x00\xa7\x25\x81' > "$corpus/tokenizer/qwen3-ids"
du -sh "$corpus"/*
