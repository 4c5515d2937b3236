// Rewards: what an address earned, by role and over time, from the chain's own events (the
// same source `openledger rewards ADDR` reads):
//   contributor  IInference.ContributorPaid naming it
//   model owner  IInference.FeeSettled's model-owner share of receipts of its adapters
//                (IModel.getAdapter owner; receipts from InferenceRecorded) and IModel.ModelBountyPaid
//   staker       IStaking.RewardsClaimed, and pendingRewards (accrued, not yet claimed)
//   validator    IRlhf.ValidatorRewarded (and ValidatorSlashed, shown as a loss)
//   platform     the treasury's share of every FeeSettled (for the treasury address)
// Routes: #/rewards (the chosen account, or pick one), #/rewards/ADDR.

import { lineChart } from '../chart.js';

const MAX_ADAPTERS = 500;
const ROLES = ['contributor', 'model owner', 'staker', 'validator', 'platform'];
const TREASURY = '0x0000000000000000000000000000000000001000';

export async function render(root, ctx, params) {
  const { h } = ctx;
  root.append(h('h1', null, 'Rewards'));
  const input = h('input', { id: 'rewards-address', placeholder: '0x… address', size: 46 });
  const form = h('form', { class: 'row', onsubmit: (e) => {
    e.preventDefault();
    const a = input.value.trim();
    if (!/^0x[0-9a-fA-F]{40}$/.test(a)) return ctx.toast('enter a 20-byte hex address', 'error');
    location.hash = `#/rewards/${a}`;
  } }, input, h('button', { type: 'submit' }, 'Show'));
  root.append(form);
  const target = params[0] || ctx.account();
  // Without an address in the route, the page follows the chosen account.
  if (!params[0]) ctx.onAccountChange((a) => { if (a) location.hash = `#/rewards/${a}`; });
  if (!target) {
    root.append(h('p', { class: 'muted' }, 'Enter an address, or choose an account (top right) to see its earnings.'));
    root.append(await topContributors(ctx));
    return;
  }
  let address;
  try {
    address = ctx.ethers.getAddress(target);
  } catch (e) {
    throw new Error(`"${target}" is not an address`);
  }
  input.value = address;
  root.append(h('p', null, 'Earnings of ', ctx.link(address, address), ctx.moduleAt(address) ? ` (${ctx.moduleAt(address)})` : ''));
  const e = await earnings(ctx, address);
  root.append(summary(ctx, e), timeline(ctx, e), paymentsTable(ctx, e));
}


/// Every earning event of `address` as {role, amount, block, tx, detail}, plus pending rewards.
async function earnings(ctx, address) {
  const inf = ctx.iface('inference');
  const staking = ctx.iface('staking');
  const rlhf = ctx.iface('rlhf');
  const model = ctx.iface('model');
  const who = ctx.ethers.zeroPadValue(address, 32);
  const items = [];
  const add = (role, amount, log, detail) => items.push({ role, amount: BigInt(amount), block: Number(log.blockNumber), tx: log.transactionHash, detail });

  const [paid, claimed, rewarded, slashed, bounties, pending, count] = await Promise.all([
    ctx.getLogs({ address: ctx.moduleAddress('inference'), topics: [inf.getEvent('ContributorPaid').topicHash, null, null, who] }),
    ctx.getLogs({ address: ctx.moduleAddress('staking'), topics: [staking.getEvent('RewardsClaimed').topicHash, who] }),
    ctx.getLogs({ address: ctx.moduleAddress('rlhf'), topics: [rlhf.getEvent('ValidatorRewarded').topicHash, null, who] }),
    ctx.getLogs({ address: ctx.moduleAddress('rlhf'), topics: [rlhf.getEvent('ValidatorSlashed').topicHash, null, who] }),
    ctx.getLogs({ address: ctx.moduleAddress('model'), topics: [model.getEvent('ModelBountyPaid').topicHash, null, null, who] }),
    ctx.call('staking', 'pendingRewards', [address]),
    ctx.call('model', 'adapterCount', []),
  ]);
  for (const l of paid) {
    const d = ctx.decodeLog(l).args;
    add('contributor', d.amount, l, `contribution ${d.contributionId}, receipt ${d.receiptId}`);
  }
  for (const l of claimed) add('staker', ctx.decodeLog(l).args.amount, l, 'rewards claimed');
  for (const l of rewarded) {
    const d = ctx.decodeLog(l).args;
    add('validator', d.amount, l, `RLHF round ${d.roundId}`);
  }
  for (const l of slashed) {
    const d = ctx.decodeLog(l).args;
    add('validator', -BigInt(d.amount), l, `slashed in RLHF round ${d.roundId}${d.revealed ? ' (deviated)' : ' (did not reveal)'}`);
  }
  for (const l of bounties) {
    const d = ctx.decodeLog(l).args;
    add('model owner', d.bounty, l, `bounty of model proposal ${d.proposalId} (adapter ${d.adapterId})`);
  }

  // As a model owner: its adapters' settled receipts (as the CLI reads them).
  const n = Math.min(Number(count), MAX_ADAPTERS);
  const adapters = (await Promise.all(Array.from({ length: n }, (_, i) => ctx.call('model', 'getAdapter', [i + 1]).catch(() => null))))
    .filter((a) => a && a.owner.toLowerCase() === address.toLowerCase())
    .map((a) => Number(a.id));
  const isTreasury = address.toLowerCase() === TREASURY;
  if (adapters.length || isTreasury) {
    const settled = await ctx.getLogs({ address: ctx.moduleAddress('inference'), topics: [inf.getEvent('FeeSettled').topicHash] });
    let mine = new Map();
    if (adapters.length) {
      const recorded = await ctx.getLogs({ address: ctx.moduleAddress('inference'), topics: [inf.getEvent('InferenceRecorded').topicHash, null, adapters.map((a) => ctx.ethers.zeroPadValue(ctx.ethers.toBeHex(a), 32))] });
      mine = new Map(recorded.map((l) => { const d = ctx.decodeLog(l).args; return [d.receiptId, Number(d.adapterId)]; }));
    }
    for (const l of settled) {
      const d = ctx.decodeLog(l).args;
      if (mine.has(d.receiptId)) add('model owner', d.modelOwner, l, `receipt ${d.receiptId} of adapter ${mine.get(d.receiptId)}`);
      if (isTreasury) add('platform', d.platform, l, `receipt ${d.receiptId}`);
    }
  }
  items.sort((a, b) => a.block - b.block);
  const blocks = [...new Set(items.map((i) => i.block))];
  const times = new Map(await Promise.all(blocks.slice(-400).map(async (b) => [b, await ctx.blockTime(b)])));
  for (const i of items) i.time = times.get(i.block) ?? null;
  return { address, items, pending, adapters };
}

function summary(ctx, e) {
  const { h } = ctx;
  const total = (role) => e.items.filter((i) => i.role === role).reduce((s, i) => s + i.amount, 0n);
  const count = (role) => e.items.filter((i) => i.role === role).length;
  const all = e.items.reduce((s, i) => s + i.amount, 0n) + e.pending;
  const card = (role, label, extra) => h('div', { class: 'stat', dataset: { role } },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value', id: `earned-${role.replace(' ', '-')}` }, ctx.fmtOpen(total(role))),
    h('div', { class: 'muted' }, extra));
  return h('div', null,
    h('div', { class: 'grid', id: 'rewards-summary' },
      h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Total'), h('div', { class: 'value', id: 'earned-total' }, ctx.fmtOpen(all)), h('div', { class: 'muted' }, 'including pending staking rewards')),
      card('contributor', 'As a contributor', `${count('contributor')} payments for attributed inferences`),
      card('model owner', 'As a model owner', `${count('model owner')} settlements · ${e.adapters.length} adapters`),
      h('div', { class: 'stat', dataset: { role: 'staker' } }, h('div', { class: 'label' }, 'As a staker'),
        h('div', { class: 'value', id: 'earned-staker' }, ctx.fmtOpen(total('staker'))),
        h('div', { class: 'muted', id: 'pending-staker' }, `claimed; ${ctx.fmtOpen(e.pending)} pending`),
        claimButton(ctx, e)),
      card('validator', 'As an RLHF validator', `${count('validator')} rewards and slashes`),
      e.items.some((i) => i.role === 'platform') ? card('platform', 'As the platform (treasury)', 'its share of settled fees') : null));
}

/// "Claim" for the chosen account's own pending staking rewards (IStaking.claimRewards).
function claimButton(ctx, e) {
  const mine = ctx.account() && ctx.account().toLowerCase() === e.address.toLowerCase();
  if (!mine || e.pending === 0n) return null;
  const b = ctx.h('button', { id: 'claim-rewards', type: 'button' }, `Claim ${ctx.fmtOpen(e.pending)}`);
  b.addEventListener('click', () => ctx.busy(b, async () => {
    const r = await ctx.send('staking', 'claimRewards', []);
    ctx.toast(`Rewards claimed (tx ${ctx.short(r.transactionHash)})`, 'ok');
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  }));
  return b;
}

function timeline(ctx, e) {
  const { h } = ctx;
  const dated = e.items.filter((i) => i.time !== null);
  if (!dated.length) return h('p', { class: 'muted', id: 'rewards-chart-empty' }, 'Nothing earned yet: no payments on chain for this address.');
  const chart = lineChart({
    id: 'rewards-chart',
    title: 'Cumulative earnings (OPEN)',
    series: ROLES.filter((r) => dated.some((i) => i.role === r)),
    xFormat: (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour12: false }),
  });
  for (const role of ROLES) {
    let sum = 0n;
    const pts = [];
    for (const i of dated.filter((x) => x.role === role)) {
      sum += i.amount;
      pts.push([i.time, Number(ctx.ethers.formatEther(sum))]);
    }
    if (pts.length) chart.set(role, pts);
  }
  return h('div', { class: 'card' }, chart.el);
}

function paymentsTable(ctx, e) {
  const { h } = ctx;
  const rows = [...e.items].reverse().slice(0, 200);
  return h('div', null,
    h('h2', null, 'Payments'),
    rows.length
      ? h('table', null,
        h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Role'), h('th', { class: 'num' }, 'Amount'), h('th', null, 'For'), h('th', null, 'Transaction'))),
        h('tbody', { id: 'rewards-payments' }, rows.map((i) => h('tr', { dataset: { role: i.role, tx: i.tx } },
          h('td', null, i.time ? ctx.fmtTime(i.time) : ctx.link(i.block)),
          h('td', null, i.role),
          h('td', { class: `num ${i.amount < 0n ? 'error' : ''}` }, ctx.fmtOpen(i.amount)),
          h('td', null, i.detail),
          h('td', null, ctx.link(i.tx))))))
      : h('p', { class: 'muted' }, 'No payments yet.'));
}

/// Everyone paid as a contributor, by total (from every ContributorPaid).
async function topContributors(ctx) {
  const { h } = ctx;
  const inf = ctx.iface('inference');
  const logs = await ctx.getLogs({ address: ctx.moduleAddress('inference'), topics: [inf.getEvent('ContributorPaid').topicHash] });
  const totals = new Map();
  for (const l of logs) {
    const d = ctx.decodeLog(l).args;
    const t = totals.get(d.contributor) || { amount: 0n, n: 0 };
    t.amount += d.amount;
    t.n += 1;
    totals.set(d.contributor, t);
  }
  const rows = [...totals].sort((a, b) => (b[1].amount > a[1].amount ? 1 : b[1].amount < a[1].amount ? -1 : 0)).slice(0, 20);
  return h('div', null, h('h2', null, 'Top contributors'),
    rows.length
      ? h('table', { id: 'top-contributors' },
        h('thead', null, h('tr', null, h('th', null, 'Contributor'), h('th', { class: 'num' }, 'Earned'), h('th', { class: 'num' }, 'Payments'))),
        h('tbody', null, rows.map(([a, t]) => h('tr', null,
          h('td', null, h('a', { href: `#/rewards/${a}`, class: 'mono' }, a)),
          h('td', { class: 'num' }, ctx.fmtOpen(t.amount)),
          h('td', { class: 'num' }, t.n)))))
      : h('p', { class: 'muted' }, 'No contributor has been paid yet.'));
}
