// The Playground (`#/playground?model=NAME`): chat with the base model or any adapter through the
// node's OpenAI API (`POST /v1/chat/completions`, streamed as Server-Sent Events). A call to an
// on-chain adapter is paid from the caller's prepaid credit with an API key bound to the account
// (set up here: deposit, operator allowance, a key signed in this browser) and comes back
// attributed: the stream's last chunk carries the `attribution` object (contributions,
// contributors, weights, quoted spans, the committed top-k and root, the receipt's request id).
// The answer's spans are highlighted in one colour per contributor (hover: contributor,
// contribution id, weight); below it the fee at the governed prices and its split between
// platform, model owner, stakers and contributors (by attribution weight), then the on-chain
// receipt and the amounts actually paid once the node's recorder has settled the call.

import { useStyles, streamEvents, signMessage, table, colourClass, logs, bps } from '../lib2.js';

const KEY_PREFIX = 'openledger.apikey.';
const MAX_TOKENS = 128;

function savedKey(address) {
  try { return sessionStorage.getItem(KEY_PREFIX + address.toLowerCase()); } catch (e) { return null; }
}

function saveKey(address, key) {
  try { sessionStorage.setItem(KEY_PREFIX + address.toLowerCase(), key); } catch (e) { /* storage off */ }
}

export async function render(root, ctx) {
  useStyles();
  const { h } = ctx;
  const [models, info] = await Promise.all([
    ctx.rest('/v1/models', { signal: ctx.signal }),
    ctx.rest('/v1/openlora', { signal: ctx.signal }).catch(() => ({ billing: false })),
  ]);
  const list = models.data || [];
  if (!list.length) {
    root.append(h('h1', null, 'Playground'), h('p', { class: 'muted' }, 'This node serves no model (start it with --model).'));
    return;
  }
  const wanted = ctx.query.get('model');
  const picker = h('select', { id: 'model' }, list.map((m) => h('option', { value: m.id, selected: m.id === wanted }, m.parent ? `${m.id} (adapter of ${m.parent})` : `${m.id} (base model)`)));
  const keyBox = h('div', { id: 'api-key' });
  const chat = h('div', { class: 'chat', id: 'chat' });
  const input = h('textarea', { id: 'prompt', placeholder: 'Ask something…' });
  const sendButton = h('button', { id: 'send' }, 'Send');
  const reset = h('button', { class: 'secondary' }, 'New conversation');
  const temperature = h('input', { id: 'temperature', type: 'number', value: '0', step: '0.1', min: 0, max: 2 });
  root.append(h('h1', null, 'Playground'), h('div', { class: 'row' }, h('label', null, 'Model', picker), h('label', null, 'Temperature', temperature)), keyBox, chat,
    h('div', { class: 'stack' }, input, h('div', { class: 'row' }, sendButton, reset)));
  const isAdapter = () => Boolean((list.find((m) => m.id === picker.value) || {}).parent);
  const paid = () => info.billing && isAdapter();
  const history = [];

  function renderKeyBox() {
    keyBox.replaceChildren();
    if (!paid()) {
      keyBox.append(h('p', { class: 'muted' }, isAdapter() ? 'Calls to this adapter are free on this node.' : 'The base model is served free (no attribution, no fee).'));
      return;
    }
    const me = ctx.account();
    if (!me) {
      keyBox.append(h('p', { class: 'error' }, 'Calls to an on-chain adapter are paid: choose an account (top right).'));
      return;
    }
    if (savedKey(me)) {
      keyBox.append(h('p', { class: 'ok', id: 'key-ready' }, `Paying with an API key bound to ${ctx.short(me)} (this browser tab).`));
      return;
    }
    const deposit = h('input', { type: 'number', value: '1', step: 'any', min: 0, id: 'deposit' });
    const allowance = h('input', { type: 'number', value: '10', step: 'any', min: 0 });
    const setup = h('button', { id: 'setup-key' }, 'Set up paid calls');
    setup.addEventListener('click', () => ctx.busy(setup, async () => {
      const operator = ctx.ethers.getAddress(info.operator);
      if (Number(deposit.value) > 0) await ctx.send('inference', 'deposit', [], { value: ctx.ethers.parseEther(deposit.value) });
      await ctx.send('inference', 'approveOperator', [operator, ctx.ethers.parseEther(allowance.value || '0')]);
      const key = `olk_${ctx.ethers.hexlify(ctx.ethers.randomBytes(32)).slice(2)}`;
      const keyHash = ctx.ethers.keccak256(ctx.ethers.toUtf8Bytes(key));
      const issued = Math.floor(Date.now() / 1000);
      const message = `OpenLedger API key\nchain: ${await ctx.chainId()}\noperator: ${operator}\nkey: ${keyHash}\nissued: ${issued}`;
      const signature = await signMessage(ctx, message);
      await ctx.rest('/v1/api-keys', { method: 'POST', body: { address: me, key_hash: keyHash, issued_at: issued, signature } });
      saveKey(me, key);
      ctx.toast('API key bound to your account', 'ok');
      renderKeyBox();
    }));
    keyBox.append(h('div', { class: 'card' },
      h('p', null, `Calls to ${picker.value} are paid per token from your prepaid credit. Deposit credit, allow this node's operator ${ctx.short(info.operator)} to charge it, and bind an API key (kept in this tab only):`),
      h('div', { class: 'row' }, h('label', null, 'Deposit (OPEN)', deposit), h('label', null, 'Operator allowance (OPEN)', allowance), setup)));
  }

  picker.addEventListener('change', () => { history.length = 0; chat.replaceChildren(); renderKeyBox(); });
  reset.addEventListener('click', () => { history.length = 0; chat.replaceChildren(); });
  ctx.onAccountChange(renderKeyBox);
  renderKeyBox();

  const ask = () => ctx.busy(sendButton, async () => {
    const text = input.value.trim();
    if (!text) return;
    const model = picker.value;
    const headers = { 'content-type': 'application/json' };
    if (paid()) {
      const key = ctx.account() && savedKey(ctx.account());
      if (!key) throw new Error('set up paid calls first (above)');
      headers.authorization = `Bearer ${key}`;
    }
    history.push({ role: 'user', content: text });
    input.value = '';
    chat.append(h('div', { class: 'msg user' }, h('div', { class: 'who' }, 'you'), h('div', { class: 'answer' }, text)));
    const answer = h('div', { class: 'answer streaming' });
    const details = h('div', { class: 'attribution' });
    const msg = h('div', { class: 'msg assistant' }, h('div', { class: 'who' }, model), answer, details);
    chat.append(msg);
    let content = '';
    let usage = null;
    let attribution = null;
    let failure = null;
    await streamEvents('/v1/chat/completions', {
      method: 'POST',
      headers,
      body: JSON.stringify({ model, messages: history, stream: true, stream_options: { include_usage: true }, max_tokens: MAX_TOKENS, temperature: Number(temperature.value) || 0 }),
      signal: ctx.signal,
      onEvent: (name, data) => {
        if (data === '[DONE]') return;
        let v;
        try { v = JSON.parse(data); } catch (e) { return; }
        if (v.error) failure = v.error.message || JSON.stringify(v.error);
        const delta = v.choices && v.choices[0] && v.choices[0].delta;
        if (delta && delta.content) {
          content += delta.content;
          answer.textContent = content;
        }
        if (v.usage) usage = v.usage;
        if (v.attribution) attribution = v.attribution;
      },
    });
    answer.classList.remove('streaming');
    history.push({ role: 'assistant', content });
    if (failure) throw new Error(failure);
    answer.replaceChildren(...highlight(ctx, content, attribution));
    msg.dataset.done = '1';
    await showAttribution(ctx, details, { attribution, usage, paid: paid(), model });
  });
  sendButton.addEventListener('click', ask);
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) ask(); });
}

/// Contributor → colour index, in order of weight.
function contributorColours(attribution) {
  const m = new Map();
  for (const c of (attribution && attribution.contributions) || []) {
    const k = c.contributor.toLowerCase();
    if (!m.has(k)) m.set(k, m.size);
  }
  return m;
}

/// The answer as text nodes and <mark>s: every quoted span found in the text, the longest
/// first, without overlaps, coloured by its contributor.
function highlight(ctx, text, attribution) {
  const { h } = ctx;
  if (!attribution || !(attribution.contributions || []).length) return [text];
  const colours = contributorColours(attribution);
  const found = [];
  for (const c of attribution.contributions) {
    for (const s of c.spans || []) {
      const t = (s.text || '').trim();
      if (t.length < 2) continue;
      for (let at = text.indexOf(t); at >= 0; at = text.indexOf(t, at + 1)) found.push({ start: at, end: at + t.length, c });
    }
  }
  found.sort((a, b) => (b.end - b.start) - (a.end - a.start) || a.start - b.start);
  const taken = [];
  for (const f of found) if (!taken.some((t) => f.start < t.end && t.start < f.end)) taken.push(f);
  taken.sort((a, b) => a.start - b.start);
  const out = [];
  let at = 0;
  for (const t of taken) {
    if (t.start > at) out.push(text.slice(at, t.start));
    const i = colours.get(t.c.contributor.toLowerCase());
    out.push(h('mark', {
      class: `span ${colourClass(i)}`,
      title: `contributor ${t.c.contributor}\ncontribution #${t.c.contribution_id}\nweight ${(t.c.weight * 100).toFixed(1)}%`,
      'data-contribution': t.c.contribution_id,
      'data-contributor': t.c.contributor,
    }, text.slice(t.start, t.end)));
    at = t.end;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

async function showAttribution(ctx, box, { attribution, usage, paid, model }) {
  const { h } = ctx;
  const parts = [];
  if (usage) parts.push(h('p', { class: 'muted' }, `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`));
  if (!attribution) {
    parts.push(h('p', { class: 'muted' }, paid ? 'No attribution came back for this call.' : `${model}: free, not attributed (only on-chain adapters are).`));
    box.replaceChildren(...parts);
    return;
  }
  const colours = contributorColours(attribution);
  const contributions = attribution.contributions || [];
  parts.push(h('p', null, `Attributed ${(attribution.coverage * 100).toFixed(1)}% of the answer to ${contributions.length} contribution(s); ${(attribution.unattributed * 100).toFixed(1)}% unattributed (goes to the model owner). Index root `, h('span', { class: 'mono' }, ctx.short(attribution.index_root)), '.'));
  // The fee at the governed prices and its split.
  let fee = null;
  let split = null;
  if (usage && attribution.receipt) {
    [fee, split] = await Promise.all([
      ctx.call('inference', 'quote', [usage.prompt_tokens, usage.completion_tokens]),
      ctx.call('params', 'feeSplit'),
    ]);
  }
  const share = (bpsValue) => (fee * BigInt(bpsValue)) / 10000n;
  const contributorsPot = fee !== null ? share(split.contributorsBps) : null;
  parts.push(table(ctx, ['', 'contributor', 'contribution', 'weight', 'spans', fee !== null ? 'share of the fee' : ''], contributions.map((c) => {
    const i = colours.get(c.contributor.toLowerCase());
    return h('tr', { 'data-contribution': c.contribution_id },
      h('td', null, h('span', { class: `badge ${colourClass(i)}` }, ' ')), h('td', null, ctx.link(c.contributor)), h('td', null, `#${c.contribution_id}`),
      h('td', { class: 'num' }, `${(c.weight * 100).toFixed(2)}%`), h('td', null, (c.spans || []).map((s) => `“${s.text.trim()}”`).join(', ')),
      h('td', { class: 'num' }, contributorsPot !== null ? ctx.fmtOpen((contributorsPot * BigInt(c.weight_ppm)) / 1000000n, 8) : ''));
  }), { id: 'attribution-table' }));
  if (fee !== null) {
    const unattributed = contributorsPot - contributions.reduce((n, c) => n + (contributorsPot * BigInt(c.weight_ppm)) / 1000000n, 0n);
    parts.push(h('div', { class: 'card', id: 'fee' }, h('h3', null, `Fee ${ctx.fmtOpen(fee, 8)}`), table(ctx, ['to', 'share', 'amount'], [
      ['platform (treasury)', bps(split.platformBps), ctx.fmtOpen(share(split.platformBps), 8)],
      ['model owner', bps(split.modelOwnerBps), ctx.fmtOpen(share(split.modelOwnerBps), 8)],
      ['stakers', bps(split.stakersBps), ctx.fmtOpen(share(split.stakersBps), 8)],
      ['contributors (by weight, above)', bps(split.contributorsBps), ctx.fmtOpen(contributorsPot, 8)],
      ['of which unattributed → model owner', '', ctx.fmtOpen(unattributed, 8)],
    ]), h('p', { class: 'muted' }, 'At the governed prices and split now (while RLHF validators exist, a governed slice of the stakers\' share funds them).')));
    const settled = h('div', { id: 'settlement' }, h('p', { class: 'muted' }, `receipt: journaled (request ${ctx.short(attribution.receipt.request_id)}); waiting for the node's recorder to put it on chain…`));
    parts.push(settled);
    followReceipt(ctx, attribution.receipt.request_id, settled);
  }
  box.replaceChildren(...parts);
}

/// Polls the chain until the call's receipt is recorded and settled; shows what was paid.
function followReceipt(ctx, requestId, box) {
  const { h } = ctx;
  let done = false;
  const check = async () => {
    if (done) return;
    const req = await logs(ctx, 'inference', 'InferenceRequest', [requestId]);
    if (!req.length) return;
    const receiptId = req[0].args.receiptId;
    const topic = [ctx.ethers.zeroPadValue(ctx.ethers.toBeHex(receiptId), 32)];
    const [settledLogs, paid] = await Promise.all([logs(ctx, 'inference', 'FeeSettled', topic), logs(ctx, 'inference', 'ContributorPaid', topic)]);
    const receipt = await ctx.call('inference', 'getReceipt', [receiptId]);
    const rows = [h('p', null, `On chain: receipt #${receiptId} (fee ${ctx.fmtOpen(receipt.fee, 8)}) recorded in `, ctx.link(req[0].log.transactionHash), receipt.settled ? ', settled.' : ', not settled yet.')];
    if (settledLogs.length) {
      const s = settledLogs[0].args;
      rows.push(table(ctx, ['platform', 'model owner', 'stakers', 'contributors'], [[ctx.fmtOpen(s.platform, 8), ctx.fmtOpen(s.modelOwner, 8), ctx.fmtOpen(s.stakers, 8), ctx.fmtOpen(s.contributors, 8)]]));
    }
    if (paid.length) {
      rows.push(table(ctx, ['contribution', 'contributor', 'paid'], paid.map((p) => [`#${p.args.contributionId}`, ctx.link(p.args.contributor), ctx.fmtOpen(p.args.amount, 8)])));
    }
    box.replaceChildren(...rows);
    if (receipt.settled) done = true;
  };
  ctx.every(2000, check);
}
