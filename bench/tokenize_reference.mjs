// The reference's encode throughput, for bench/tokenizer_speed.sh: Hugging Face's
// @huggingface/tokenizers (the JavaScript implementation users trust), single thread,
// median of reps after one warm-up.
//   node tokenize_reference.mjs TOKENIZER_DIR TEXT_FILE [REPS]   -> one JSON object
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "node:fs";

const [dir, file, repsArg] = process.argv.slice(2);
const reps = Math.max(1, Number(repsArg ?? 5));
const config = fs.existsSync(`${dir}/tokenizer_config.json`)
  ? JSON.parse(fs.readFileSync(`${dir}/tokenizer_config.json`, "utf8")) : {};
const tok = new Tokenizer(JSON.parse(fs.readFileSync(`${dir}/tokenizer.json`, "utf8")), config);
const text = fs.readFileSync(file, "utf8");
const bytes = Buffer.byteLength(text);
let ids = [];
const times = [];
for (let r = 0; r <= reps; ++r) {
  const t0 = process.hrtime.bigint();
  ids = tok.encode(text, { add_special_tokens: false }).ids;
  if (r > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e9);  // r = 0 warms up
}
// FNV-1a over the ids as 32-bit little-endian words, as bench_tokenize computes it
let h = 0xcbf29ce484222325n;
for (const id of ids) for (let b = 0; b < 4; ++b) h = ((h ^ BigInt((Number(id) >>> (8 * b)) & 255)) * 0x100000001b3n) & 0xffffffffffffffffn;
const tokens = ids.length;
times.sort((a, b) => a - b);
console.log(JSON.stringify({ tokenizer: dir, text_bytes: bytes, tokens, ids_fnv: h.toString(16), encode_mb_s: bytes / times[times.length >> 1] / 1e6 }));
