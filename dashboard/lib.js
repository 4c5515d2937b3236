// The dashboard's shared library: the `ctx` object every page's `render(root, ctx, params)` gets.
//
//   ctx.rpc(method, params)            JSON-RPC POST / ; throws Error(message) with .code, .data
//   ctx.rest(path, {method, body, headers, raw})
//                                      JSON REST call; throws Error(server's `error` text) with
//                                      .status and .body; a plain-object body is sent as JSON;
//                                      `raw: true` returns the Response itself
//   ctx.account()                      the chosen address (checksummed) or null
//   ctx.accountKind()                  'injected' | 'dev' | null
//   ctx.sendTx({to, data, value})      signs (injected EIP-1193 wallet, or a dev key in the
//                                      browser), sends, waits for the receipt and returns it
//   ctx.send(module, fn, args, {value}) ctx.sendTx of an encoded module call
//   ctx.call(module, fn, args)         eth_call of a module view, decoded (ethers Result)
//   ctx.signRequest(method, pathAndQuery, body)
//                                      the `Authorization` header value of a signed REST
//                                      request (openledger_types::request_auth); body: string,
//                                      Uint8Array or null
//   ctx.iface(module)                  ethers Interface of contracts/<module>.sol ('IGovernor',
//                                      'IDatanet', ... or short 'governor', 'datanet', ...)
//   ctx.moduleAddress(module)          its native address
//   ctx.moduleAt(address)              the module name at an address, or null
//   ctx.decodeCall(to, data)           {module, name, signature, args} or null
//   ctx.decodeLog(log)                 {module, name, signature, args} or null
//   ctx.fmtOpen(wei)                   "1,234.5 OPEN"
//   ctx.h(tag, attrs, ...children)     DOM helper (attrs: class, on<event>: fn, others as attributes)
//   ctx.toast(msg, kind)               kind: 'info' | 'ok' | 'error'
//   ctx.link(x, label)                 <a> into the explorer: tx hash, address or block number
//   ctx.chainId()                      the node's chain id (number, cached)
//   ctx.isDev()                        whether the node serves dev accounts (a dev chain)
//   ctx.onAccountChange(fn)            fn(address) when the account changes (until the page is left)
//   ctx.getLogs({address, topics, fromBlock}, {max})   eth_getLogs in chunks the node accepts
//   ctx.blockTime(n), ctx.fmtTime(s), ctx.fmtAge(s)    block timestamps and their display
//   ctx.argsTable(params, values), ctx.fmtArg(param, value)   decoded ABI values as DOM
//   ctx.busy(button, async fn)         disables the button while fn runs, toasts its error
// Per page (a fresh ctx for each render):
//   ctx.signal                         AbortSignal, aborted when the page is left
//   ctx.onLeave(fn)                    runs fn when the page is left
//   ctx.every(ms, fn)                  setInterval that stops when the page is left
//   ctx.query                          URLSearchParams of the part of the hash after '?'
//
// Nothing private leaves the browser: dev keys are used here, injected wallets sign themselves.
// Pages must not use inline scripts or style attributes (the node's CSP allows 'self' only).

import * as ethers from './vendor/ethers-6.17.0.min.js';

export { ethers };

/// Short module names → their interface file.
export const MODULES = ['IBank', 'IStaking', 'IDatanet', 'IModel', 'IInference', 'IParams', 'IGovernor', 'IRlhf', 'IAgent'];

const RECEIPT_WAIT_MS = 60_000;
const ACCOUNT_KEY = 'openledger.account';

// ---------------------------------------------------------------------------------- JSON-RPC

let rpcId = 0;

export async function rpc(method, params = []) {
  const res = await fetch('/', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: ++rpcId, method, params }),
  });
  let body;
  try {
    body = await res.json();
  } catch (e) {
    throw new Error(`${method}: the node answered HTTP ${res.status} without JSON`);
  }
  if (body.error) {
    const err = new Error(body.error.message || `${method} failed`);
    err.code = body.error.code;
    err.data = body.error.data;
    throw err;
  }
  if (!res.ok) throw new Error(`${method}: HTTP ${res.status}`);
  return body.result;
}

// -------------------------------------------------------------------------------------- REST

export async function rest(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  let body = opts.body;
  if (body !== undefined && body !== null && !(typeof body === 'string') && !(body instanceof Uint8Array)
      && !(body instanceof Blob) && !(body instanceof FormData) && !(body instanceof ArrayBuffer)) {
    body = JSON.stringify(body);
    if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  }
  const res = await fetch(path, { method: opts.method || (body != null ? 'POST' : 'GET'), headers, body, signal: opts.signal });
  if (opts.raw) return res;
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json().catch(() => null) : await res.text();
  if (!res.ok) {
    const text = data && typeof data === 'object' && data.error ? data.error : (typeof data === 'string' && data) || `HTTP ${res.status}`;
    const err = new Error(text);
    err.status = res.status;
    err.body = data;
    throw err;
  }
  return data;
}

// -------------------------------------------------------------------- module interfaces (ABI)

const ifaces = new Map(); // 'IGovernor' → {iface, address, name, failed: [decl]}
const byAddress = new Map(); // lowercase address → name

/// Removes comments from Solidity source.
function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/[^\n]*/g, ' ');
}

/// Turns a Solidity interface into ethers human-readable fragments: structs become tuples,
/// enums uint8, data locations and visibility go.
export function solToFragments(src) {
  const code = stripComments(src).replace(/\s+/g, ' ');
  const enums = new Set([...code.matchAll(/\benum (\w+) ?\{[^}]*\}/g)].map((m) => m[1]));
  const rawStructs = new Map([...code.matchAll(/\bstruct (\w+) ?\{([^}]*)\}/g)].map((m) => [m[1], m[2]]));
  const structs = new Map();
  const typeRe = () => new RegExp(`\\b(?:\\w+\\.)?(${[...rawStructs.keys(), ...enums].join('|') || '(?!)'})\\b(?=(?:\\[\\d*\\])*\\s*[\\w,)])`, 'g');
  const resolve = (name, depth = 0) => {
    if (structs.has(name)) return structs.get(name);
    if (depth > 16) throw new Error(`struct ${name} nests too deep`);
    const fields = rawStructs.get(name).split(';').map((f) => f.trim()).filter(Boolean);
    const out = `tuple(${fields.map((f) => replaceTypes(f, depth + 1)).join(', ')})`;
    structs.set(name, out);
    return out;
  };
  const replaceTypes = (text, depth = 0) => text.replace(typeRe(), (_, n) => (enums.has(n) ? 'uint8' : resolve(n, depth)));
  const frags = [];
  for (const m of code.matchAll(/\b(function|event|error) [^;{}]*;/g)) {
    let d = m[0].slice(0, -1);
    d = d.replace(/\b(memory|calldata|storage|external|public|internal|virtual|override)\b/g, ' ');
    d = replaceTypes(d.replace(/\s+/g, ' ')).replace(/\s+/g, ' ').replace(/ ([,)])/g, '$1').replace(/\( /g, '(').trim();
    frags.push(d);
  }
  return frags;
}

/// Loads contracts/*.sol (embedded in the node) into Interfaces; called once before any page.
export async function loadInterfaces() {
  await Promise.all(MODULES.map(async (name) => {
    const res = await fetch(`/dashboard/contracts/${name}.sol`);
    if (!res.ok) return;
    const src = await res.text();
    const address = (src.match(/Native system contract at (0x[0-9a-fA-F]{40})/) || [])[1] || null;
    const good = [];
    const failed = [];
    for (const f of solToFragments(src)) {
      try {
        ethers.Fragment.from(f);
        good.push(f);
      } catch (e) {
        failed.push(f);
      }
    }
    const entry = { name, address: address && ethers.getAddress(address), iface: new ethers.Interface(good), failed };
    ifaces.set(name, entry);
    if (address) byAddress.set(address.toLowerCase(), name);
  }));
}

function moduleEntry(name) {
  const key = ifaces.has(name) ? name : `I${name.charAt(0).toUpperCase()}${name.slice(1)}`;
  const e = ifaces.get(key);
  if (!e) throw new Error(`unknown module ${name} (known: ${[...ifaces.keys()].join(', ')})`);
  return e;
}

export function iface(name) { return moduleEntry(name).iface; }
export function moduleAddress(name) { return moduleEntry(name).address; }
export function moduleAt(address) { return (address && byAddress.get(address.toLowerCase())) || null; }
export function interfaceFailures() {
  return [...ifaces.values()].flatMap((e) => e.failed.map((f) => `${e.name}: ${f}`));
}

export function decodeCall(to, data) {
  const name = moduleAt(to);
  if (!name || !data || data === '0x') return null;
  try {
    const d = ifaces.get(name).iface.parseTransaction({ data });
    if (!d) return null;
    return { module: name, name: d.name, signature: d.signature, args: d.args, fragment: d.fragment };
  } catch (e) {
    return null;
  }
}

export function decodeLog(log) {
  const name = moduleAt(log.address);
  const entries = name ? [ifaces.get(name)] : [...ifaces.values()];
  for (const e of entries) {
    try {
      const d = e.iface.parseLog({ topics: log.topics, data: log.data });
      if (d) return { module: e.name, name: d.name, signature: d.signature, args: d.args, fragment: d.fragment };
    } catch (err) { /* not this module's event */ }
  }
  return null;
}

export async function call(module, fn, args = [], opts = {}) {
  const i = iface(module);
  const data = i.encodeFunctionData(fn, args);
  const req = { to: moduleAddress(module), data };
  if (opts.from || account()) req.from = opts.from || account();
  const out = await rpc('eth_call', [req, opts.block || 'latest']);
  const r = i.decodeFunctionResult(fn, out);
  return r.length === 1 ? r[0] : r;
}

// ----------------------------------------------------------------------------------- accounts

let chainIdCache = null;
let devAccounts = null; // [{name, address, privateKey}] or [] when not a dev chain
let current = null; // {kind: 'injected'|'dev', address, name, wallet?}
const accountListeners = new Set();

export async function chainId() {
  if (chainIdCache === null) chainIdCache = Number(await rpc('eth_chainId'));
  return chainIdCache;
}

/// The dev accounts the node serves (only on a dev chain), fetched once.
export async function loadDevAccounts() {
  if (devAccounts !== null) return devAccounts;
  try {
    const res = await fetch('/dashboard/dev-accounts');
    devAccounts = res.ok ? (await res.json()).accounts || [] : [];
  } catch (e) {
    devAccounts = [];
  }
  return devAccounts;
}

export function isDev() { return Array.isArray(devAccounts) && devAccounts.length > 0; }
export function listDevAccounts() { return devAccounts || []; }
export function account() { return current ? current.address : null; }
export function accountKind() { return current ? current.kind : null; }
export function accountName() { return current ? current.name : null; }

function notifyAccount() {
  for (const fn of [...accountListeners]) {
    try { fn(account()); } catch (e) { console.warn(e); }
  }
}

export function onAccountChange(fn) {
  accountListeners.add(fn);
  return () => accountListeners.delete(fn);
}

/// Asks the injected wallet to use this node's chain (switching to it, or adding it with this
/// node as its RPC), so that what it signs is valid here.
async function matchWalletChain() {
  const want = await chainId();
  const have = Number(await window.ethereum.request({ method: 'eth_chainId' }));
  if (have === want) return;
  const hex = ethers.toQuantity(want);
  try {
    await window.ethereum.request({ method: 'wallet_switchEthereumChain', params: [{ chainId: hex }] });
  } catch (e) {
    if (e && e.code !== 4902) throw new Error(`the wallet is on chain ${have}, this node is chain ${want}: switch the wallet to it (${e.message || e})`);
    await window.ethereum.request({
      method: 'wallet_addEthereumChain',
      params: [{ chainId: hex, chainName: `OpenLedger ${want}`, rpcUrls: [location.origin + '/'], nativeCurrency: { name: 'OPEN', symbol: 'OPEN', decimals: 18 } }],
    });
  }
}

/// Chooses the account: '' (none), 'injected' or a dev account's name ('dev0'…).
export async function selectAccount(choice) {
  if (!choice) {
    current = null;
  } else if (choice === 'injected') {
    if (!window.ethereum) throw new Error('no injected wallet (window.ethereum) in this browser');
    const accounts = await window.ethereum.request({ method: 'eth_requestAccounts' });
    if (!accounts || !accounts.length) throw new Error('the wallet shared no account');
    await matchWalletChain();
    current = { kind: 'injected', address: ethers.getAddress(accounts[0]), name: 'wallet' };
    if (window.ethereum.on && !selectAccount.listening) {
      selectAccount.listening = true;
      window.ethereum.on('accountsChanged', (accs) => {
        if (current && current.kind === 'injected') {
          current = accs && accs.length ? { ...current, address: ethers.getAddress(accs[0]) } : null;
          notifyAccount();
        }
      });
    }
  } else {
    const dev = (await loadDevAccounts()).find((a) => a.name === choice);
    if (!dev) throw new Error(`no dev account ${choice} on this node`);
    current = { kind: 'dev', address: ethers.getAddress(dev.address), name: dev.name, wallet: new ethers.Wallet(dev.privateKey) };
  }
  try { localStorage.setItem(ACCOUNT_KEY, choice || ''); } catch (e) { /* storage off */ }
  notifyAccount();
  return account();
}

export function savedAccountChoice() {
  try { return localStorage.getItem(ACCOUNT_KEY) || ''; } catch (e) { return ''; }
}

function needAccount() {
  if (!current) throw new Error('choose an account first (top right: a wallet, or a dev account on a dev chain)');
  return current;
}

// ------------------------------------------------------------------------------ transactions

const toHex = (v) => ethers.toQuantity(v === undefined || v === null || v === '' ? 0 : BigInt(v));

export async function waitReceipt(hash, timeoutMs = RECEIPT_WAIT_MS) {
  const start = Date.now();
  for (;;) {
    const r = await rpc('eth_getTransactionReceipt', [hash]);
    if (r) return r;
    if (Date.now() - start > timeoutMs) throw new Error(`no receipt for ${hash} after ${timeoutMs / 1000} s`);
    await new Promise((ok) => setTimeout(ok, 300));
  }
}

/// Signs and sends {to, data, value} from the chosen account; resolves to the receipt.
export async function sendTx({ to, data = '0x', value = 0 }) {
  const acc = needAccount();
  let hash;
  if (acc.kind === 'injected') {
    hash = await window.ethereum.request({
      method: 'eth_sendTransaction',
      params: [{ from: acc.address, to, data, value: toHex(value) }],
    });
  } else {
    const req = { from: acc.address, to, data, value: toHex(value) };
    const [cid, nonce, gas, tip, block] = await Promise.all([
      chainId(),
      rpc('eth_getTransactionCount', [acc.address, 'pending']),
      rpc('eth_estimateGas', [req]),
      rpc('eth_maxPriorityFeePerGas'),
      rpc('eth_getBlockByNumber', ['latest', false]),
    ]);
    const base = BigInt(block.baseFeePerGas || 0);
    const priority = BigInt(tip);
    const tx = {
      type: 2,
      chainId: cid,
      nonce: Number(nonce),
      to,
      data,
      value: BigInt(value || 0),
      gasLimit: BigInt(gas),
      maxPriorityFeePerGas: priority,
      maxFeePerGas: base * 2n + priority,
    };
    const raw = await acc.wallet.signTransaction(tx);
    hash = await rpc('eth_sendRawTransaction', [raw]);
  }
  const receipt = await waitReceipt(hash);
  if (receipt.status !== '0x1') throw new Error(`transaction ${hash} failed (status ${receipt.status})`);
  return receipt;
}

/// Sends a call of a native module's function: ctx.send('governor', 'castVote', [id, 1]).
export async function send(module, fn, args = [], opts = {}) {
  const data = iface(module).encodeFunctionData(fn, args);
  return sendTx({ to: moduleAddress(module), data, value: opts.value || 0 });
}

/// The `Authorization` header value for a signed REST request (see request_auth.rs).
export async function signRequest(method, pathAndQuery, body = null) {
  const acc = needAccount();
  const bytes = body === null || body === undefined ? new Uint8Array() : typeof body === 'string' ? ethers.toUtf8Bytes(body) : body;
  const bodyHash = ethers.keccak256(bytes);
  const time = Math.floor(Date.now() / 1000);
  const nonce = ethers.hexlify(ethers.randomBytes(12)).slice(2);
  const message = `OpenLedger request\nchain: ${await chainId()}\n${method.toUpperCase()} ${pathAndQuery}\ntime: ${time}\nnonce: ${nonce}\nbody: ${bodyHash}`;
  let sig;
  if (acc.kind === 'injected') {
    sig = await window.ethereum.request({ method: 'personal_sign', params: [ethers.hexlify(ethers.toUtf8Bytes(message)), acc.address] });
  } else {
    sig = await acc.wallet.signMessage(message);
  }
  return `OpenLedger ${acc.address}:${time}:${nonce}:${bodyHash}:${sig}`;
}


// ------------------------------------------------------------------------------ chain reads

/// eth_getLogs over [fromBlock, head] in chunks the node accepts (its max_log_range), newest
/// chunk last; `filter` is {address, topics, fromBlock?}; stops after `max` logs.
export async function getLogs(filter, { max = 5000, chunk = 10_000 } = {}) {
  const head = Number(await rpc('eth_blockNumber'));
  let from = Number(filter.fromBlock ?? 0);
  let step = chunk;
  const out = [];
  while (from <= head && out.length < max) {
    const to = Math.min(head, from + step - 1);
    try {
      const logs = await rpc('eth_getLogs', [{ address: filter.address, topics: filter.topics || [], fromBlock: ethers.toQuantity(from), toBlock: ethers.toQuantity(to) }]);
      out.push(...logs);
      from = to + 1;
    } catch (e) {
      if (step > 1 && /range|narrow|too many|limit/i.test(e.message)) step = Math.max(1, Math.floor(step / 2));
      else throw e;
    }
  }
  return out.slice(0, max);
}

/// The timestamp (seconds) of block `n`, cached.
const blockTimes = new Map();
export async function blockTime(n) {
  const k = Number(n);
  if (!blockTimes.has(k)) {
    const b = await rpc('eth_getBlockByNumber', [ethers.toQuantity(k), false]);
    blockTimes.set(k, b ? Number(b.timestamp) : null);
  }
  return blockTimes.get(k);
}

export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return '';
  const d = new Date(Number(seconds) * 1000);
  return d.toLocaleString(undefined, { hour12: false });
}

export function fmtAge(seconds) {
  const s = Math.max(0, Math.floor(Date.now() / 1000 - Number(seconds)));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/// One decoded ABI value as DOM: addresses link to the explorer, amounts show OPEN next to wei
/// when their name says so, tuples and arrays nest.
export function fmtArg(param, value) {
  const type = param && param.baseType;
  if (type === 'array') {
    const items = [...value];
    if (!items.length) return h('span', { class: 'muted' }, '[]');
    return h('ol', { class: 'args-list', start: 0 }, items.map((v) => h('li', null, fmtArg(param.arrayChildren, v))));
  }
  if (type === 'tuple') return argsTable(param.components, value);
  if (type === 'address') return h('span', null, link(value), moduleAt(value) ? ` (${moduleAt(value)})` : '');
  if (typeof value === 'bigint') {
    const amount = /amount|fee|value|balance|stake|reward|votes|weight|wei|platform|owner|contributors|stakers|price/i.test(param.name || '');
    return amount && value > 10n ** 12n ? h('span', { title: `${value} wei` }, `${fmtOpen(value)}`) : h('span', { class: 'mono' }, value.toString());
  }
  if (typeof value === 'string' && value.startsWith('0x')) return h('span', { class: 'mono', title: value }, value.length > 74 ? short(value, 16) : value);
  return h('span', null, String(value));
}

/// A table of named ABI values (a function's inputs, an event's args).
export function argsTable(params, values) {
  return h('table', { class: 'args' }, [...params].map((p, i) => h('tr', null,
    h('td', { class: 'mono' }, `${p.name || `#${i}`}`),
    h('td', { class: 'muted' }, p.type),
    h('td', null, fmtArg(p, values[i])))));
}

// ---------------------------------------------------------------------------------- display

export function fmtOpen(wei, digits = 4) {
  let v;
  try { v = BigInt(wei ?? 0); } catch (e) { return String(wei); }
  const neg = v < 0n;
  const s = ethers.formatEther(neg ? -v : v);
  let [int, frac = ''] = s.split('.');
  frac = frac.slice(0, digits).replace(/0+$/, '');
  int = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  if (!frac && v !== 0n && int === '0') return `${neg ? '-' : ''}<0.${'0'.repeat(digits - 1)}1 OPEN`;
  return `${neg ? '-' : ''}${int}${frac ? `.${frac}` : ''} OPEN`;
}

export function short(hex, n = 6) {
  if (typeof hex !== 'string' || hex.length <= 2 * n + 3) return String(hex);
  return `${hex.slice(0, n + 2)}…${hex.slice(-n + 2)}`;
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  const add = (c) => {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  };
  children.forEach(add);
  return el;
}

export function toast(msg, kind = 'info') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const t = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, String(msg));
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 10000 : 5000);
  return t;
}

/// A link into the explorer: a 32-byte hash (a transaction), an address or a block number.
export function link(x, label) {
  const s = String(x);
  let href;
  if (/^0x[0-9a-fA-F]{64}$/.test(s)) href = `#/explorer/tx/${s}`;
  else if (/^0x[0-9a-fA-F]{40}$/.test(s)) href = `#/explorer/address/${ethers.getAddress(s)}`;
  else if (/^(0x[0-9a-fA-F]+|\d+)$/.test(s)) href = `#/explorer/block/${Number(s)}`;
  else return h('span', null, s);
  const text = label ?? (s.startsWith('0x') && s.length > 20 ? short(s) : /^0x/.test(s) && s.length < 20 ? String(Number(s)) : s);
  return h('a', { href, class: 'mono', title: s }, text);
}

/// A status line for a form: ctx.busy(button, async () => ...) disables it while running and
/// toasts the error.
export async function busy(button, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    toast(e.message || String(e), 'error');
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ------------------------------------------------------------------------------ the context

const base = {
  ethers, rpc, rest, account, accountKind, accountName, sendTx, send, call, signRequest, iface,
  moduleAddress, moduleAt, decodeCall, decodeLog, fmtOpen, short, h, toast, link, chainId, isDev,
  waitReceipt, busy, listDevAccounts, getLogs, blockTime, fmtTime, fmtAge, fmtArg, argsTable,
};

/// A fresh ctx for one page render; `leave()` ends its timers, listeners and requests.
export function pageContext(query) {
  const controller = new AbortController();
  const leaving = [];
  const ctx = Object.create(base);
  ctx.signal = controller.signal;
  ctx.query = query || new URLSearchParams();
  ctx.onLeave = (fn) => leaving.push(fn);
  ctx.every = (ms, fn) => {
    let running = false;
    const id = setInterval(async () => {
      if (running) return;
      running = true;
      try { await fn(); } catch (e) { console.warn(e); } finally { running = false; }
    }, ms);
    leaving.push(() => clearInterval(id));
    return id;
  };
  ctx.onAccountChange = (fn) => leaving.push(onAccountChange(fn));
  const leave = () => {
    controller.abort();
    for (const fn of leaving.splice(0)) {
      try { fn(); } catch (e) { console.warn(e); }
    }
  };
  return { ctx, leave };
}
