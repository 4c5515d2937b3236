"""PyTorch + transformers + PEFT side of bench/scripts/factory-vs-peft: LoRA (or QLoRA) training steps on
CPU on the model ModelFactory trains, with the same shapes, data and optimizer settings.

transformers reads the same GGUF (dequantized to f32), PEFT adds rank-R LoRA on q,k,v,o,gate,up,down
(alpha 2R, no dropout), and each step is one batch of BATCH examples of exactly SEQ tokens (the data
file's text rows, tokenized by the GGUF's tokenizer and cut to SEQ, rows that are shorter are refused):
forward with labels (loss on every next token), backward, gradient-norm clip 1.0, AdamW (betas 0.9/0.999,
eps 1e-8, no weight decay) at a constant LR, zero_grad. The first WARMUP steps are not measured.

--qlora: the base's linear layers as bitsandbytes 4-bit (NF4, f32 compute) before PEFT, as PEFT's QLoRA
recipe does (`BitsAndBytesConfig(load_in_4bit=True)` quantizes at load; here the GGUF is dequantized first,
so the layers are swapped for bnb.nn.Linear4bit by hand). Needs a bitsandbytes with CPU support.

Prints one JSON line: per-step seconds, tokens per step, tokens/s over the measured steps, peak RSS
(VmHWM) after loading and at the end, trainable parameters, versions.
"""
import argparse
import json
import os
import sys
import time


def vm_hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--data", required=True, help="JSONL with a text field per line")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qlora", action="store_true")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = os.path.dirname(os.path.abspath(a.model)), os.path.basename(a.model)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.config.use_cache = False
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    extra = {}
    if a.qlora:
        import bitsandbytes as bnb

        extra["bitsandbytes"] = bnb.__version__
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if child_name in targets and isinstance(child, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.float32, quant_type="nf4")
                    q.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4")
                    q = q.to("cpu")  # quantizes
                    setattr(module, child_name, q)
        import gc

        gc.collect()
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    rows = []
    with open(a.data) as fh:
        for n, line in enumerate(fh, 1):
            ids = tok(json.loads(line)["text"]).input_ids[: a.seq]
            if len(ids) < a.seq:
                sys.exit(f"{a.data}:{n}: only {len(ids)} tokens, the benchmark needs rows of at least {a.seq}")
            rows.append(ids)
    if not rows:
        sys.exit(f"{a.data}: no rows")
    hwm_loaded = vm_hwm()

    times, losses = [], []
    for step in range(a.warmup + a.steps):
        batch = [rows[(step * a.batch + i) % len(rows)] for i in range(a.batch)]
        ids = torch.tensor(batch)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if step >= a.warmup:
            times.append(dt)

    tokens = a.batch * a.seq
    print(json.dumps({
        "side": "peft-qlora" if a.qlora else "peft-lora",
        "step_seconds": times,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens * len(times) / sum(times),
        "losses": losses,
        "peak_rss_after_load": hwm_loaded,
        "peak_rss": vm_hwm(),
        "trainable_params": sum(p.numel() for p in params),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, **extra},
    }))


if __name__ == "__main__":
    main()
