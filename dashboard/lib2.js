// Helpers shared by the Datanets, Models, Playground and Simulator pages, beside lib.js:
//
//   useStyles()                          adds dashboard/lib2.css (span colours, report layout) once
//   signedRest(ctx, method, path, body)  ctx.rest with a fresh signed `Authorization` header
//                                        (request_auth: nonce, time, body hash); body: a plain
//                                        object (sent as JSON), a string or bytes
//   multipart(files)                     {bytes, contentType} of a multipart/form-data upload of
//                                        [{name, bytes}] built here, so a signature covers exactly
//                                        the bytes sent
//   stage(ctx, datanetId, files)         the signed staging upload: the node's report and
//                                        metadataUri (throws Error with .report when every file
//                                        was rejected)
//   streamEvents(url, opts)              Server-Sent Events over fetch (any method, headers, body):
//                                        calls opts.onEvent(name, data) per event, resolves when the
//                                        stream ends; opts.signal stops it
//   logs(ctx, module, event, topics, fromBlock)
//                                        decoded logs of one module event ([{args, log}])
//   table(ctx, headers, rows)            a <table> (cells: nodes or text)
//   kv(ctx, pairs)                       a <dl class="kv">
//   colourClass(i)                       'src-c<i mod 8>' (background colours in lib2.css)
//   signMessage(ctx, message)            personal_sign by the chosen account (wallet or dev key)

let styled = false;

export function useStyles() {
  if (styled || document.querySelector('link[data-lib2]')) return;
  styled = true;
  const link = document.createElement('link');
  link.rel = 'stylesheet';
  link.href = '/dashboard/lib2.css';
  link.dataset.lib2 = '1';
  document.head.append(link);
}

function toBytes(ctx, body) {
  if (body === null || body === undefined) return null;
  if (body instanceof Uint8Array) return body;
  if (typeof body === 'string') return ctx.ethers.toUtf8Bytes(body);
  return ctx.ethers.toUtf8Bytes(JSON.stringify(body));
}

export async function signedRest(ctx, method, path, body = null, extraHeaders = {}) {
  const bytes = toBytes(ctx, body);
  const headers = { ...extraHeaders, authorization: await ctx.signRequest(method, path, bytes) };
  if (bytes && !Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) {
    headers['content-type'] = typeof body === 'object' && !(body instanceof Uint8Array) ? 'application/json' : 'application/octet-stream';
  }
  return ctx.rest(path, { method, headers, body: bytes ?? undefined, signal: ctx.signal });
}

export function multipart(files) {
  const boundary = `openledger-${Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('')}`;
  const enc = new TextEncoder();
  const parts = [];
  for (const f of files) {
    const name = String(f.name).replace(/["\r\n\\]/g, '_');
    parts.push(enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    parts.push(f.bytes);
    parts.push(enc.encode('\r\n'));
  }
  parts.push(enc.encode(`--${boundary}--\r\n`));
  const total = parts.reduce((n, p) => n + p.length, 0);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, contentType: `multipart/form-data; boundary=${boundary}` };
}

export async function stage(ctx, datanetId, files) {
  const { bytes, contentType } = multipart(files);
  const path = `/v1/datanets/${datanetId}/stage`;
  try {
    return await signedRest(ctx, 'POST', path, bytes, { 'content-type': contentType });
  } catch (e) {
    if (e.body && e.body.report) e.report = e.body.report;
    throw e;
  }
}

export async function streamEvents(url, opts = {}) {
  const res = await fetch(url, {
    method: opts.method || 'GET',
    headers: { accept: 'text/event-stream', ...(opts.headers || {}) },
    body: opts.body,
    signal: opts.signal,
  });
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try {
      const j = await res.json();
      msg = (j.error && (j.error.message || j.error)) || msg;
    } catch (e) { /* not JSON */ }
    const err = new Error(typeof msg === 'string' ? msg : JSON.stringify(msg));
    err.status = res.status;
    throw err;
  }
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let name = 'message';
  let data = [];
  const dispatch = () => {
    if (data.length) opts.onEvent(name, data.join('\n'));
    name = 'message';
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') dispatch();
      else if (line.startsWith(':')) continue;
      else if (line.startsWith('event:')) name = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
  }
  dispatch();
}

export async function logs(ctx, module, event, topics = [], fromBlock = '0x0') {
  const i = ctx.iface(module);
  const ev = i.getEvent(event);
  const raw = await ctx.rpc('eth_getLogs', [{ address: ctx.moduleAddress(module), fromBlock, toBlock: 'latest', topics: [ev.topicHash, ...topics] }]);
  return raw.map((log) => ({ log, args: i.parseLog({ topics: log.topics, data: log.data }).args }));
}

/// A 32-byte topic of a uint value.
export function uintTopic(ctx, n) {
  return ctx.ethers.zeroPadValue(ctx.ethers.toBeHex(BigInt(n)), 32);
}

export function table(ctx, headers, rows, attrs = {}) {
  const { h } = ctx;
  return h('table', attrs,
    h('thead', null, h('tr', null, headers.map((x) => h('th', null, x)))),
    h('tbody', null, rows.map((r) => (r instanceof Node ? r : h('tr', null, r.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : h('td', null, c))))))));
}

export function kv(ctx, pairs) {
  const { h } = ctx;
  return h('dl', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

export function colourClass(i) {
  return `src-c${((i % 8) + 8) % 8}`;
}

export function bps(b) {
  return `${(Number(b) / 100).toFixed(2)}%`;
}

export function when(secs) {
  const n = Number(secs);
  return n ? new Date(n * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '';
}

/// Signs `message` (EIP-191 personal_sign) with the chosen account: the injected wallet, or the
/// dev key of the chosen dev account (kept in this browser).
export async function signMessage(ctx, message) {
  const address = ctx.account();
  if (!address) throw new Error('choose an account first (top right)');
  if (ctx.accountKind() === 'injected') {
    return window.ethereum.request({ method: 'personal_sign', params: [ctx.ethers.hexlify(ctx.ethers.toUtf8Bytes(message)), address] });
  }
  const dev = ctx.listDevAccounts().find((a) => a.name === ctx.accountName());
  if (!dev) throw new Error(`no key for ${address} in this browser`);
  return new ctx.ethers.Wallet(dev.privateKey).signMessage(message);
}
