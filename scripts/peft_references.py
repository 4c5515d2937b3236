"""Reference files for the PEFT tests (see scripts/make-peft-references).

1. Builds a tiny random Llama with transformers and saves it (config.json + model.safetensors).
2. Makes two LoRA adapters with peft (random A and B so they matter; one with rsLoRA) and saves them.
3. Loads the adapter written by our runtime (ours_adapter/, made by `cargo run --example write_peft_adapter`)
   into peft: this is the "ours loads in PEFT" direction.
4. Records logits of a fixed token sequence: base, each peft adapter, and our adapter as peft computes it.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
    tie_word_embeddings=False, torch_dtype="float32",
)
base_dir = os.path.join(out, "tiny_llama")
if not os.path.exists(os.path.join(base_dir, "model.safetensors")):
    model = LlamaForCausalLM(cfg).eval()
    # Larger-than-default weights so every layer visibly moves the logits.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.08)
    model.save_pretrained(base_dir, safe_serialization=True)
base = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32).eval()
tokens = torch.tensor([[1, 17, 200, 45, 3, 99, 128, 255, 0, 64, 7, 31, 150, 12]])

def logits(m):
    with torch.no_grad():
        return m(tokens).logits[0].tolist()

ref = {"tokens": tokens[0].tolist(), "base": logits(base), "adapters": {}}
specs = {
    "peft_all_targets": dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    "peft_rslora": dict(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
}
for seed, (name, spec) in enumerate(specs.items()):
    torch.manual_seed(100 + seed)
    m = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    pm = get_peft_model(m, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, init_lora_weights=False, **spec)).eval()
    pm.save_pretrained(os.path.join(out, name))
    ref["adapters"][name] = logits(pm)

ours = os.path.join(out, "ours_adapter")
if os.path.exists(os.path.join(ours, "adapter_config.json")):
    m = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    pm = PeftModel.from_pretrained(m, ours).eval()
    ref["adapters"]["ours_adapter"] = logits(pm)
else:
    sys.exit("ours_adapter/ is missing: run `cargo run -p openledger-model --example write_peft_adapter` first")

with open(os.path.join(out, "peft_reference.json"), "w") as f:
    json.dump(ref, f)
print("wrote", os.path.join(out, "peft_reference.json"), "adapters:", list(ref["adapters"]))
