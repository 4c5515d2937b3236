"""Writes a randomly initialised Llama model with SmolLM2-135M's shape as a Hugging Face directory
(config.json + model.safetensors, f32), for benchmarks that cannot carry the real weights.

Usage: make_random_llama.py OUT_DIR [--seed N] [--layers N]

Weights are drawn with numpy's PCG64 from the seed (normal, std 0.02 as transformers' Llama init;
norms are 1), so the same seed gives the same bytes on every machine and numpy version since 1.17.
Embeddings are tied (no lm_head.weight), as in SmolLM2. Needs numpy and safetensors only.
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

# SmolLM2-135M-Instruct's config.json (HuggingFaceTB), the fields a Llama loader reads.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=CONFIG["num_hidden_layers"])
    a = ap.parse_args()
    cfg = dict(CONFIG, num_hidden_layers=a.layers)
    rng = np.random.Generator(np.random.PCG64(a.seed))
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]

    def w(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02))

    t = {"model.embed_tokens.weight": w(v, h), "model.norm.weight": np.ones(h, np.float32)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        t[p + "self_attn.q_proj.weight"] = w(q, h)
        t[p + "self_attn.k_proj.weight"] = w(kv, h)
        t[p + "self_attn.v_proj.weight"] = w(kv, h)
        t[p + "self_attn.o_proj.weight"] = w(h, q)
        t[p + "mlp.gate_proj.weight"] = w(f, h)
        t[p + "mlp.up_proj.weight"] = w(f, h)
        t[p + "mlp.down_proj.weight"] = w(h, f)
    os.makedirs(a.out_dir, exist_ok=True)
    save_file(t, os.path.join(a.out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    n = sum(x.size for x in t.values())
    print(f"make_random_llama: {n / 1e6:.1f}M parameters (seed {a.seed}) -> {a.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
