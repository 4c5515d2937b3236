"""Load generator for an OpenAI-compatible completions server (ours or llama.cpp's), stdlib only.

N client threads share a fixed list of requests (request k sends PROMPTS[k % len(PROMPTS)]) and each
sends its next request as soon as its previous one has ended: POST /v1/completions, streamed (SSE),
greedy (temperature 0, repeat_penalty 1, the same max_tokens for all). Per request it records the time
to first token (request sent -> first chunk carrying text, queueing in the server included), the end
time and the completion tokens (the server's `usage` when it sends one with stream_options.include_usage,
else the number of chunks carrying text). Prints one JSON line: aggregate completion tokens per second
over the run's wall time (first request sent -> last one ended), TTFT mean / p50 / p90 / max, and how
many requests stopped before max_tokens (EOS).

Usage: serve_load.py --url http://127.0.0.1:PORT --model NAME [--clients 8] [--requests 64]
       [--max-tokens 64] [--label TEXT] [--warmup 1] [--texts] [--api-key KEY]
       serve_load.py --summarize RUNS.jsonl
--texts adds each prompt's first completion text (to compare outputs with and without an adapter).
--summarize reads the JSON lines of bench/scripts/serve-vs-llama-cpp (which adds server, scenario, round)
and prints a table of the ratios within each round, and whether the adapter changed each server's output.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "The history of the city of Rome begins",
    "Here is a detailed guide to keeping bees in a city garden. First,",
    "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n",
    "The three laws of thermodynamics can be explained simply as follows.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "To make a loaf of sourdough bread you will need flour, water, salt and",
    "The main differences between a LoRA adapter and full fine-tuning are",
    "Dear hiring manager, I am writing to apply for the position of",
]


def cpu_sample(server_pid):
    """(busy CPU seconds of the whole machine, CPU seconds of the server process, of this process)."""
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(v[:8]) - v[3] - v[4]) / hz  # user nice system idle iowait irq softirq steal
    server = 0.0
    if server_pid:
        with open(f"/proc/{server_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / hz  # utime, stime
    t = os.times()
    return busy, server, t.user + t.system


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


def one_request(url, body, timeout, api_key=None):
    """Sends one streamed completion; returns (ttft_s, end_s, tokens, usage_tokens, text, error)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    t0 = time.perf_counter()
    ttft, chunks, usage, text = None, 0, None, []
    try:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            return None, None, 0, None, "", f"HTTP {resp.status}: {resp.read(500)!r}"
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            if ev.get("usage"):
                usage = ev["usage"].get("completion_tokens")
            for ch in ev.get("choices") or []:
                piece = ch.get("text") or ""
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    chunks += 1
                    text.append(piece)
        end = time.perf_counter() - t0
        return ttft, end, chunks, usage, "".join(text), None
    except (OSError, http.client.HTTPException, ValueError) as e:
        return None, None, 0, None, "", f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url")
    p.add_argument("--model")
    p.add_argument("--api-key", help="sent as Authorization: Bearer (paid calls to on-chain adapters)")
    p.add_argument("--summarize", metavar="RUNS_JSONL")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--label", default="")
    p.add_argument("--warmup", type=int, default=1, help="requests sent (one at a time) before measuring")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--texts", action="store_true")
    p.add_argument("--server-pid", type=int, help="report the server's CPU use and everyone else's during the run")
    a = p.parse_args()
    if a.summarize:
        return summarize(a.summarize)
    if not a.url or not a.model:
        p.error("--url and --model are required")

    def body(k):
        return {"model": a.model, "prompt": PROMPTS[k % len(PROMPTS)], "max_tokens": a.max_tokens,
                "temperature": 0, "repeat_penalty": 1.0, "stream": True,
                "stream_options": {"include_usage": True}}

    for k in range(a.warmup):
        r = one_request(a.url, body(k), a.timeout, a.api_key)
        if r[5]:
            sys.exit(f"serve_load.py: warm-up request failed: {r[5]}")

    lock = threading.Lock()
    nxt = [0]
    results = [None] * a.requests

    def client():
        while True:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= a.requests:
                return
            results[k] = one_request(a.url, body(k), a.timeout, a.api_key)

    c0 = cpu_sample(a.server_pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    c1 = cpu_sample(a.server_pid)
    busy, server, client = (y - x for x, y in zip(c0, c1))

    errors = [r[5] for r in results if r[5]]
    ok = [r for r in results if not r[5]]
    have_usage = all(r[3] is not None for r in ok) and ok
    tokens = [r[3] if have_usage else r[2] for r in ok]
    ttfts = [r[0] * 1000 for r in ok if r[0] is not None]
    out = {
        "label": a.label, "model": a.model, "clients": a.clients, "requests": a.requests,
        "max_tokens": a.max_tokens, "ok": len(ok), "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 3), "completion_tokens": sum(tokens),
        "tokens_source": "usage" if have_usage else "chunks",
        "tok_s": round(sum(tokens) / wall, 1) if wall > 0 else None,
        "short_requests": sum(1 for t in tokens if t < a.max_tokens),
        "ttft_ms_mean": round(statistics.mean(ttfts), 1) if ttfts else None,
        "ttft_ms_p50": round(pct(ttfts, 0.5), 1) if ttfts else None,
        "ttft_ms_p90": round(pct(ttfts, 0.9), 1) if ttfts else None,
        "ttft_ms_max": round(max(ttfts), 1) if ttfts else None,
        "e2e_ms_mean": round(statistics.mean(r[1] * 1000 for r in ok), 1) if ok else None,
        "cpus": os.cpu_count(),
        "client_cpu_cores": round(client / wall, 2),
        "server_cpu_cores": round(server / wall, 2) if a.server_pid else None,
        "others_cpu_cores": round(max(0.0, busy - server - client) / wall, 2) if a.server_pid else None,
    }
    if a.texts:
        out["texts"] = [results[k][4] for k in range(min(len(PROMPTS), a.requests))]
    print(json.dumps(out), flush=True)
    sys.exit(1 if errors else 0)


def common_prefix(x, y):
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


def summarize(path):
    runs = [json.loads(l) for l in open(path) if l.strip()]
    if not runs:
        sys.exit(f"serve_load.py: {path} holds no runs")
    by = {(r["round"], r["server"], r["scenario"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    servers = [s for s in ("ours", "ours-chain", "llama-cpp-python", "llama-server")
               if any(r["server"] == s for r in runs)]
    peers = [s for s in ("llama-cpp-python", "llama-server") if s in servers]
    ours = [s for s in ("ours", "ours-chain") if s in servers]
    head = ("| round | scenario | server | tok/s | TTFT p50 ms | TTFT mean ms | TTFT p90 ms | short "
            "| CPU cores: server / client / others | load before |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for rd in rounds:
        for sc in ("no adapter", "1 adapter"):
            for s in servers:
                r = by.get((rd, s, sc))
                if r:
                    print(f"| {rd} | {sc} | {s} | {r['tok_s']:.1f} | {r['ttft_ms_p50']:.0f} | {r['ttft_ms_mean']:.0f} "
                          f"| {r['ttft_ms_p90']:.0f} | {r['short_requests']}/{r['requests']} "
                          f"| {r.get('server_cpu_cores')} / {r.get('client_cpu_cores')} / {r.get('others_cpu_cores')} "
                          f"| {r['load_before']:.2f} |")
    print()
    print("| round | scenario | ours | peer | throughput ours/peer | TTFT p50 peer/ours | TTFT mean peer/ours |")
    print("|---|---|---|---|---|---|---|")
    for rd in rounds:
        for sc in ("no adapter", "1 adapter"):
            for o in ours:
                for pr in peers:
                    a, b = by.get((rd, o, sc)), by.get((rd, pr, sc))
                    if a and b:
                        print(f"| {rd} | {sc} | {o} | {pr} | {a['tok_s'] / b['tok_s']:.2f}x "
                              f"| {b['ttft_ms_p50'] / a['ttft_ms_p50']:.2f}x | {b['ttft_ms_mean'] / a['ttft_ms_mean']:.2f}x |")
    print()
    for rd in rounds:
        for s in servers:
            base = by.get((rd, s, "no adapter")) or by.get((rd, "ours", "no adapter"))
            ad = by.get((rd, s, "1 adapter"))
            if base and ad and "texts" in base and "texts" in ad:
                diff = sum(1 for x, y in zip(base["texts"], ad["texts"]) if x != y)
                print(f"round {rd}: {s}: the adapter changed the greedy output of {diff}/{len(ad['texts'])} prompts")
        for sc in ("no adapter", "1 adapter"):
            for o in ours:
                for pr in peers:
                    a, b = by.get((rd, o, sc)), by.get((rd, pr, sc))
                    if a and b and "texts" in a and "texts" in b:
                        same = sum(1 for x, y in zip(a["texts"], b["texts"]) if x == y)
                        pre = statistics.mean(common_prefix(x, y) for x, y in zip(a["texts"], b["texts"]))
                        print(f"round {rd}: {sc}: {o} and {pr} gave identical text for {same}/{len(a['texts'])} "
                              f"prompts (mean common prefix {pre:.0f} chars)")


if __name__ == "__main__":
    main()
