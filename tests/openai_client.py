"""The real `openai` Python client against a node serving SmolLM2 through OpenLoRA's OpenAI API.

Run by crates/cli/tests/openai_client.rs with the node's base URL, an API key bound to an
account with credit, and the name of an adapter published on chain. Every check raises (non-zero
exit) when it fails; the last line printed is "openai client: all checks passed".
"""

import sys

import openai
from openai import OpenAI

base_url, api_key, adapter = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)

# The base model is listed, and the on-chain adapter with the base model as its parent.
models = client.models.list().data
assert models, "no model listed"
base = [m for m in models if getattr(m, "parent", None) in (None, "")]
assert base, f"no base model among {[m.id for m in models]}"
model = base[0].id
listed = {m.id: m for m in models}
assert adapter in listed and listed[adapter].parent == model, f"{adapter} not listed under {model}"
print("model:", model, "adapter:", adapter)

messages = [{"role": "user", "content": "Name one colour of the rainbow."}]

# Non-streaming chat, greedy: text, a finish reason and usage.
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
text = chat.choices[0].message.content
assert chat.choices[0].message.role == "assistant"
assert text, "empty answer"
assert chat.choices[0].finish_reason in ("stop", "length"), chat.choices[0].finish_reason
assert chat.usage.prompt_tokens > 0 and 0 < chat.usage.completion_tokens <= 12, chat.usage
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
print("chat:", repr(text), chat.usage)

# Streaming the same greedy request gives the same text; include_usage adds a usage chunk.
pieces, usage = [], None
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    max_tokens=12,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta and c.delta.content:
            pieces.append(c.delta.content)
assert "".join(pieces) == text, f"streamed {''.join(pieces)!r} != {text!r}"
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage
print("stream: same text in", len(pieces), "chunks")

# logprobs: one entry per token with its 3 most likely alternatives; greedy picks the first.
lp = client.chat.completions.create(
    model=model, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
)
content = lp.choices[0].logprobs.content
assert content and len(content) == lp.usage.completion_tokens, lp.choices[0].logprobs
assert "".join(t.token for t in content) == lp.choices[0].message.content, content
for t in content:
    assert t.logprob <= 0 and len(t.top_logprobs) == 3, t
    assert t.token == t.top_logprobs[0].token and bytes(t.bytes).decode() == t.token, t
print("logprobs:", [(t.token, round(t.logprob, 3)) for t in content])

# Plain completions, n = 2 with a seed.
comp = client.completions.create(model=model, prompt="def fib(n):", max_tokens=8, temperature=0)
assert comp.choices[0].text, "empty completion"
two = client.completions.create(
    model=model, prompt="The bees", max_tokens=6, temperature=0.8, n=2, seed=7
)
assert len(two.choices) == 2 and sorted(c.index for c in two.choices) == [0, 1]
print("completions:", repr(comp.choices[0].text))

# OpenAI's errors: an unknown model is 404, a bad parameter 400.
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    print("unknown model:", e.status_code)
try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=-1)
    raise AssertionError("temperature -1 was accepted")
except openai.BadRequestError as e:
    assert "temperature" in str(e), str(e)
    print("bad parameter:", e.status_code)

# The on-chain adapter, paid with the API key: the answer carries its attribution and receipt
# (extra fields, kept by the client), whole and in the last streamed chunk.
paid = client.chat.completions.create(model=adapter, messages=messages, max_tokens=12, temperature=0)
extra = paid.model_extra or {}
assert "attribution" in extra, f"no attribution in {paid}"
receipt = extra["attribution"]["receipt"]
assert receipt["completion_tokens"] == paid.usage.completion_tokens, receipt
print("paid chat:", repr(paid.choices[0].message.content), "receipt", receipt["request_id"][:12])
last = None
for chunk in client.chat.completions.create(
    model=adapter, messages=messages, max_tokens=12, temperature=0, stream=True
):
    last = chunk
assert last is not None and "attribution" in (last.model_extra or {}), f"last chunk {last}"
print("paid stream: attribution in the last chunk")

# A key the node does not know is 401; the same request without payment is refused.
stranger = OpenAI(base_url=base_url, api_key="olk_" + "0" * 64, max_retries=0, timeout=60)
try:
    stranger.chat.completions.create(model=adapter, messages=messages, max_tokens=4)
    raise AssertionError("an unknown API key was served")
except openai.AuthenticationError as e:
    print("unknown key:", e.status_code)

print("openai client: all checks passed")
