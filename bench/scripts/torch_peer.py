"""PyTorch + transformers on the same model directory as model-speed: prefill and decode tokens/s
measured the way model-speed measures them, and its logits next to the ones model-speed
`--parity N --dump-logits DIR` wrote (bench/scripts/gpu-check runs both).

Usage: torch_peer.py MODEL_DIR [--device cuda] [--dtype float32|bfloat16] [--prefill 256]
       [--decode 128] [--batches 1,8,32] [--parity 64] [--logits DIR]

Prompts are model-speed's: token i of prompt `salt` is 1000 + (i*7919 + salt*104729) % 40000;
prefill is the best of 3 passes over 256 tokens; decode runs `batch` 32-token prompts, then
`decode` (batch 1) or `decode/2` (larger batches) greedy steps through the KV cache, timed
after the prompt pass. Prints one JSON object.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def prompt(n: int, salt: int) -> list:
    return [1000 + (i * 7919 + salt * 104729) % 40000 for i in range(n)]


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def prefill(m, dev: str, n: int) -> float:
    ids = torch.tensor([prompt(n, 0)], device=dev)
    best = float("inf")
    for _ in range(3):
        sync(dev)
        t = time.perf_counter()
        m(input_ids=ids, use_cache=True)
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return n / best


@torch.inference_mode()
def decode(m, dev: str, batch: int, steps: int) -> float:
    ids = torch.tensor([prompt(32, b + 1) for b in range(batch)], device=dev)
    out = m(input_ids=ids, use_cache=True)
    pkv, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        out = m(input_ids=nxt, past_key_values=pkv, use_cache=True)
        pkv, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    sync(dev)
    return batch * steps / (time.perf_counter() - t)


@torch.inference_mode()
def parity(m, dev: str, n: int, logits_dir: str) -> dict:
    ours = m(input_ids=torch.tensor([prompt(n, 7)], device=dev)).logits[0].float().cpu().numpy()
    res = {"prompt_tokens": n, "max_abs_logit": float(np.abs(ours).max())}
    for name in sorted(os.listdir(logits_dir)):
        if not (name.startswith("logits-") and name.endswith(".f32")):
            continue
        theirs = np.fromfile(os.path.join(logits_dir, name), dtype="<f4")
        if theirs.size != ours.size:
            res[name] = f"size {theirs.size}, expected {ours.size}"
            continue
        theirs = theirs.reshape(ours.shape)
        res["openledger_" + name[len("logits-"):-len(".f32")]] = {
            "max_abs_diff": float(np.abs(theirs - ours).max()),
            "argmax_agree": int((theirs.argmax(-1) == ours.argmax(-1)).sum()),
            "positions": int(ours.shape[0]),
        }
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prefill", type=int, default=256)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--parity", type=int, default=64)
    ap.add_argument("--logits", default="", help="folder of model-speed's --dump-logits files")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    t = time.perf_counter()
    m = AutoModelForCausalLM.from_pretrained(a.model_dir).to(device=a.device, dtype=dtype).eval()
    sync(a.device)
    out = {
        "system": "pytorch+transformers",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "dtype": a.dtype,
        "attn": getattr(m.config, "_attn_implementation", None),
        "load_s": time.perf_counter() - t,
    }
    if a.logits and a.parity > 0:
        out["parity"] = parity(m, a.device, a.parity, a.logits)
    decode(m, a.device, 1, 8)  # warm-up
    out["prefill_tokens"] = a.prefill
    out["prefill_tok_s"] = prefill(m, a.device, a.prefill)
    for b in [int(x) for x in a.batches.split(",") if x]:
        out[f"decode_b{b}_tok_s"] = decode(m, a.device, b, a.decode if b == 1 else a.decode // 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
