// Governance through the governor module (contracts/IGovernor.sol, OpenZeppelin Governor
// semantics): the settings in force, your voting power (stake OPEN for votes, delegate back to
// yourself), a parameter-change proposal built from the parameters in force (IParams.setParam
// calls, one per changed group as `openledger gov propose --set` builds them), the proposals
// with their states and votes; a proposal's page: its calls decoded, the votes with reasons,
// its transactions, and vote / queue / execute / cancel as real transactions.
//
// Routes: #/governance, #/governance/ID (ID in decimal or 0x hex).

const STATES = ['Pending', 'Active', 'Canceled', 'Defeated', 'Succeeded', 'Queued', 'Expired', 'Executed'];
const SUPPORT = ['Against', 'For', 'Abstain'];
const LIST_LIMIT = 25;
const REFRESH_MS = 2000;

export async function render(root, ctx, params) {
  if (params[0]) return proposalPage(root, ctx, params[0]);
  return overview(root, ctx);
}

async function paramsInForce(ctx) {
  return JSON.parse(await ctx.call('params', 'paramsJson', []));
}

/// Every settable key of the parameter set, dotted, with its current value (call_gas one by one).
function flatten(obj, prefix = '') {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) out.push(...flatten(v, key));
    else out.push([key, v]);
  }
  return out;
}

/// The JSON value of `raw` for `key`: a string where the parameter is a string (OPEN amounts),
/// else JSON (numbers, booleans), as the CLI's `--set` reads it.
function typedValue(current, key, raw) {
  const now = key.split('.').reduce((o, k) => (o == null ? undefined : o[k]), current);
  if (typeof now === 'string' && !raw.startsWith('"')) return raw;
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new Error(`${key}=${raw}: the value is not JSON (numbers: 6000; text in quotes)`);
  }
}

/// setParam calls for `changes` ([key, raw]): keys of one nested group (fee_split.*) become one
/// call setting the whole group, since the chain validates the set after each call.
export function setParamCalls(current, changes) {
  const groups = new Map();
  for (const [key, raw] of changes) {
    const value = typedValue(current, key, raw);
    const [g, ...rest] = key.split('.');
    if (rest.length && g !== 'call_gas' && current[g] && typeof current[g] === 'object') {
      if (!groups.has(g)) groups.set(g, structuredClone(current[g]));
      groups.get(g)[rest.join('.')] = value;
    } else {
      groups.set(key, value);
    }
  }
  return [...groups].map(([key, value]) => ({ key, json: JSON.stringify(value) }));
}

function badge(ctx, state) {
  const name = STATES[Number(state)] || `state ${state}`;
  return ctx.h('span', { class: `badge ${name}`, dataset: { state: name } }, name);
}

function firstLine(text) {
  return (text || '').split('\n')[0].slice(0, 120) || '(no description)';
}

function idOf(raw) {
  try {
    return BigInt(raw);
  } catch (e) {
    throw new Error(`"${raw}" is not a proposal id`);
  }
}

// ------------------------------------------------------------------------------- overview

async function overview(root, ctx) {
  const { h } = ctx;
  root.append(h('h1', null, 'Governance'));
  const current = await paramsInForce(ctx);
  const settings = h('div', { class: 'grid', id: 'governance-settings' },
    stat(ctx, 'Voting delay', `${current.voting_delay_secs} s`),
    stat(ctx, 'Voting period', `${current.voting_period_secs} s`),
    stat(ctx, 'Proposal threshold', ctx.fmtOpen(await ctx.call('governor', 'proposalThreshold', []))),
    stat(ctx, 'Quorum', `${current.quorum_bps / 100}% of the stake at the snapshot`),
    stat(ctx, 'Timelock', `${current.timelock_delay_secs} s, then ${current.timelock_grace_secs} s to execute`),
  );
  root.append(settings);

  const power = h('div', { class: 'card', id: 'voting-power' });
  root.append(h('h2', null, 'Your voting power'), power);
  await votingPower(ctx, power);
  ctx.onAccountChange(() => votingPower(ctx, power));

  root.append(h('h2', null, 'New parameter proposal'), proposeForm(ctx, current));

  const list = h('div', { id: 'proposals' });
  root.append(h('h2', null, 'Proposals'), list);
  const refresh = async () => list.replaceChildren(await proposalsTable(ctx));
  await refresh();
  ctx.every(REFRESH_MS * 2, refresh);
}

function stat(ctx, label, value) {
  return ctx.h('div', { class: 'stat' }, ctx.h('div', { class: 'label' }, label), ctx.h('div', { class: 'value' }, value));
}

async function votingPower(ctx, box) {
  const { h } = ctx;
  const who = ctx.account();
  if (!who) {
    box.replaceChildren(h('p', { class: 'muted' }, 'Choose an account (top right) to stake, propose and vote.'));
    return;
  }
  const clock = Number(await ctx.call('governor', 'clock', []));
  const [stake, votes, past, delegatee, threshold] = await Promise.all([
    ctx.call('staking', 'stakeOf', [who]),
    ctx.call('staking', 'getVotes', [who]),
    ctx.call('governor', 'getVotes', [who, clock - 1]).catch(() => 0n),
    ctx.call('staking', 'delegates', [who]),
    ctx.call('governor', 'proposalThreshold', []),
  ]);
  const amount = h('input', { id: 'stake-amount', type: 'number', min: '0', step: 'any', value: '100', size: 8 });
  const stakeBtn = h('button', { id: 'stake-button', type: 'submit' }, 'Stake');
  const self = delegatee.toLowerCase() === who.toLowerCase();
  const delegateBtn = h('button', { type: 'button', class: 'secondary', id: 'delegate-self' }, 'Count my stake for me');
  delegateBtn.addEventListener('click', () => ctx.busy(delegateBtn, async () => {
    const r = await ctx.send('staking', 'delegate', [who]);
    ctx.toast(`Votes delegated to yourself (tx ${ctx.short(r.transactionHash)})`, 'ok');
    await votingPower(ctx, box);
  }));
  box.replaceChildren(
    h('dl', { class: 'kv' },
      h('dt', null, 'Staked'), h('dd', { id: 'my-stake' }, ctx.fmtOpen(stake)),
      h('dt', null, 'Votes now'), h('dd', { id: 'my-votes' }, ctx.fmtOpen(votes)),
      h('dt', null, 'Votes usable for a new proposal'), h('dd', { id: 'my-proposal-votes', dataset: { enough: past >= threshold ? '1' : '0' } },
        ctx.fmtOpen(past), past >= threshold ? '' : h('span', { class: 'muted' }, ` (a proposer needs ${ctx.fmtOpen(threshold)} one second before proposing)`)),
      h('dt', null, 'Counted for'), h('dd', null, self ? 'yourself' : ctx.link(delegatee, delegatee))),
    h('form', { class: 'row', onsubmit: (e) => {
      e.preventDefault();
      ctx.busy(stakeBtn, async () => {
        const wei = ctx.ethers.parseEther(String(amount.value || '0'));
        if (wei <= 0n) throw new Error('stake a positive amount of OPEN');
        const r = await ctx.send('staking', 'stake', [], { value: wei });
        ctx.toast(`Staked ${ctx.fmtOpen(wei)} (tx ${ctx.short(r.transactionHash)})`, 'ok');
        await votingPower(ctx, box);
      });
    } }, h('label', null, 'Stake', amount, 'OPEN'), stakeBtn, self ? null : delegateBtn),
  );
  // Votes for proposals lag a second behind stake: refresh until they count.
  if (past < votes) setTimeout(() => { if (!ctx.signal.aborted && ctx.account() === who) votingPower(ctx, box); }, 1500);
}

function proposeForm(ctx, current) {
  const { h } = ctx;
  const keys = flatten(current).filter(([k]) => k !== 'chain_id');
  const list = h('datalist', { id: 'param-keys' }, keys.map(([k]) => h('option', { value: k })));
  const rows = h('div', { class: 'stack', id: 'param-changes' });
  const addRow = () => {
    const key = h('input', { class: 'param-key', list: 'param-keys', placeholder: 'parameter, e.g. fee_split.contributors_bps', size: 40 });
    const now = h('span', { class: 'muted param-now' });
    const value = h('input', { class: 'param-value', placeholder: 'new value', size: 16 });
    key.addEventListener('input', () => {
      const found = keys.find(([k]) => k === key.value.trim());
      now.textContent = found ? `now ${JSON.stringify(found[1])}` : '';
    });
    rows.append(h('div', { class: 'row' }, key, value, now));
  };
  addRow();
  const more = h('button', { type: 'button', class: 'secondary' }, 'Another change');
  more.addEventListener('click', addRow);
  const description = h('textarea', { id: 'proposal-description', rows: 3, placeholder: 'What the proposal does and why (its id depends on it)' });
  const submit = h('button', { type: 'submit', id: 'propose-button' }, 'Propose');
  const form = h('form', { class: 'card stack', id: 'propose-form' }, list, rows, more, h('label', null, 'Description', description), submit);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.busy(submit, async () => {
      const changes = [...rows.querySelectorAll('.row')]
        .map((r) => [r.querySelector('.param-key').value.trim(), r.querySelector('.param-value').value.trim()])
        .filter(([k, v]) => k || v);
      if (!changes.length) throw new Error('name at least one parameter and its new value');
      for (const [k, v] of changes) {
        if (!keys.some(([key]) => key === k) && !k.startsWith('call_gas.')) throw new Error(`unknown parameter "${k}" (pick one from the list)`);
        if (!v) throw new Error(`give ${k} a new value`);
      }
      const text = description.value.trim();
      if (!text) throw new Error('describe the proposal');
      const fresh = await paramsInForce(ctx);
      const calls = setParamCalls(fresh, changes);
      const params = ctx.iface('params');
      const targets = calls.map(() => ctx.moduleAddress('params'));
      const datas = calls.map((c) => params.encodeFunctionData('setParam', [c.key, c.json]));
      const receipt = await ctx.send('governor', 'propose', [targets, targets.map(() => 0n), datas, text]);
      const created = receipt.logs.map((l) => ctx.decodeLog(l)).find((d) => d && d.name === 'ProposalCreated');
      if (!created) throw new Error('the proposal transaction logged no ProposalCreated');
      ctx.toast(`Proposal created (tx ${ctx.short(receipt.transactionHash)})`, 'ok');
      location.hash = `#/governance/${created.args.proposalId}`;
    });
  });
  return form;
}

async function proposalsTable(ctx) {
  const { h } = ctx;
  const count = Number(await ctx.call('governor', 'proposalCount', []));
  if (!count) return h('p', { class: 'muted' }, 'No proposals yet.');
  const indexes = [];
  for (let i = count - 1; i >= 0 && indexes.length < LIST_LIMIT; i--) indexes.push(i);
  const rows = await Promise.all(indexes.map(async (i) => {
    const d = await ctx.call('governor', 'proposalDetailsAt', [i]);
    const id = d[0];
    const [state, votes, description] = await Promise.all([
      ctx.call('governor', 'state', [id]),
      ctx.call('governor', 'proposalVotes', [id]),
      ctx.call('governor', 'proposalDescription', [id]),
    ]);
    return h('tr', { dataset: { proposal: id.toString() } },
      h('td', null, h('a', { href: `#/governance/${id}`, class: 'mono', title: id.toString() }, ctx.short(ctx.ethers.toBeHex(id, 32), 4))),
      h('td', null, firstLine(description)),
      h('td', null, badge(ctx, state)),
      h('td', { class: 'num' }, ctx.fmtOpen(votes.forVotes)),
      h('td', { class: 'num' }, ctx.fmtOpen(votes.againstVotes)),
      h('td', { class: 'num' }, ctx.fmtOpen(votes.abstainVotes)));
  }));
  return h('table', null,
    h('thead', null, h('tr', null, h('th', null, 'Id'), h('th', null, 'Description'), h('th', null, 'State'), h('th', { class: 'num' }, 'For'), h('th', { class: 'num' }, 'Against'), h('th', { class: 'num' }, 'Abstain'))),
    h('tbody', null, rows),
    count > LIST_LIMIT ? h('caption', null, `the latest ${LIST_LIMIT} of ${count}`) : null);
}

// ------------------------------------------------------------------------------ a proposal

function relative(t, now) {
  const d = Number(t) - Number(now);
  return d >= 0 ? `in ${d} s` : `${-d} s ago`;
}

async function proposalPage(root, ctx, raw) {
  const { h } = ctx;
  const id = idOf(raw);
  let details;
  try {
    details = await ctx.call('governor', 'proposalDetails', [id]);
  } catch (e) {
    root.append(h('h1', null, 'Proposal'), h('p', { class: 'error' }, `No proposal ${raw}: ${e.message}`));
    return;
  }
  const [description, proposer] = await Promise.all([
    ctx.call('governor', 'proposalDescription', [id]),
    ctx.call('governor', 'proposalProposer', [id]),
  ]);
  root.append(
    h('p', null, h('a', { href: '#/governance' }, '← all proposals')),
    h('h1', null, firstLine(description)),
    h('p', { class: 'mono muted', id: 'proposal-id' }, id.toString()),
  );
  const status = h('div', { class: 'card', id: 'proposal-status' });
  const actionsBox = h('div', { class: 'card', id: 'proposal-actions' });
  const votesBox = h('div', { id: 'proposal-votes' });
  const historyBox = h('div', { id: 'proposal-history' });
  root.append(status, h('h2', null, 'Act'), actionsBox);
  root.append(h('h2', null, 'Description'), h('pre', { id: 'proposal-description-text' }, description));
  root.append(h('h2', null, 'Calls'), callsCard(ctx, details));
  root.append(h('h2', null, 'Votes'), votesBox, h('h2', null, 'Transactions'), historyBox);

  const support = h('select', { id: 'vote-support' }, SUPPORT.map((s, i) => h('option', { value: String(i) }, s)));
  support.value = '1';
  const reason = h('input', { id: 'vote-reason', placeholder: 'reason (optional)', size: 40 });
  const voteBtn = h('button', { id: 'vote-button', type: 'submit' }, 'Vote');
  const queueBtn = h('button', { id: 'queue-button', type: 'button' }, 'Queue');
  const executeBtn = h('button', { id: 'execute-button', type: 'button' }, 'Execute');
  const cancelBtn = h('button', { id: 'cancel-button', type: 'button', class: 'secondary' }, 'Cancel');
  const hint = h('p', { class: 'muted', id: 'act-hint' });
  const voteForm = h('form', { class: 'row', id: 'vote-form' }, support, reason, voteBtn);
  actionsBox.append(voteForm, h('div', { class: 'row' }, queueBtn, executeBtn, cancelBtn), hint);

  let view = null; // the latest state, for the buttons
  const act = (btn, fn, done) => ctx.busy(btn, async () => {
    const r = await fn();
    ctx.toast(`${done} (tx ${ctx.short(r.transactionHash)})`, 'ok');
    await refresh();
  });
  voteForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const s = Number(support.value);
    const why = reason.value.trim();
    act(voteBtn, () => (why ? ctx.send('governor', 'castVoteWithReason', [id, s, why]) : ctx.send('governor', 'castVote', [id, s])), `Voted ${SUPPORT[s]}`);
  });
  queueBtn.addEventListener('click', () => act(queueBtn, () => ctx.send('governor', 'queue(uint256)', [id]), 'Queued'));
  executeBtn.addEventListener('click', () => act(executeBtn, () => ctx.send('governor', 'execute(uint256)', [id]), 'Executed'));
  cancelBtn.addEventListener('click', () => act(cancelBtn, () => ctx.send('governor', 'cancel(uint256)', [id]), 'Canceled'));

  const refresh = async () => {
    const [state, clock, snapshot, deadline, eta, votes] = await Promise.all([
      ctx.call('governor', 'state', [id]),
      ctx.call('governor', 'clock', []),
      ctx.call('governor', 'proposalSnapshot', [id]),
      ctx.call('governor', 'proposalDeadline', [id]),
      ctx.call('governor', 'proposalEta', [id]),
      ctx.call('governor', 'proposalVotes', [id]),
    ]);
    const quorum = snapshot < clock ? await ctx.call('governor', 'quorum', [snapshot]).catch(() => null) : null;
    const who = ctx.account();
    const voted = who ? await ctx.call('governor', 'hasVoted', [id, who]) : false;
    const name = STATES[Number(state)];
    view = { name, clock, eta, voted };
    status.replaceChildren(h('dl', { class: 'kv' },
      h('dt', null, 'State'), h('dd', { id: 'proposal-state' }, badge(ctx, state)),
      h('dt', null, 'Proposer'), h('dd', null, ctx.link(proposer, proposer)),
      h('dt', null, 'Voting opens'), h('dd', null, `${ctx.fmtTime(snapshot)} (${relative(snapshot, clock)})`),
      h('dt', null, 'Voting closes'), h('dd', null, `${ctx.fmtTime(deadline)} (${relative(deadline, clock)})`),
      eta > 0n ? h('dt', null, 'Executable from') : null, eta > 0n ? h('dd', null, `${ctx.fmtTime(eta)} (${relative(eta, clock)})`) : null,
      h('dt', null, 'For'), h('dd', { id: 'votes-for' }, ctx.fmtOpen(votes.forVotes)),
      h('dt', null, 'Against'), h('dd', { id: 'votes-against' }, ctx.fmtOpen(votes.againstVotes)),
      h('dt', null, 'Abstain'), h('dd', { id: 'votes-abstain' }, ctx.fmtOpen(votes.abstainVotes)),
      h('dt', null, 'Quorum'), h('dd', null, quorum === null ? 'known once voting opens' : `${ctx.fmtOpen(quorum)} of for + abstain`)));
    voteBtn.disabled = !who || name !== 'Active' || voted;
    queueBtn.disabled = !who || name !== 'Succeeded';
    executeBtn.disabled = !who || name !== 'Queued' || clock < eta;
    cancelBtn.disabled = !who || name !== 'Pending' || who.toLowerCase() !== proposer.toLowerCase();
    hint.textContent = !who ? 'Choose an account to act.'
      : name === 'Pending' ? `Voting opens ${relative(snapshot, clock)}.`
      : name === 'Active' ? (voted ? 'You have voted; voting closes ' + relative(deadline, clock) + '.' : 'Voting is open.')
      : name === 'Succeeded' ? 'Passed: queue it into the timelock.'
      : name === 'Queued' ? (clock < eta ? `In the timelock: executable ${relative(eta, clock)}.` : 'Ready to execute.')
      : `This proposal is ${name}.`;
    await history(ctx, id, votesBox, historyBox);
  };
  await refresh();
  ctx.every(REFRESH_MS, refresh);
  ctx.onAccountChange(refresh);
}

function callsCard(ctx, details) {
  const { h } = ctx;
  const [targets, values, calldatas] = details;
  return h('div', { id: 'proposal-calls' }, [...targets].map((t, i) => {
    const d = ctx.decodeCall(t, calldatas[i]);
    return h('div', { class: 'card' },
      h('p', null, h('strong', { class: 'mono' }, d ? `${d.module}.${d.name}` : 'call'), ' to ', ctx.link(t, ctx.moduleAt(t) || t), values[i] > 0n ? ` with ${ctx.fmtOpen(values[i])}` : ''),
      d ? ctx.argsTable(d.fragment.inputs, d.args) : h('pre', null, calldatas[i]));
  }));
}

/// The proposal's votes (VoteCast logs) and its transactions (created, votes, queued, executed,
/// canceled), each linked to the explorer.
async function history(ctx, id, votesBox, historyBox) {
  const { h } = ctx;
  const gov = ctx.iface('governor');
  const topics = [[
    gov.getEvent('ProposalCreated').topicHash,
    gov.getEvent('VoteCast').topicHash,
    gov.getEvent('VoteCastWithParams').topicHash,
    gov.getEvent('ProposalQueued').topicHash,
    gov.getEvent('ProposalExecuted').topicHash,
    gov.getEvent('ProposalCanceled').topicHash,
  ]];
  const logs = await ctx.getLogs({ address: ctx.moduleAddress('governor'), topics });
  const mine = logs.map((l) => ({ log: l, d: ctx.decodeLog(l) })).filter(({ d }) => d && d.args.proposalId === id);
  const votes = mine.filter(({ d }) => d.name.startsWith('VoteCast'));
  votesBox.replaceChildren(votes.length
    ? h('table', null,
      h('thead', null, h('tr', null, h('th', null, 'Voter'), h('th', null, 'Support'), h('th', { class: 'num' }, 'Weight'), h('th', null, 'Reason'), h('th', null, 'Transaction'))),
      h('tbody', null, votes.map(({ log, d }) => h('tr', { dataset: { voter: d.args.voter } },
        h('td', null, ctx.link(d.args.voter)),
        h('td', null, SUPPORT[Number(d.args.support)] || String(d.args.support)),
        h('td', { class: 'num' }, ctx.fmtOpen(d.args.weight)),
        h('td', null, d.args.reason),
        h('td', null, ctx.link(log.transactionHash))))))
    : h('p', { class: 'muted' }, 'No votes yet.'));
  historyBox.replaceChildren(h('table', null,
    h('thead', null, h('tr', null, h('th', null, 'Event'), h('th', null, 'Block'), h('th', null, 'Transaction'))),
    h('tbody', null, mine.map(({ log, d }) => h('tr', { dataset: { event: d.name, tx: log.transactionHash } },
      h('td', null, d.name),
      h('td', null, ctx.link(Number(log.blockNumber))),
      h('td', null, ctx.link(log.transactionHash)))))));
}
