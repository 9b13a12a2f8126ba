#!/usr/bin/env bash
# Tokenizer encode throughput against the reference, in the same run: moe-edge's BPE
# (bench_tokenize, single thread) and Hugging Face's @huggingface/tokenizers under Node,
# on tiny Shakespeare and on a multilingual text (bench/make_multilingual_text.py), for
# both fixture tokenizers; then the table bytes, the load-time check, and the code the
# tokenizer adds to moe_infer. Needs node and npm (the reference is installed into
# build/bench-node/, outside the sources).
#   bench/tokenizer_speed.sh [REPS]      (after cmake --build --preset release)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
bin=build/release/bench/bench_tokenize
[ -x "$bin" ] || { echo "build first: cmake --build --preset release --target bench_tokenize" >&2; exit 1; }
node_dir=build/bench-node
if [ ! -d "$node_dir/node_modules/@huggingface/tokenizers" ]; then
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm init -y >/dev/null && npm install --silent @huggingface/tokenizers@0.2.0 >/dev/null)
fi
cp bench/tokenize_reference.mjs "$node_dir/"
multi=build/bench-node/multilingual.txt
python3 bench/make_multilingual_text.py "$multi" 1

printf '| tokenizer | text | MB | ours MB/s | reference MB/s | ratio | ids equal |\n|---|---|---:|---:|---:|---:|---|\n'
for tok in mistral qwen3; do
  for text in data/tinyshakespeare.txt "$multi"; do
    ours=$("$bin" "tests/fixtures/tokenizers/$tok" "$text" "$reps")
    ref=$(cd "$node_dir" && node tokenize_reference.mjs "$OLDPWD/tests/fixtures/tokenizers/$tok" "$OLDPWD/$text" "$reps")
    python3 - "$tok" "$text" "$ours" "$ref" <<'PY'
import json, os, sys
tok, text, ours, ref = sys.argv[1], os.path.basename(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
same = "yes" if (ours["tokens"], ours["ids_fnv"]) == (ref["tokens"], ref["ids_fnv"]) else f"NO ({ours['tokens']} vs {ref['tokens']})"
print(f"| {tok} | {text} | {ours['text_bytes'] / 1e6:.2f} | {ours['encode_mb_s']:.1f} | {ref['encode_mb_s']:.2f} | "
      f"{ours['encode_mb_s'] / ref['encode_mb_s']:.1f}x | {same} |")
PY
  done
done

echo
printf '| tokenizer | tables in the .moe | of which Unicode data | load check (CRC on / off) | decode MB/s | encode scratch per input byte | NFC MB/s, ours / utf8proc (multilingual) |\n|---|---:|---:|---:|---:|---:|---:|\n'
for tok in mistral qwen3; do
  ours=$("$bin" "tests/fixtures/tokenizers/$tok" "$multi" "$reps")
  python3 - "$tok" "$ours" <<'PY'
import json, sys
tok, o = sys.argv[1], json.loads(sys.argv[2])
print(f"| {tok} | {o['table_bytes']:,} B | {o['unicode_bytes']:,} B | {o['check_ms']:.2f} / {o['check_ms_no_crc']:.2f} ms | "
      f"{o['decode_mb_s']:.0f} | {o['scratch_bytes'] / o['text_bytes']:.0f} B | " +
      (f"{o['nfc_mb_s']:.0f} / {o['utf8proc_nfc_mb_s']:.0f} |" if o['nfc_mb_s'] else "(no NFC) |"))
PY
done

# The code the tokenizer adds to moe_infer: its functions' sizes (namespace moe::text),
# from the symbol table of the release build.
infer=build/release/tools/moe_infer
strip -o build/bench-node/moe_infer.stripped "$infer"
nm -C --size-sort -S "$infer" | python3 -c '
import sys
size = sum(int(line.split()[1], 16) for line in sys.stdin if "moe::text::" in line)
print(f"tokenizer code in moe_infer (moe::text symbols): {size:,} B")'
echo "moe_infer stripped: $(stat -c %s build/bench-node/moe_infer.stripped) B"
