"""Hugging Face's side of crates/cli/tests/factory_peft.rs: transformers loads the GGUF the test trained
on (dequantized to f32), PEFT loads the adapter the node served, and both logits go back to the test.

Usage: factory_peft.py MODEL.gguf ADAPTER_DIR TOKENS.json OUT_DIR
Writes OUT_DIR/base.f32 and OUT_DIR/adapter.f32 (row-major [tokens, vocab], little-endian f32) and
prints one JSON line: {"rows", "vocab", "lora_tensors", "versions"}.

Fails (exit 1) when PEFT did not load every tensor of the adapter file bit for bit: PEFT only warns
about keys it cannot place, and an adapter it silently ignored would compare as "the base model".
"""
import json
import os
import sys

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import peft
import transformers


def main():
    gguf, adapter_dir, tokens_path, out = sys.argv[1:5]
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tokens = json.load(open(tokens_path))
    if not tokens or not all(isinstance(t, int) for t in tokens):
        sys.exit(f"{tokens_path}: expected a non-empty JSON list of token ids")
    ids = torch.tensor([tokens])

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf)), gguf_file=os.path.basename(gguf), dtype=torch.float32
    ).eval()
    with torch.no_grad():
        base = model(ids).logits[0].numpy()

    peft_model = PeftModel.from_pretrained(model, adapter_dir).eval()
    # Every tensor of the file must be in the model, unchanged ("...lora_A.weight" is stored as
    # "...lora_A.default.weight"), and the model must hold no LoRA tensor the file did not fill.
    state = peft_model.state_dict()
    loaded = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for key, value in loaded.items():
        name = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight"
        )
        if name not in state:
            sys.exit(f"PEFT has no parameter for the adapter's {key} (looked for {name})")
        if not torch.equal(state[name].to(value.dtype), value):
            sys.exit(f"PEFT's {name} differs from the file's {key}")
    lora_in_model = [k for k in state if ".lora_A." in k or ".lora_B." in k]
    if len(lora_in_model) != len(loaded):
        sys.exit(f"PEFT built {len(lora_in_model)} LoRA tensors, the adapter file has {len(loaded)}")
    with torch.no_grad():
        adapted = peft_model(ids).logits[0].numpy()

    os.makedirs(out, exist_ok=True)
    base.astype("<f4").tofile(os.path.join(out, "base.f32"))
    adapted.astype("<f4").tofile(os.path.join(out, "adapter.f32"))
    print(json.dumps({
        "rows": int(base.shape[0]),
        "vocab": int(base.shape[1]),
        "lora_tensors": len(loaded),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "numpy": np.__version__},
    }))


if __name__ == "__main__":
    main()
