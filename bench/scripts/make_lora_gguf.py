"""Writes ONE random LoRA adapter for a Llama-family GGUF base model in the two formats the serving
benchmark needs (bench/scripts/serve-vs-llama-cpp):

  OUT/adapter_config.json + OUT/adapter_model.safetensors   PEFT, read by `openledger node`
  OUT/lora.gguf                                            GGUF LoRA, read by llama.cpp (--lora_path)

Both hold the same A and B matrices (f32). A is PEFT's Kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)) and B
is U(-b, b) with b = --b-scale (PEFT would start B at 0; a nonzero B makes the LoRA products change the
output, so both servers really run them).

The GGUF layout follows llama.cpp's convert_lora_to_gguf.py and src/llama-adapter.cpp:
general.type = "adapter", general.architecture = the base's, adapter.type = "lora",
adapter.lora.alpha (f32); per adapted weight `blk.{i}.{attn_q,attn_k,attn_v,attn_output,ffn_gate,
ffn_up,ffn_down}.weight.lora_a` with ggml ne = [in, r] (numpy [r, in], PEFT's lora_A as is) and
`.lora_b` with ne = [r, out] (numpy [out, r], PEFT's lora_B as is); llama.cpp scales by alpha / r.
The rows of q's and k's B are permuted as convert_hf_to_gguf.py permutes q_proj / k_proj for Llama
(GGUF stores them in the interleaved rotary order), so the GGUF file is the PEFT adapter converted.

Needs numpy and the gguf package (scripts/setup-reference-tools puts both in .venv-ref).
Usage: make_lora_gguf.py --model models/X.gguf --out DIR [--rank 8] [--alpha 16] [--seed 0] [--b-scale 0.05]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_lora_gguf.py: the gguf package is missing (run scripts/setup-reference-tools --no-torch)")

# (PEFT module, its parent in the HF layout, llama.cpp tensor stem)
TARGETS = [
    ("q_proj", "self_attn", "attn_q"),
    ("k_proj", "self_attn", "attn_k"),
    ("v_proj", "self_attn", "attn_v"),
    ("o_proj", "self_attn", "attn_output"),
    ("gate_proj", "mlp", "ffn_gate"),
    ("up_proj", "mlp", "ffn_up"),
    ("down_proj", "mlp", "ffn_down"),
]


def field(reader, key):
    f = reader.get_field(key)
    if f is None:
        sys.exit(f"make_lora_gguf.py: the base model has no {key!r}")
    v = f.parts[f.data[0]]
    if f.types and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(v).decode()
    return v.tolist()[0]


def permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF rotary-half row order -> GGUF's interleaved."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_safetensors(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, arr in tensors:
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the base model GGUF")
    p.add_argument("--out", required=True, help="a new or empty directory")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--b-scale", type=float, default=0.05)
    a = p.parse_args()
    if a.rank < 1:
        sys.exit("make_lora_gguf.py: --rank must be at least 1")
    if os.path.isdir(a.out) and os.listdir(a.out):
        sys.exit(f"make_lora_gguf.py: {a.out} is not empty")
    os.makedirs(a.out, exist_ok=True)

    reader = gguf.GGUFReader(a.model)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"make_lora_gguf.py: base architecture is {arch!r}; only llama is handled (q/k permutation)")
    n_layer = field(reader, f"{arch}.block_count")
    n_head = field(reader, f"{arch}.attention.head_count")
    n_head_kv = field(reader, f"{arch}.attention.head_count_kv")
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}  # ggml ne: [in, out]

    rng = np.random.default_rng(a.seed)
    peft_tensors, gguf_tensors = [], []
    for i in range(n_layer):
        for module, parent, stem in TARGETS:
            base = f"blk.{i}.{stem}.weight"
            if base not in shapes:
                sys.exit(f"make_lora_gguf.py: the base model has no tensor {base}")
            n_in, n_out = shapes[base]
            bound = 1.0 / np.sqrt(n_in)
            A = rng.uniform(-bound, bound, size=(a.rank, n_in)).astype(np.float32)
            B = rng.uniform(-a.b_scale, a.b_scale, size=(n_out, a.rank)).astype(np.float32)
            key = f"base_model.model.model.layers.{i}.{parent}.{module}"
            peft_tensors += [(f"{key}.lora_A.weight", A), (f"{key}.lora_B.weight", B)]
            if module == "q_proj":
                B = permute(B, n_head, n_head)
            elif module == "k_proj":
                B = permute(B, n_head, n_head_kv)
            gguf_tensors += [(f"{base}.lora_a", A), (f"{base}.lora_b", np.ascontiguousarray(B))]

    write_safetensors(os.path.join(a.out, "adapter_model.safetensors"), peft_tensors)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": os.path.basename(a.model),
        "r": a.rank,
        "lora_alpha": a.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "target_modules": [m for m, _, _ in TARGETS],
    }
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)

    w = gguf.GGUFWriter(os.path.join(a.out, "lora.gguf"), arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, a.alpha)
    for name, arr in gguf_tensors:
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    n = sum(t.size for _, t in peft_tensors)
    print(json.dumps({"out": a.out, "layers": n_layer, "rank": a.rank, "alpha": a.alpha,
                      "targets": len(TARGETS), "params": int(n), "seed": a.seed, "b_scale": a.b_scale}))


if __name__ == "__main__":
    main()
