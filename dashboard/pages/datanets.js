// The Datanets page. `#/datanets`: every datanet and the create form (a `createDatanet`
// transaction). `#/datanets/ID`: one datanet — its versions, contributions (the owner approves
// or rejects pending ones), a page of rows (any version, or one contribution's rows for review),
// contributors in leaderboard order, access requests and grants (permissioned datanets), and the
// upload form: the files are staged by a signed upload (the node validates, scores and dedups
// them and answers its report), then the `contribute` transaction records what the node computed.

import { useStyles, stage, logs, uintTopic, table, kv, bps, when } from '../lib2.js';

const ROWS_PAGE = 20;

export async function render(root, ctx, params) {
  useStyles();
  if (params[0]) return renderOne(root, ctx, Number(params[0]));
  return renderList(root, ctx);
}

// --------------------------------------------------------------------------------- the list

async function renderList(root, ctx) {
  const { h } = ctx;
  const list = h('div', { id: 'datanet-list' });
  root.append(h('h1', null, 'Datanets'), list, createForm(ctx));
  const load = async () => {
    const all = await ctx.rest('/v1/datanets', { signal: ctx.signal });
    if (!all.length) {
      list.replaceChildren(h('p', { class: 'muted' }, 'No datanets yet: create the first one below.'));
      return;
    }
    list.replaceChildren(table(ctx, ['id', 'name', 'access', 'versions', 'rows', 'contributions', 'owner'], all.map((d) => [
      String(d.id),
      h('a', { href: `#/datanets/${d.id}`, class: 'datanet-link' }, d.name),
      d.permissioned ? 'permissioned' : 'public',
      String(d.version_count), String(d.row_count), String(d.contribution_count),
      ctx.link(d.owner),
    ])));
  };
  await load();
}

function createForm(ctx) {
  const { h } = ctx;
  const name = h('input', { name: 'name', required: true, placeholder: 'Urban beekeeping' });
  const summary = h('input', { name: 'summary', placeholder: 'one line' });
  const description = h('textarea', { name: 'description', placeholder: 'Markdown description' });
  const tags = h('input', { name: 'tags', placeholder: 'bees, cities' });
  const type = h('select', { name: 'type' }, h('option', { value: '0' }, 'text'), h('option', { value: '1' }, 'prompt / response'));
  const licence = h('input', { name: 'licence', value: 'CC-BY-4.0' });
  const permissioned = h('input', { type: 'checkbox', name: 'permissioned' });
  const button = h('button', { type: 'submit' }, 'Create datanet');
  const form = h('form', { class: 'stack card', id: 'create-datanet' },
    h('h2', null, 'Create a datanet'),
    h('label', null, 'Name', name), h('label', null, 'Summary', summary), h('label', null, 'Description', description),
    h('label', null, 'Tags (comma-separated)', tags), h('label', null, 'Type', type), h('label', null, 'Licence', licence),
    h('div', { class: 'row' }, permissioned, 'Permissioned (only the owner and granted addresses contribute, read rows and train)'),
    h('div', null, button));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.busy(button, async () => {
      const tagList = tags.value.split(',').map((t) => t.trim()).filter(Boolean);
      const receipt = await ctx.send('datanet', 'createDatanet', [name.value.trim(), summary.value.trim(), description.value, tagList, Number(type.value), licence.value.trim(), permissioned.checked]);
      const created = receipt.logs.map((l) => ctx.decodeLog(l)).find((d) => d && d.name === 'DatanetCreated');
      const id = created ? Number(created.args.datanetId) : null;
      ctx.toast(`datanet ${id ?? ''} created`, 'ok');
      if (id) location.hash = `#/datanets/${id}`;
    });
  });
  return form;
}

// ------------------------------------------------------------------------------ one datanet

async function renderOne(root, ctx, id) {
  const { h } = ctx;
  const d = await ctx.rest(`/v1/datanets/${id}`, { signal: ctx.signal });
  const me = () => ctx.account();
  const isOwner = () => me() && me().toLowerCase() === d.owner.toLowerCase();
  const sections = {
    versions: h('div', { id: 'versions' }),
    contributions: h('div', { id: 'contributions' }),
    rows: h('div', { id: 'rows' }),
    contributors: h('div', { id: 'contributors' }),
    access: h('div', { id: 'access' }),
  };
  root.append(
    h('p', null, h('a', { href: '#/datanets' }, '← Datanets')),
    h('h1', null, `${d.name} `, h('span', { class: 'badge' }, d.permissioned ? 'permissioned' : 'public')),
    h('div', { class: 'card' }, kv(ctx, [
      ['id', String(d.id)], ['summary', d.summary], ['owner', ctx.link(d.owner)],
      ['type', d.schema ?? 'unknown'], ['licence', d.licence], ['tags', (d.tags || []).join(', ')],
      ['versions', `${d.version_count} (latest root ${ctx.short(d.latest_root)})`],
      ['rows', String(d.row_count)], ['contributions', String(d.contribution_count)], ['created', when(d.created_at)],
    ]), d.description ? h('pre', null, d.description) : null),
    uploadForm(ctx, d, () => refresh()),
    h('h2', null, 'Contributions'), sections.contributions,
    h('h2', null, 'Versions'), sections.versions,
    h('h2', null, 'Rows'), sections.rows,
    h('h2', null, 'Contributors (leaderboard)'), sections.contributors,
    h('h2', null, 'Access'), sections.access,
  );
  const rowsView = rowsBrowser(ctx, d, sections.rows);

  async function refresh() {
    const [versions, contributions, contributors] = await Promise.all([
      ctx.rest(`/v1/datanets/${id}/versions`, { signal: ctx.signal }),
      ctx.rest(`/v1/datanets/${id}/contributions`, { signal: ctx.signal }),
      ctx.rest(`/v1/datanets/${id}/contributors`, { signal: ctx.signal }),
    ]);
    sections.versions.replaceChildren(versions.length
      ? table(ctx, ['version', 'root', 'contribution', 'rows', 'created'], versions.map((v) => [
        h('a', { href: '#', onclick: (e) => { e.preventDefault(); rowsView.show({ version: v.version }); } }, `v${v.version}`),
        h('span', { class: 'mono', title: v.root }, ctx.short(v.root)), `#${v.contribution_id}`, String(v.row_count), when(v.created_at)]))
      : h('p', { class: 'muted' }, 'No versions yet: a version is made when the owner approves a contribution.'));
    sections.contributions.replaceChildren(contributions.length
      ? table(ctx, ['id', 'contributor', 'rows', 'bytes', 'score', 'status', ''], contributions.map((c) => contributionRow(ctx, c, isOwner(), rowsView, refresh)), { class: 'contributions' })
      : h('p', { class: 'muted' }, 'No contributions yet.'));
    sections.contributors.replaceChildren(contributors.length
      ? table(ctx, ['rank', 'contributor', 'submitted', 'approved', 'rejected', 'pending', 'rows accepted', 'acceptance', 'mean score', 'consistency'], contributors.map((s, i) => [
        String(i + 1), ctx.link(s.contributor), String(s.submitted), String(s.approved), String(s.rejected), String(s.pending ?? 0),
        String(s.rows_accepted), bps(s.acceptance_bps), bps(s.mean_score_bps ?? 0), bps(s.consistency_bps)]))
      : h('p', { class: 'muted' }, 'No contributors yet.'));
    await accessSection(ctx, d, sections.access, isOwner());
    await rowsView.reload(versions.length);
  }
  await refresh();
  ctx.onAccountChange(() => refresh().catch((e) => ctx.toast(e.message, 'error')));
}

function contributionRow(ctx, c, owner, rowsView, refresh) {
  const { h } = ctx;
  const status = c.status === 'approved' ? `approved (v${c.version})` : c.status === 'rejected' ? `rejected: ${c.reason}` : 'pending';
  const actions = [h('button', { class: 'secondary', onclick: () => rowsView.show({ contribution: c.id }) }, 'rows')];
  if (owner && c.status === 'pending') {
    const approve = h('button', { class: 'approve' }, 'approve');
    approve.addEventListener('click', () => ctx.busy(approve, async () => {
      if (c.rows_unavailable && !confirm(`This node cannot serve the rows (${c.rows_unavailable}). Approve anyway?`)) return;
      const r = await ctx.send('datanet', 'approve', [c.id]);
      const ev = r.logs.map((l) => ctx.decodeLog(l)).find((x) => x && x.name === 'ContributionApproved');
      ctx.toast(`contribution ${c.id} approved${ev ? ` as version ${ev.args.version}, fee ${ctx.fmtOpen(ev.args.fee)}` : ''}`, 'ok');
      await refresh();
    }));
    const reason = h('input', { placeholder: 'reason', class: 'reject-reason', size: 14 });
    const reject = h('button', { class: 'secondary reject' }, 'reject');
    reject.addEventListener('click', () => ctx.busy(reject, async () => {
      if (!reason.value.trim()) throw new Error('give a reason for rejecting');
      await ctx.send('datanet', 'reject', [c.id, reason.value.trim()]);
      ctx.toast(`contribution ${c.id} rejected`, 'ok');
      await refresh();
    }));
    actions.push(approve, reason, reject);
  }
  return h('tr', { 'data-contribution': c.id },
    h('td', null, `#${c.id}`), h('td', null, ctx.link(c.contributor)), h('td', { class: 'num' }, String(c.row_count)),
    h('td', { class: 'num' }, String(c.byte_size)), h('td', { class: 'num' }, bps(c.score_bps)),
    h('td', null, h('span', { class: `badge ${c.status}` }, status), c.rows_unavailable ? h('div', { class: 'error' }, `rows unavailable: ${c.rows_unavailable}`) : null),
    h('td', null, h('div', { class: 'row' }, actions)));
}

// --------------------------------------------------------------------------------------- rows

function rowText(r) {
  return r.text !== undefined ? r.text : `${r.prompt}\n⏎ ${r.response}`;
}

function rowsBrowser(ctx, d, box) {
  const { h } = ctx;
  let state = { version: 0, contribution: null, offset: 0 };
  const head = h('div', { class: 'pager' });
  const body = h('div');
  box.replaceChildren(head, body);
  let versions = d.version_count;
  async function load() {
    if (!state.contribution && !versions) {
      head.replaceChildren();
      body.replaceChildren(h('p', { class: 'muted' }, 'No version yet: rows appear here once the owner approves a contribution (a pending contribution\'s rows: its "rows" button).'));
      return;
    }
    const path = state.contribution
      ? `/v1/contributions/${state.contribution}/rows?offset=${state.offset}&limit=${ROWS_PAGE}`
      : `/v1/datanets/${d.id}/rows?version=${state.version}&offset=${state.offset}&limit=${ROWS_PAGE}`;
    let page;
    try {
      // A permissioned datanet's rows go only to signed requests by the owner or a grantee.
      const headers = d.permissioned && ctx.account() ? { authorization: await ctx.signRequest('GET', path, null) } : {};
      page = await ctx.rest(path, { headers, signal: ctx.signal });
    } catch (e) {
      body.replaceChildren(h('p', { class: e.status === 404 ? 'muted' : 'error' }, e.message));
      head.replaceChildren();
      return;
    }
    const what = state.contribution ? `contribution #${state.contribution}` : `version ${page.version}`;
    const prev = h('button', { class: 'secondary', disabled: state.offset === 0 }, '← previous');
    const next = h('button', { class: 'secondary', disabled: page.rows.length < ROWS_PAGE }, 'next →');
    prev.addEventListener('click', () => { state.offset = Math.max(0, state.offset - ROWS_PAGE); load(); });
    next.addEventListener('click', () => { state.offset += ROWS_PAGE; load(); });
    head.replaceChildren(h('span', null, `${what}, rows ${state.offset}–${state.offset + page.rows.length}`), prev, next);
    body.replaceChildren(page.rows.length
      ? table(ctx, ['row hash', 'contribution', 'contributor', 'row'], page.rows.map((r) => [
        h('span', { class: 'mono', title: r.row_hash }, ctx.short(r.row_hash)), `#${r.contribution_id}`, ctx.link(r.contributor), rowText(r)]), { class: 'rows' })
      : h('p', { class: 'muted' }, 'No rows here.'));
  }
  return {
    show(s) {
      state = { version: s.version ?? 0, contribution: s.contribution ?? null, offset: 0 };
      return load();
    },
    reload(versionCount) {
      versions = versionCount;
      return load();
    },
  };
}

// ------------------------------------------------------------------------------------ upload

function uploadForm(ctx, d, done) {
  const { h } = ctx;
  const files = h('input', { type: 'file', multiple: true, name: 'files', accept: '.txt,.md,.jsonl,.csv,.pdf,.docx' });
  const dry = h('input', { type: 'checkbox', name: 'dry-run' });
  const button = h('button', { type: 'submit' }, 'Upload and contribute');
  const out = h('div', { id: 'upload-report' });
  const form = h('form', { class: 'stack card', id: 'upload' },
    h('h2', null, 'Contribute files'),
    h('p', { class: 'muted' }, 'The files are uploaded signed by your account; the node parses, validates, scores and deduplicates them and answers its report; the contribution transaction then records the rows root, count, bytes and score the node computed.'),
    files, h('div', { class: 'row' }, dry, 'Dry run (report only, nothing on chain)'), h('div', null, button), out);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.busy(button, async () => {
      if (!files.files.length) throw new Error('choose at least one file');
      if (!ctx.account()) throw new Error('choose an account first (top right)');
      const picked = await Promise.all([...files.files].map(async (f) => ({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) })));
      out.replaceChildren(h('p', { class: 'muted' }, `uploading ${picked.length} file(s) for validation…`));
      let staged;
      try {
        staged = await stage(ctx, d.id, picked);
      } catch (e) {
        out.replaceChildren(h('p', { class: 'error' }, e.message), e.report ? reportView(ctx, e.report) : null);
        throw e;
      }
      const r = staged.report;
      out.replaceChildren(reportView(ctx, r), h('p', { class: 'mono' }, `rows blob ${staged.metadata_uri}`));
      if (dry.checked) {
        out.append(h('p', { class: 'muted' }, 'dry run: nothing recorded on chain'));
        return;
      }
      const receipt = await ctx.send('datanet', 'contribute', [d.id, r.rows_root, r.row_count, r.byte_size, r.score_bps, staged.metadata_uri]);
      const ev2 = receipt.logs.map((l) => ctx.decodeLog(l)).find((x) => x && x.name === 'ContributionSubmitted');
      const cid = ev2 ? Number(ev2.args.contributionId) : null;
      out.append(h('p', { class: 'ok', id: 'contributed' }, `contribution #${cid} recorded in `, ctx.link(receipt.transactionHash), '; the owner approves or rejects it.'));
      ctx.toast(`contribution ${cid} submitted`, 'ok');
      await done();
    });
  });
  return form;
}

function reportView(ctx, r) {
  const { h } = ctx;
  const box = h('div', { class: 'report' });
  box.append(h('div', { class: 'grid' },
    stat(ctx, 'score', bps(r.score_bps)), stat(ctx, 'rows accepted', r.row_count), stat(ctx, 'bytes', r.byte_size),
    stat(ctx, 'duplicates refused', r.duplicates_total), stat(ctx, 'near-duplicates', r.near_duplicates_total), stat(ctx, 'dropped', r.dropped_total)));
  box.append(h('h3', null, 'Files'), table(ctx, ['file', 'records', 'kept', 'score', 'verdict', 'reasons'], (r.files || []).map((f) => [
    f.name, String(f.records), String(f.kept), bps(f.score_bps),
    h('td', { class: f.accepted ? 'good' : 'bad' }, f.accepted ? 'accepted' : 'rejected'), (f.reasons || []).join('; ')]), { class: 'report-files' }));
  if ((r.duplicates || []).length) {
    box.append(h('h3', null, `Exact duplicates (${r.duplicates_total})`), table(ctx, ['file', 'where', 'already in'], r.duplicates.slice(0, 20).map((x) => [x.file, JSON.stringify(x.at), x.original])));
  }
  if ((r.near_duplicates || []).length) {
    box.append(h('h3', null, `Near-duplicates (${r.near_duplicates_total})`), table(ctx, ['file', 'where', 'similarity', 'kept'], r.near_duplicates.slice(0, 20).map((x) => [x.file, JSON.stringify(x.at), x.similarity.toFixed(2), x.kept ? 'yes' : 'no'])));
  }
  if ((r.dropped || []).length) {
    box.append(h('h3', null, `Dropped rows (${r.dropped_total})`), table(ctx, ['file', 'where', 'problem'], r.dropped.slice(0, 20).map((x) => [x.file, JSON.stringify(x.at), JSON.stringify(x.problem)])));
  }
  return box;
}

function stat(ctx, label, value) {
  const { h } = ctx;
  return h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, String(value)));
}

// ------------------------------------------------------------------------------------ access

async function accessSection(ctx, d, box, owner) {
  const { h } = ctx;
  if (!d.permissioned) {
    box.replaceChildren(h('p', { class: 'muted' }, 'Public: anyone may contribute, read its rows and train on it.'));
    return;
  }
  const topic = [uintTopic(ctx, d.id)];
  const [requests, grants, revokes] = await Promise.all([
    logs(ctx, 'datanet', 'AccessRequested', topic), logs(ctx, 'datanet', 'AccessGranted', topic), logs(ctx, 'datanet', 'AccessRevoked', topic),
  ]);
  // Who holds access now: grants and revocations in log order.
  const events = [...grants.map((g) => ['grant', g]), ...revokes.map((r) => ['revoke', r])]
    .sort((a, b) => Number(BigInt(a[1].log.blockNumber) - BigInt(b[1].log.blockNumber)) || Number(BigInt(a[1].log.logIndex) - BigInt(b[1].log.logIndex)));
  const granted = new Set();
  for (const [kind, e] of events) {
    const who = e.args.user.toLowerCase();
    if (kind === 'grant') granted.add(who); else granted.delete(who);
  }
  const rows = requests.map((r) => {
    const who = r.args.requester;
    const has = granted.has(who.toLowerCase());
    let action = has ? 'granted' : 'waiting';
    if (owner) {
      const b = h('button', { class: has ? 'secondary' : '' }, has ? 'revoke' : 'grant');
      b.addEventListener('click', () => ctx.busy(b, async () => {
        await ctx.send('datanet', has ? 'revokeAccess' : 'grantAccess', [d.id, who]);
        ctx.toast(`${has ? 'revoked' : 'granted'} ${who}`, 'ok');
        await accessSection(ctx, d, box, owner);
      }));
      action = h('span', null, has ? 'granted ' : 'waiting ', b);
    }
    return [ctx.link(who), r.args.note, action];
  });
  const note = h('input', { placeholder: 'why you need access' });
  const ask = h('button', null, 'Request access');
  ask.addEventListener('click', () => ctx.busy(ask, async () => {
    await ctx.send('datanet', 'requestAccess', [d.id, note.value]);
    ctx.toast('access requested', 'ok');
    await accessSection(ctx, d, box, owner);
  }));
  box.replaceChildren(
    requests.length ? table(ctx, ['requester', 'note', 'status'], rows) : h('p', { class: 'muted' }, 'No access requests.'),
    h('p', null, `Granted now: ${granted.size ? [...granted].join(', ') : 'nobody besides the owner'}`),
    owner ? null : h('div', { class: 'row' }, note, ask));
}
