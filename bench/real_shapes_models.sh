# shellcheck shell=bash
# Shared by real_shapes.sh and vs_llama_cpp.sh (sourced): the real shapes' config keys
# (tests/fixtures/real_shapes.json), their Hub model types, the recipes' converter flags,
# and the shapes' random checkpoint.
declare -A keys=(
  [granite-1b-a400m]=llama-d1024-l24-h16-kv8-hd64-e32-k8-f512-v49155-c4096
  [olmoe-1b-7b]=llama-d2048-l16-h16-kv16-hd128-e64-k8-f1024-v50304-c4096-qkw
)
declare -A types=([granite-1b-a400m]=granitemoe [olmoe-1b-7b]=olmoe)
# moe_convert's flags for each recipe the scripts name (default: int4 experts, int8
# attention and embeddings; int4: all of them int4; previous: the default before issue 20).
# shellcheck disable=SC2034 # read by the scripts that source this file
declare -A recipe_flags=([default]="" [int4]="--attention int4 --embeddings int4"
                         [int8]="--experts int8 --attention int8 --embeddings int8"
                         [previous]="--experts int8 --attention fp16 --embeddings fp16")
# random_checkpoint BIN_DIR MODEL OUT_DIR: MODEL's deterministic bf16 checkpoint in the
# Hub's sharded layout at OUT_DIR/MODEL (moe_random_checkpoint of BIN_DIR), unless there.
random_checkpoint() {
  [ -d "$3/$2" ] || /usr/bin/time -v "$1/converter/moe_random_checkpoint" --model-type "${types[$2]}" --dtype bf16 \
    --shard-mb 4000 --config "${keys[$2]}" --out "$3/$2" > "$3/$2.generate.log" 2>&1
}
