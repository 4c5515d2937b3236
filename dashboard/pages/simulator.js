// The Simulator page (`#/simulator`): edit a flywheel scenario (TOML, as `openledger sim run`
// reads it; the node's example to start from), run it on the node (`POST /v1/sim/run`: bounded
// days and populations, one run at a time) and view its report: the classification (take-off or
// stall, with the reasons), totals, the supply check, daily series drawn here, the node's own
// plot, governance events, and report.html to download.

import { useStyles, table, kv } from '../lib2.js';
import { lineChart } from '../chart.js';

export async function render(root, ctx) {
  useStyles();
  const { h } = ctx;
  const example = await ctx.rest('/v1/sim/example', { signal: ctx.signal }).catch(() => '');
  const scenario = h('textarea', { id: 'scenario', class: 'code', spellcheck: 'false' });
  scenario.value = typeof example === 'string' ? example : '';
  const seed = h('input', { id: 'seed', type: 'number', min: 0, placeholder: 'the scenario\'s' });
  const run = h('button', { id: 'run-sim' }, 'Run on the node');
  const out = h('div', { id: 'sim-report' });
  root.append(
    h('h1', null, 'Simulator'),
    h('p', { class: 'muted' }, 'Agent populations (contributors and copiers, datanet owners, model builders, app users, stakers, a governance council) drive the chain\'s real state machine through simulated days. Does data → models → usage → rewards → more data take off, or stall? Bigger runs, sweeps and threshold searches: openledger sim run | sweep | threshold.'),
    h('div', { class: 'stack card' }, h('label', null, 'Scenario (TOML)', scenario), h('div', { class: 'row' }, h('label', null, 'Seed', seed), run)),
    out);
  run.addEventListener('click', () => ctx.busy(run, async () => {
    out.replaceChildren(h('p', { class: 'muted' }, 'running…'));
    const body = { scenario: scenario.value };
    if (seed.value !== '') body.seed = Number(seed.value);
    let report;
    try {
      report = await ctx.rest('/v1/sim/run', { method: 'POST', body, signal: ctx.signal });
    } catch (e) {
      out.replaceChildren(h('p', { class: 'error' }, e.message));
      throw e;
    }
    showReport(ctx, out, report);
  }));
}

function showReport(ctx, out, r) {
  const { h } = ctx;
  const s = r.summary;
  const o = s.outcome;
  const t = s.totals;
  const num = (x, d = 2) => (typeof x === 'number' ? x.toLocaleString('en', { maximumFractionDigits: d }) : String(x ?? ''));
  const parts = [
    h('h2', null, `${s.scenario}, seed ${s.seed}: `, h('span', { class: `badge ${o.label}`, id: 'sim-outcome' }, o.label), ` after ${s.days} days`),
    o.reasons.length ? h('ul', { id: 'sim-reasons' }, o.reasons.map((x) => h('li', null, x))) : h('p', { class: 'ok' }, 'Approved contributions, inferences and contributor income all grew over the last quarter without subsidy.'),
    h('div', { class: 'card' }, kv(ctx, [
      ['contributions approved', num(t.contributions_approved, 0)], ['duplicates refused', num(t.duplicates_refused, 0)],
      ['inferences', num(t.inferences, 0)], ['fees', `${num(t.fees_open)} OPEN`], ['contributor income', `${num(t.contributor_income_open)} OPEN`],
      ['subsidy paid', `${num(t.subsidy_paid_open)} OPEN`], ['adapters trained', num(t.adapters_trained, 0)],
      ['transactions', `${num(s.transactions_accepted, 0)} accepted, ${num(s.transactions_refused, 0)} refused`],
      ['supply check', s.supply_check.ok ? h('span', { class: 'ok' }, 'passed') : h('span', { class: 'error' }, `FAILED: ${JSON.stringify(s.supply_check.failures)}`)],
      ['results', h('span', { class: 'mono' }, r.results_sha256)],
    ])),
  ];
  const rows = r.rows || [];
  // One chart per series: their scales differ by orders of magnitude.
  const series = [
    ['approved contributions per day', 'approved'], ['inferences per day', 'inferences'],
    ['contributor income, OPEN per day', 'contributor_income_open'], ['fees, OPEN per day', 'fees_open'],
    ['active contributors', 'contributors_active'], ['active users', 'users_active'],
    ['subsidy fund left, OPEN', 'subsidy_left_open'], ['total staked, OPEN', 'total_staked_open'],
  ];
  const grid = h('div', { class: 'cols2' });
  series.forEach(([title, key], i) => {
    const c = lineChart({ title, xLabel: 'day', series: [key], id: `sim-chart-${i}`, height: 200, yFromZero: true });
    c.set(key, rows.map((row) => [row.day, row[key] || 0]));
    grid.append(c.el);
  });
  parts.push(h('h3', null, 'Daily series'), grid);
  if ((s.governance || []).length) parts.push(h('h3', null, 'Governance'), table(ctx, ['day', 'what'], s.governance.map((g) => [String(g.day), g.what])));
  if (r.plot_svg) {
    const src = `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(r.plot_svg)))}`;
    parts.push(h('h3', null, 'The node\'s plot'), h('img', { class: 'sim-plot', src, alt: 'time series plot' }));
  }
  if (r.report_html) {
    const url = URL.createObjectURL(new Blob([r.report_html], { type: 'text/html' }));
    ctx.onLeave(() => URL.revokeObjectURL(url));
    parts.push(h('p', null, h('a', { href: url, download: 'report.html', id: 'sim-download' }, 'Download report.html'), h('span', { class: 'muted' }, ` (also on the node in ${r.dir})`)));
  }
  out.replaceChildren(...parts);
}
