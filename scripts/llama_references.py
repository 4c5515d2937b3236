"""Reference outputs from llama.cpp for the model-runtime tests (see scripts/make-llama-references).

Writes, for the GGUF given:
- tokenization: token ids llama.cpp produces (special tokens parsed, no BOS) for varied strings;
- greedy: for several prompts, llama.cpp's own greedy continuation (CONT tokens, one token per decode
  step) with, at every step, the argmax id, its logit and the margin to the second best
  (decode_positions); and the same figures from one batched teacher-forced pass over prompt +
  continuation (batch_positions).
"""
import json
import sys

import llama_cpp
import numpy as np

CONT = 80

TOKENIZE = [
    "Hello world",
    "  leading spaces and trailing   ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Numbers: 12345 3.14159 -42 1,000,000 0x1F",
    "Unicode: café naïve Ωmega 日本語のテキスト 한국어 emoji 🚀🔥 👩‍👩‍👧",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "fn main() { println!(\"{}\", vec![1, 2, 3].iter().sum::<i32>()); }",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say it's fine, isn't it? We've done what we'd planned.",
    "          ",
    "a" * 50 + " " + "ab" * 20,
    "Mixed\u00a0nbsp and zero\u200bwidth and combining e\u0301",
    "URL https://example.com/path?q=1&x=y#frag and email a.b@c.org",
    "",
]

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a Python function that checks whether a number is prime.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "The history of the printing press begins in",
    "1, 2, 3, 5, 8, 13,",
    "def quicksort(arr):\n",
    "<|im_start|>user\nExplain photosynthesis to a child in three sentences.<|im_end|>\n<|im_start|>assistant\n",
]


def main(model_path, out_path):
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=1024, logits_all=True, n_threads=2, verbose=False, seed=0)
    tok_cases = [{"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)} for t in TOKENIZE]

    greedy = []
    for prompt in PROMPTS:
        ptoks = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        # llama.cpp's own greedy continuation, one token at a time.
        llm.reset()
        llm.eval(ptoks)
        cont = []
        decode_positions = []
        for _ in range(CONT):
            logits = np.array(llm.scores[llm.n_tokens - 1])
            order = np.argsort(-logits)
            nxt = int(order[0])
            cont.append(nxt)
            decode_positions.append({"argmax": nxt, "top1": float(logits[nxt]), "margin": float(logits[nxt] - logits[order[1]])})
            llm.eval([nxt])
        # Teacher-forced pass over prompt + continuation: logits at each predicting position.
        llm.reset()
        llm.eval(ptoks + cont)
        scores = np.array(llm.scores[: llm.n_tokens])
        positions = []
        for i in range(len(cont)):
            row = scores[len(ptoks) - 1 + i]
            order = np.argsort(-row)
            positions.append({
                "argmax": int(order[0]),
                "top1": float(row[order[0]]),
                "margin": float(row[order[0]] - row[order[1]]),
            })
        greedy.append({"prompt": prompt, "prompt_ids": ptoks, "continuation": cont,
                       "decode_positions": decode_positions, "batch_positions": positions,
                       "text": llm.detokenize(cont).decode("utf-8", errors="replace")})
    out = {
        "llama_cpp_python": llama_cpp.__version__,
        "model": model_path.split("/")[-1],
        "tokenize": tok_cases,
        "greedy": greedy,
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
    print(f"wrote {out_path}: {len(tok_cases)} tokenizer cases, {len(greedy)} prompts x {CONT} tokens")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
