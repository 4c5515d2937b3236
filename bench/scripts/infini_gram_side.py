"""infini-gram on the very token stream our attribution-speed bench indexed.

Input: a directory holding tokens.bin (u16 LE, each document preceded by 0xFFFF: infini-gram's
tokenized layout), ngrams.jsonl ({"ids", "count"} per line: our counts) and responses.json.
Builds infini-gram's suffix array with its own indexer (the tokenize step is skipped because
tokenized.0 / offset.0 already exist), then times count() on the same n-grams (and checks the
counts are identical) and attribute() (its OLMoTrace span search) on the same 400-token
responses. Prints one JSON object.
"""
import json, os, shutil, statistics, subprocess, sys, time

import numpy as np
from infini_gram.engine import InfiniGramEngine

data = os.path.abspath(sys.argv[1])
ix = os.path.join(data, "ig-index")
shutil.rmtree(ix, ignore_errors=True)
os.makedirs(ix)
os.symlink(os.path.join(data, "tokens.bin"), os.path.join(ix, "tokenized.0"))
tokens = np.fromfile(os.path.join(data, "tokens.bin"), dtype=np.uint16)
starts = np.flatnonzero(tokens == 0xFFFF).astype(np.uint64) * 2
starts.tofile(os.path.join(ix, "offset.0"))
raw = os.path.join(data, "ig-raw")
os.makedirs(raw, exist_ok=True)

t = time.time()
subprocess.run(
    [sys.executable, "-m", "infini_gram.indexing", "--data_dir", raw, "--save_dir", ix,
     "--token_dtype", "u16", "--cpus", str(os.cpu_count()), "--mem", "8",
     "--ulimit", str(__import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1])],
    check=True, stdout=subprocess.DEVNULL,
)
build_s = time.time() - t
size = sum(os.path.getsize(os.path.join(ix, f)) for f in ("table.0", "offset.0"))
size += tokens.nbytes

engine = InfiniGramEngine(index_dir=ix, eos_token_id=0, vocab_size=65535)
ngrams = [json.loads(l) for l in open(os.path.join(data, "ngrams.jsonl"))]
lat, mismatches = [], 0
for q in ngrams:
    t = time.perf_counter()
    c = engine.count(input_ids=q["ids"])["count"]
    lat.append((time.perf_counter() - t) * 1e6)
    mismatches += c != q["count"]
lat.sort()
att = []
for r in json.load(open(os.path.join(data, "responses.json"))):
    t = time.perf_counter()
    engine.attribute(input_ids=r, delim_ids=[], min_len=4, max_cnt=1000, enforce_bow=False)
    att.append((time.perf_counter() - t) * 1e3)
att.sort()
print(json.dumps({
    "bench": "infini-gram",
    "tokens": int((tokens != 0xFFFF).sum()),
    "build_s": round(build_s, 3),
    "bytes_per_token": round(size / int((tokens != 0xFFFF).sum()), 3),
    "count_us_median": round(statistics.median(lat), 3),
    "count_us_p99": round(lat[int(0.99 * (len(lat) - 1))], 3),
    "ngrams": len(ngrams),
    "count_mismatches": mismatches,
    "attribute_400_ms_median": round(statistics.median(att), 3),
    "attribute_400_ms_p90": round(att[int(0.9 * (len(att) - 1))], 3),
}))
