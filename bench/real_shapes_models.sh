# shellcheck shell=bash
# Shared by real_shapes.sh and vs_llama_cpp.sh (sourced): the real shapes' config keys
# (tests/fixtures/real_shapes.json), their Hub model types, and their random checkpoint.
declare -A keys=(
  [granite-1b-a400m]=llama-d1024-l24-h16-kv8-hd64-e32-k8-f512-v49155-c4096
  [olmoe-1b-7b]=llama-d2048-l16-h16-kv16-hd128-e64-k8-f1024-v50304-c4096-qkw
)
declare -A types=([granite-1b-a400m]=granitemoe [olmoe-1b-7b]=olmoe)
# random_checkpoint BIN_DIR MODEL OUT_DIR: MODEL's deterministic bf16 checkpoint in the
# Hub's sharded layout at OUT_DIR/MODEL (moe_random_checkpoint of BIN_DIR), unless there.
random_checkpoint() {
  [ -d "$3/$2" ] || /usr/bin/time -v "$1/converter/moe_random_checkpoint" --model-type "${types[$2]}" --dtype bf16 \
    --shard-mb 4000 --config "${keys[$2]}" --out "$3/$2" > "$3/$2.generate.log" 2>&1
}
