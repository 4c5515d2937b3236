"""llama.cpp (llama-cpp-python) speed on a GGUF, measured like bench/src/model_speed.rs: prefill tokens/s
(best of 3, one batch), single-stream decode tokens/s, batched decode (B sequences, one token each per
llama_decode call) tokens/s. Same deterministic prompt ids, same thread count. Prints one JSON line."""
import argparse
import ctypes
import json
import time

import llama_cpp
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prefill", type=int, default=256)
p.add_argument("--decode", type=int, default=128)
p.add_argument("--batches", default="1,8,32")
a = p.parse_args()


def prompt(n, salt):
    return [1000 + (i * 7919 + salt * 104729) % 40000 for i in range(n)]


@llama_cpp.llama_log_callback
def _quiet(level, text, user_data):
    pass


llama_cpp.llama_log_set(_quiet, ctypes.c_void_p())
llama_cpp.llama_backend_init()
mparams = llama_cpp.llama_model_default_params()
model = llama_cpp.llama_model_load_from_file(a.model.encode(), mparams)
vocab = llama_cpp.llama_model_get_vocab(model)
n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)


def make_ctx(n_seq, n_ctx):
    c = llama_cpp.llama_context_default_params()
    c.n_ctx = n_ctx
    c.n_batch = max(512, a.prefill, 32 * n_seq)
    c.n_ubatch = c.n_batch
    c.n_seq_max = n_seq
    c.n_threads = a.threads
    c.n_threads_batch = a.threads
    return llama_cpp.llama_init_from_model(model, c)


def decode(ctx, batch, toks_per_seq, pos0, logits_last):
    """One llama_decode over several sequences: toks_per_seq[s] are appended to sequence s."""
    total = sum(len(t) for t in toks_per_seq)
    b = llama_cpp.llama_batch_init(total, 0, 1)
    i = 0
    for s, toks in enumerate(toks_per_seq):
        for j, t in enumerate(toks):
            b.token[i] = t
            b.pos[i] = pos0[s] + j
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = s
            b.logits[i] = 1 if (logits_last and j == len(toks) - 1) else 0
            i += 1
    b.n_tokens = total
    rc = llama_cpp.llama_decode(ctx, b)
    assert rc == 0, f"llama_decode failed: {rc}"
    out = []
    if logits_last:
        idx = -1
        for toks in toks_per_seq:
            idx += len(toks)
            ptr = llama_cpp.llama_get_logits_ith(ctx, idx)
            row = (ctypes.c_float * n_vocab).from_address(ctypes.addressof(ptr.contents))
            out.append(int(np.argmax(np.ctypeslib.as_array(row))))
    llama_cpp.llama_batch_free(b)
    return out


res = {"system": "llama.cpp", "llama_cpp_python": llama_cpp.__version__, "model": a.model, "threads": a.threads,
       "prefill_tokens": a.prefill}
ctx = make_ctx(1, a.prefill + 16)
best = 1e9
for _ in range(3):
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    t = time.perf_counter()
    decode(ctx, 1, [prompt(a.prefill, 0)], [0], True)
    best = min(best, time.perf_counter() - t)
res["prefill_tok_s"] = a.prefill / best
llama_cpp.llama_free(ctx)

for B in [int(x) for x in a.batches.split(",")]:
    steps = a.decode if B == 1 else a.decode // 2
    ctx = make_ctx(B, B * (32 + steps + 16))
    last = decode(ctx, B, [prompt(32, s + 1) for s in range(B)], [0] * B, True)
    pos = [32] * B
    t = time.perf_counter()
    for _ in range(steps):
        last = decode(ctx, B, [[x] for x in last], pos, True)
        pos = [p + 1 for p in pos]
    res[f"decode_b{B}_tok_s"] = B * steps / (time.perf_counter() - t)
    llama_cpp.llama_free(ctx)
print(json.dumps(res))
