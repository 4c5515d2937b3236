// Explorer: the latest blocks and transactions (refreshed live), a block, a transaction with its
// module call and events decoded from contracts/*.sol, and an address (balance, nonce, stake,
// its transactions through the node's bounded /v1/explorer/txs scan).
//
// Routes: #/explorer, #/explorer/block/N, #/explorer/tx/HASH, #/explorer/address/ADDR.

const LATEST_BLOCKS = 12;
const LATEST_TX_SCAN = 200; // blocks scanned back for the latest transactions
const REFRESH_MS = 3000;

export async function render(root, ctx, params) {
  const [kind, id] = params;
  root.append(searchBox(ctx));
  if (kind === 'block' && id !== undefined) return blockPage(root, ctx, id);
  if (kind === 'tx' && id) return txPage(root, ctx, id);
  if (kind === 'address' && id) return addressPage(root, ctx, id);
  return latestPage(root, ctx);
}

function searchBox(ctx) {
  const { h } = ctx;
  const input = h('input', { id: 'explorer-search', placeholder: 'Block number, transaction hash or address', size: 70 });
  const go = async (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (/^\d+$/.test(q)) location.hash = `#/explorer/block/${q}`;
    else if (/^0x[0-9a-fA-F]{40}$/.test(q)) location.hash = `#/explorer/address/${q}`;
    else if (/^0x[0-9a-fA-F]{64}$/.test(q)) {
      const tx = await ctx.rpc('eth_getTransactionByHash', [q]).catch(() => null);
      if (tx) location.hash = `#/explorer/tx/${q}`;
      else {
        const b = await ctx.rpc('eth_getBlockByHash', [q, false]).catch(() => null);
        if (b) location.hash = `#/explorer/block/${Number(b.number)}`;
        else ctx.toast(`no transaction or block ${q}`, 'error');
      }
    } else ctx.toast('enter a block number, a 32-byte hash or a 20-byte address', 'error');
  };
  return h('form', { class: 'row search', onsubmit: go }, input, h('button', { type: 'submit' }, 'Search'));
}

function methodLabel(ctx, tx) {
  const input = tx.input || tx.data || '0x';
  if (!tx.to) return 'create';
  const call = ctx.decodeCall(tx.to, input);
  if (call) return `${call.module.replace(/^I/, '').toLowerCase()}.${call.name}`;
  if (input === '0x') return 'transfer';
  return input.slice(0, 10);
}

// ------------------------------------------------------------------------------- latest

async function latestPage(root, ctx) {
  const { h } = ctx;
  root.append(h('h1', null, 'Explorer'));
  const blocksBody = h('tbody', { id: 'latest-blocks' });
  const txsBody = h('tbody', { id: 'latest-txs' });
  root.append(
    h('h2', null, 'Latest transactions'),
    h('table', null, h('thead', null, h('tr', null, h('th', null, 'Hash'), h('th', null, 'Block'), h('th', null, 'From'), h('th', null, 'To'), h('th', null, 'Call'), h('th', { class: 'num' }, 'Value'))), txsBody),
    h('h2', null, 'Latest blocks'),
    h('table', null, h('thead', null, h('tr', null, h('th', null, 'Block'), h('th', null, 'Hash'), h('th', null, 'Time'), h('th', { class: 'num' }, 'Txs'), h('th', { class: 'num' }, 'Gas used'))), blocksBody),
  );
  const txCache = new Map(); // block number → full block (only blocks with txs are kept)
  let lastHead = -1;
  const refresh = async () => {
    const head = Number(await ctx.rpc('eth_blockNumber'));
    if (head === lastHead) return;
    lastHead = head;
    const nums = [];
    for (let n = head; n >= 0 && nums.length < LATEST_BLOCKS; n--) nums.push(n);
    const blocks = await Promise.all(nums.map((n) => ctx.rpc('eth_getBlockByNumber', [ctx.ethers.toQuantity(n), true])));
    blocksBody.replaceChildren(...blocks.filter(Boolean).map((b) => h('tr', { dataset: { block: Number(b.number) } },
      h('td', null, ctx.link(Number(b.number))),
      h('td', { class: 'mono' }, ctx.short(b.hash)),
      h('td', null, ctx.fmtAge(Number(b.timestamp))),
      h('td', { class: 'num' }, b.transactions.length),
      h('td', { class: 'num' }, Number(b.gasUsed).toLocaleString()))));
    for (const b of blocks) if (b && b.transactions.length) txCache.set(Number(b.number), b);
    // Walk further back (bounded) for blocks with transactions, since idle blocks are empty.
    const txs = [];
    for (let n = head; n >= 0 && n > head - LATEST_TX_SCAN && txs.length < 15; n--) {
      let b = txCache.get(n);
      if (!b && n < head - LATEST_BLOCKS) {
        if (txCache.scanned !== undefined && n >= txCache.scanned) continue;
        b = await ctx.rpc('eth_getBlockByNumber', [ctx.ethers.toQuantity(n), true]);
        if (b && b.transactions.length) txCache.set(n, b);
      }
      if (b) for (const t of [...b.transactions].reverse()) txs.push(t);
    }
    txCache.scanned = Math.max(0, head - LATEST_TX_SCAN);
    txsBody.replaceChildren(...(txs.length ? txs.slice(0, 15).map((t) => txRow(ctx, t)) : [h('tr', null, h('td', { colspan: 6, class: 'muted' }, `No transactions in the last ${LATEST_TX_SCAN} blocks.`))]));
  };
  await refresh();
  ctx.every(REFRESH_MS, refresh);
}

function txRow(ctx, t) {
  const { h } = ctx;
  return h('tr', { dataset: { tx: t.hash } },
    h('td', null, ctx.link(t.hash)),
    h('td', null, ctx.link(Number(t.blockNumber))),
    h('td', null, ctx.link(t.from)),
    h('td', null, t.to ? ctx.link(t.to, ctx.moduleAt(t.to) || undefined) : 'create'),
    h('td', { class: 'mono' }, methodLabel(ctx, t)),
    h('td', { class: 'num' }, ctx.fmtOpen(t.value)));
}

// -------------------------------------------------------------------------------- block

async function blockPage(root, ctx, id) {
  const { h } = ctx;
  const n = Number(id);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`"${id}" is not a block number`);
  const b = await ctx.rpc('eth_getBlockByNumber', [ctx.ethers.toQuantity(n), true]);
  if (!b) {
    root.append(h('h1', null, `Block ${n}`), h('p', { class: 'error' }, `Block ${n} does not exist yet (the head is ${Number(await ctx.rpc('eth_blockNumber'))}).`));
    return;
  }
  root.append(
    h('h1', null, `Block ${n}`),
    h('div', { class: 'row' }, n > 0 ? h('a', { href: `#/explorer/block/${n - 1}` }, '← previous') : null, h('a', { href: `#/explorer/block/${n + 1}` }, 'next →')),
    h('div', { class: 'card' }, kv(ctx, [
      ['Hash', h('span', { class: 'mono' }, b.hash)],
      ['Parent', n > 0 ? h('a', { href: `#/explorer/block/${n - 1}`, class: 'mono' }, b.parentHash) : h('span', { class: 'mono' }, b.parentHash)],
      ['Time', `${ctx.fmtTime(Number(b.timestamp))} (${ctx.fmtAge(Number(b.timestamp))})`],
      ['Transactions', b.transactions.length],
      ['Gas used', `${Number(b.gasUsed).toLocaleString()} of ${Number(b.gasLimit).toLocaleString()}`],
      ['Base fee', `${BigInt(b.baseFeePerGas || 0)} wei`],
      ['State root', h('span', { class: 'mono' }, b.stateRoot)],
      ['Transactions root', h('span', { class: 'mono' }, b.transactionsRoot)],
      ['Receipts root', h('span', { class: 'mono' }, b.receiptsRoot)],
    ])),
    h('h2', null, 'Transactions'),
    b.transactions.length
      ? h('table', null, h('thead', null, h('tr', null, h('th', null, 'Hash'), h('th', null, 'Block'), h('th', null, 'From'), h('th', null, 'To'), h('th', null, 'Call'), h('th', { class: 'num' }, 'Value'))), h('tbody', { id: 'block-txs' }, b.transactions.map((t) => txRow(ctx, t))))
      : h('p', { class: 'muted' }, 'No transactions (an idle block: the sequencer seals one every block time so the clock moves).'),
  );
}

function kv(ctx, rows) {
  const { h } = ctx;
  return h('dl', { class: 'kv' }, rows.filter(Boolean).flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

// ----------------------------------------------------------------------------------- tx

async function txPage(root, ctx, hash) {
  const { h } = ctx;
  if (!/^0x[0-9a-fA-F]{64}$/.test(hash)) throw new Error(`"${hash}" is not a transaction hash`);
  const [tx, receipt] = await Promise.all([
    ctx.rpc('eth_getTransactionByHash', [hash]),
    ctx.rpc('eth_getTransactionReceipt', [hash]),
  ]);
  root.append(h('h1', null, 'Transaction'));
  if (!tx) {
    root.append(h('p', { class: 'error' }, `No transaction ${hash} on this chain.`));
    return;
  }
  const block = tx.blockNumber ? Number(tx.blockNumber) : null;
  const time = block !== null ? await ctx.blockTime(block) : null;
  const gasPrice = BigInt(receipt?.effectiveGasPrice || tx.gasPrice || 0);
  const fee = receipt ? BigInt(receipt.gasUsed) * gasPrice : null;
  const status = receipt ? (receipt.status === '0x1' ? h('span', { class: 'ok', id: 'tx-status' }, 'Success') : h('span', { class: 'error', id: 'tx-status' }, 'Failed')) : h('span', { class: 'muted', id: 'tx-status' }, 'Pending');
  const call = tx.to ? ctx.decodeCall(tx.to, tx.input) : null;
  root.append(h('div', { class: 'card' }, kv(ctx, [
    ['Hash', h('span', { class: 'mono', id: 'tx-hash' }, tx.hash)],
    ['Status', status],
    ['Block', block !== null ? h('span', null, ctx.link(block), ` · index ${Number(tx.transactionIndex)}`) : 'pending'],
    time ? ['Time', `${ctx.fmtTime(time)} (${ctx.fmtAge(time)})`] : null,
    ['From', ctx.link(tx.from, tx.from)],
    ['To', tx.to ? h('span', null, ctx.link(tx.to, tx.to), ctx.moduleAt(tx.to) ? h('span', { class: 'badge' }, ctx.moduleAt(tx.to)) : '') : 'contract creation'],
    ['Value', ctx.fmtOpen(tx.value)],
    ['Nonce', Number(tx.nonce)],
    ['Gas', receipt ? `${Number(receipt.gasUsed).toLocaleString()} used of ${Number(tx.gas).toLocaleString()}` : Number(tx.gas).toLocaleString()],
    ['Fee', fee !== null ? `${ctx.fmtOpen(fee)} (${gasPrice} wei/gas)` : ''],
    ['Type', Number(tx.type)],
  ])));

  root.append(h('h2', null, 'Call'));
  if (call) {
    root.append(h('div', { class: 'card', id: 'tx-call' },
      h('p', null, h('strong', { class: 'mono', id: 'tx-method' }, `${call.module}.${call.name}`), ' ', h('span', { class: 'muted mono' }, call.signature)),
      ctx.argsTable(call.fragment.inputs, call.args),
      innerCalls(ctx, call.args)));
  } else if (tx.input && tx.input !== '0x') {
    root.append(h('p', { class: 'muted' }, 'Not a call of a native module this dashboard knows:'), h('pre', null, tx.input));
  } else {
    root.append(h('p', { class: 'muted', id: 'tx-call' }, 'A plain OPEN transfer (no call data).'));
  }

  root.append(h('h2', null, `Events (${receipt ? receipt.logs.length : 0})`));
  const events = h('div', { id: 'tx-events' });
  for (const log of receipt ? receipt.logs : []) {
    const d = ctx.decodeLog(log);
    events.append(h('div', { class: 'card event', dataset: { event: d ? d.name : 'unknown' } },
      h('p', null, h('strong', { class: 'mono' }, d ? `${d.module}.${d.name}` : 'unknown event'), ' from ', ctx.link(log.address, ctx.moduleAt(log.address) || undefined), h('span', { class: 'muted' }, ` · log ${Number(log.logIndex)}`)),
      d ? ctx.argsTable(d.fragment.inputs, d.args) : h('pre', null, `topics: ${log.topics.join('\n        ')}\ndata: ${log.data}`)));
  }
  if (!events.childElementCount) events.append(h('p', { class: 'muted' }, 'No events.'));
  root.append(events);
  root.append(h('details', null, h('summary', null, 'Raw input'), h('pre', null, tx.input || '0x')));
}

/// The module calls a governor proposal carries (targets + calldatas), decoded too.
function innerCalls(ctx, args) {
  const { h } = ctx;
  let targets;
  let datas;
  try {
    targets = args.targets;
    datas = args.calldatas;
  } catch (e) {
    return null;
  }
  if (!targets || !datas || !targets.length) return null;
  return h('div', { id: 'tx-inner-calls' }, h('p', null, h('strong', null, 'Calls it proposes')),
    [...targets].map((t, i) => {
      const d = ctx.decodeCall(t, datas[i]);
      return h('div', { class: 'card' },
        h('p', { class: 'mono' }, d ? `${d.module}.${d.name}` : `call to ${t}`),
        d ? ctx.argsTable(d.fragment.inputs, d.args) : h('pre', null, datas[i]));
    }));
}

// ------------------------------------------------------------------------------ address

async function addressPage(root, ctx, raw) {
  const { h } = ctx;
  let address;
  try {
    address = ctx.ethers.getAddress(raw);
  } catch (e) {
    throw new Error(`"${raw}" is not an address`);
  }
  const module = ctx.moduleAt(address);
  const [balance, nonce, stake, votes] = await Promise.all([
    ctx.rpc('eth_getBalance', [address, 'latest']),
    ctx.rpc('eth_getTransactionCount', [address, 'latest']),
    ctx.call('staking', 'stakeOf', [address]).catch(() => null),
    ctx.call('staking', 'getVotes', [address]).catch(() => null),
  ]);
  root.append(
    h('h1', null, module ? `${module} module` : 'Address'),
    h('div', { class: 'card' }, kv(ctx, [
      ['Address', h('span', { class: 'mono', id: 'address' }, address)],
      module ? ['Module', h('span', null, `native ${module} at this address (interface contracts/${module}.sol)`)] : null,
      ['Balance', h('span', { id: 'address-balance' }, ctx.fmtOpen(balance))],
      ['Nonce', h('span', { id: 'address-nonce' }, Number(nonce))],
      stake !== null ? ['Staked', ctx.fmtOpen(stake)] : null,
      votes !== null ? ['Voting power', ctx.fmtOpen(votes)] : null,
      ['Rewards', h('a', { href: `#/rewards/${address}` }, 'what this address earned →')],
    ])),
    h('h2', null, 'Transactions'),
    h('p', { class: 'muted' }, 'Sent by or sent to this address, newest first. The node keeps no index of transactions by address, so it scans blocks backwards (at most 5,000 per request); "Older" goes on.'),
  );
  const body = h('tbody', { id: 'address-txs' });
  const status = h('p', { class: 'muted', id: 'address-scan' });
  const more = h('button', { class: 'secondary', type: 'button' }, 'Older');
  root.append(h('table', null, h('thead', null, h('tr', null, h('th', null, 'Hash'), h('th', null, 'Block'), h('th', null, 'From'), h('th', null, 'To'), h('th', null, 'Call'), h('th', { class: 'num' }, 'Value'))), body), status, more);
  let before = null;
  const load = async () => {
    const q = new URLSearchParams({ address, scan: '5000', limit: '50' });
    if (before !== null) q.set('before', String(before));
    const r = await ctx.rest(`/v1/explorer/txs?${q}`);
    for (const t of r.txs) body.append(txRow(ctx, { ...t, blockNumber: t.blockNumber }));
    before = r.next;
    status.textContent = r.scannedFrom === null ? 'No blocks yet.' : `Scanned blocks ${r.scannedFrom}–${r.scannedTo}${r.next === null ? ' (down to genesis)' : ''}; ${body.childElementCount} transactions shown.`;
    more.hidden = r.next === null;
  };
  more.addEventListener('click', () => ctx.busy(more, load));
  await load();
}
