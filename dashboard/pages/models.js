// The Models page. `#/models`: the base models and adapters on chain (each adapter's datanet
// versions link to the datanet), ModelFactory's training jobs on this node, and the train form
// (datanet@version, LoRA or QLoRA, rank, steps, learning rate, …) that submits a signed job;
// `#/models?job=ID` follows one job: a loss chart fed live by the job's event stream (the log
// replayed, then every step), its samples, cancel (the submitter), and once finished, publish
// (the node prepares the bundle and index, the browser signs registerAdapter). `#/models/NAME`
// (or an adapter id): one adapter's provenance — base model, the datanet versions it was trained
// on with their roots checked against the chain, its hashes and parents.

import { useStyles, signedRest, streamEvents, table, kv, when } from '../lib2.js';
import { lineChart } from '../chart.js';

export async function render(root, ctx, params) {
  useStyles();
  if (params[0]) return renderAdapter(root, ctx, params[0]);
  return renderIndex(root, ctx);
}

async function adapters(ctx) {
  const n = Number(await ctx.call('model', 'adapterCount'));
  const out = [];
  for (let i = 1; i <= n; i++) out.push(await ctx.call('model', 'getAdapter', [i]));
  return out;
}

async function baseModels(ctx) {
  const n = Number(await ctx.call('model', 'baseModelCount'));
  const out = [];
  for (let i = 1; i <= n; i++) out.push(await ctx.call('model', 'getBaseModel', [i]));
  return out;
}

function datanetLinks(ctx, a) {
  const { h } = ctx;
  return a.datanetIds.map((id, i) => h('a', { href: `#/datanets/${id}`, class: 'provenance', title: `root ${a.datanetRoots[i]}` }, `datanet ${id}@v${a.datanetVersions[i]}`))
    .flatMap((x, i) => (i ? [', ', x] : [x]));
}

// -------------------------------------------------------------------------------- the index

async function renderIndex(root, ctx) {
  const { h } = ctx;
  const jobBox = h('div', { id: 'job-view' });
  const jobsList = h('div', { id: 'jobs' });
  root.append(h('h1', null, 'Models'));
  const [bases, ads] = await Promise.all([baseModels(ctx), adapters(ctx)]);
  root.append(h('h2', null, 'Base models'), bases.length
    ? table(ctx, ['id', 'name', 'model hash (SHA-256)', 'owner', 'registered'], bases.map((b) => [String(b.id), b.name, h('span', { class: 'mono', title: b.modelHash }, ctx.short(b.modelHash)), ctx.link(b.owner), when(b.registeredAt)]))
    : h('p', { class: 'muted' }, 'No base model registered yet (openledger model register-base).'));
  root.append(h('h2', null, 'Adapters'), ads.length
    ? table(ctx, ['id', 'name', 'base', 'trained on', 'owner', 'registered'], ads.map((a) => [
      String(a.id), h('a', { href: `#/models/${encodeURIComponent(a.name)}`, class: 'adapter-link' }, a.name), `#${a.baseModelId}`,
      h('span', null, datanetLinks(ctx, a)), ctx.link(a.owner), when(a.registeredAt)]), { id: 'adapters' })
    : h('p', { class: 'muted' }, 'No adapters yet: train one below, then publish it.'));
  root.append(h('h2', null, 'Training jobs on this node'), jobsList, jobBox, await trainForm(ctx, (id) => openJob(id)));

  async function loadJobs() {
    let jobs;
    try {
      jobs = await ctx.rest('/v1/factory/jobs?limit=50', { signal: ctx.signal });
    } catch (e) {
      jobsList.replaceChildren(h('p', { class: 'muted' }, e.message));
      return;
    }
    jobsList.replaceChildren(jobs.length
      ? table(ctx, ['job', 'status', 'step', 'loss', 'datanets', 'submitter', 'created', ''], jobs.map((j) => [
        `#${j.id}`, h('span', { class: `badge ${j.status}` }, j.status), `${j.step}${j.total_steps ? ` / ${j.total_steps}` : ''}`,
        j.loss == null ? '' : j.loss.toFixed(4), j.datanets.map((d) => `${d.id}@v${d.version}`).join(', '), ctx.link(j.submitter), when(j.created),
        h('button', { class: 'secondary', onclick: () => openJob(j.id) }, 'watch')]))
      : h('p', { class: 'muted' }, 'No training jobs yet.'));
  }
  let closeJob = () => {};
  function openJob(id) {
    closeJob();
    history.replaceState(null, '', `#/models?job=${id}`);
    closeJob = watchJob(ctx, id, jobBox, loadJobs);
  }
  await loadJobs();
  ctx.every(5000, loadJobs);
  const q = Number(ctx.query.get('job'));
  if (q) openJob(q);
}

// ---------------------------------------------------------------------------- the train form

async function trainForm(ctx, opened) {
  const { h } = ctx;
  const datanets = (await ctx.rest('/v1/datanets', { signal: ctx.signal })).filter((d) => d.version_count > 0);
  const datanet = h('select', { name: 'datanet' }, datanets.map((d) => h('option', { value: d.id, 'data-versions': d.version_count }, `${d.name} (#${d.id}, ${d.version_count} versions)`)));
  const version = h('input', { name: 'version', type: 'number', min: 1, value: datanets[0] ? datanets[0].version_count : 1 });
  datanet.addEventListener('change', () => { version.value = datanet.selectedOptions[0].dataset.versions; });
  const num = (name, value, attrs = {}) => h('input', { name, type: 'number', value, step: 'any', ...attrs });
  const fields = {
    method: h('select', { name: 'method' }, h('option', { value: 'lora' }, 'LoRA'), h('option', { value: 'qlora' }, 'QLoRA (quantized frozen base)')),
    lora_rank: num('lora_rank', 8, { min: 1 }),
    lora_alpha: num('lora_alpha', 16),
    max_steps: num('max_steps', 30, { min: 1 }),
    learning_rate: num('learning_rate', 0.0002),
    per_device_train_batch_size: num('per_device_train_batch_size', 2, { min: 1 }),
    cutoff_len: num('cutoff_len', 256, { min: 8 }),
    val_size: num('val_size', 0.1, { min: 0, max: 0.5 }),
    eval_steps: num('eval_steps', 10, { min: 1 }),
    sample_prompts: num('sample_prompts', 0, { min: 0 }),
  };
  const labels = {
    method: 'Method', lora_rank: 'LoRA rank', lora_alpha: 'LoRA alpha', max_steps: 'Steps', learning_rate: 'Learning rate',
    per_device_train_batch_size: 'Batch size', cutoff_len: 'Cutoff length (tokens)', val_size: 'Validation share', eval_steps: 'Evaluate every (steps)',
    sample_prompts: 'Sample generations before/after',
  };
  const button = h('button', { type: 'submit' }, 'Train on the node');
  const form = h('form', { class: 'stack card', id: 'train' },
    h('h2', null, 'Fine-tune an adapter (ModelFactory)'),
    datanets.length ? null : h('p', { class: 'error' }, 'No datanet has an approved version yet: approve a contribution first.'),
    h('div', { class: 'row' }, h('label', null, 'Datanet', datanet), h('label', null, 'Version', version)),
    Object.entries(fields).map(([k, el]) => h('label', null, labels[k], el)),
    h('p', { class: 'muted' }, 'The job is signed by your account (the node allows the accounts in [factory] allow) and trains on the node, one job at a time.'),
    h('div', null, button));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.busy(button, async () => {
      if (!datanet.value) throw new Error('no datanet to train on');
      const config = { method: fields.method.value, logging_steps: 1, save_steps: Math.max(1, Number(fields.max_steps.value)) };
      for (const [k, el] of Object.entries(fields)) if (k !== 'method') config[k] = Number(el.value);
      const job = await signedRest(ctx, 'POST', '/v1/factory/jobs', { config, datanets: [`${datanet.value}@${version.value}`] });
      ctx.toast(`training job ${job.id} queued`, 'ok');
      opened(job.id);
    });
  });
  return form;
}

// ---------------------------------------------------------------------------- one job, live

function watchJob(ctx, id, box, changed) {
  const { h } = ctx;
  const stop = new AbortController();
  const leave = () => stop.abort();
  ctx.onLeave(leave);
  const chart = lineChart({ title: `Job ${id}: loss`, xLabel: 'step', yLabel: 'loss', series: ['train loss', 'validation loss'], id: 'loss-chart' });
  const status = h('span', { class: 'badge', id: 'job-status' }, '…');
  const progress = h('span', { id: 'job-progress' });
  const cancel = h('button', { class: 'secondary', id: 'job-cancel' }, 'Cancel');
  const notes = h('div', { id: 'job-notes' });
  const publish = h('div', { id: 'job-publish' });
  box.replaceChildren(h('div', { class: 'card' }, h('h2', null, `Training job #${id} `, status, ' ', progress), chart.el, h('div', { class: 'row' }, cancel), publish, notes));
  cancel.addEventListener('click', () => ctx.busy(cancel, async () => {
    await signedRest(ctx, 'POST', `/v1/factory/jobs/${id}/cancel`, null);
    ctx.toast(`job ${id}: cancel requested`, 'ok');
  }));
  let total = null;
  const setStatus = (s) => {
    status.textContent = s;
    status.className = `badge ${s}`;
    cancel.hidden = !(s === 'queued' || s === 'running');
  };
  const onEvent = (name, raw) => {
    let e;
    try { e = JSON.parse(raw); } catch (err) { return; }
    switch (name) {
      case 'status':
        setStatus(e.status);
        if (e.total_steps) total = e.total_steps;
        if (e.error) notes.append(h('p', { class: 'error' }, e.error));
        if (e.outcome) notes.append(h('p', null, e.outcome));
        if (['done', 'failed', 'cancelled'].includes(e.status)) {
          changed();
          if (e.status === 'done') showPublish(ctx, id, publish);
        }
        break;
      case 'started':
        total = e.total_steps;
        notes.append(h('p', { class: 'muted' }, `started at step ${e.start_step} of ${e.total_steps}: ${e.train_examples} training and ${e.val_examples} validation examples, ${e.trainable_params} trainable parameters, ${e.threads} threads`));
        break;
      case 'step':
        chart.append('train loss', e.step, e.loss);
        progress.textContent = `step ${e.step}${total ? ` / ${total}` : ''} · loss ${Number(e.loss).toFixed(4)} · ${Math.round(e.tokens_per_s || 0)} tokens/s`;
        break;
      case 'eval':
        chart.append('validation loss', e.step, e.val_loss);
        break;
      case 'samples':
        if (!(e.samples || []).length) break;
        notes.append(h('h3', null, `Samples ${e.phase} training`), table(ctx, ['prompt', 'generated'], (e.samples || []).map((s) => [s.prompt, s.generated ?? s.output ?? JSON.stringify(s)])));
        break;
      case 'note':
        notes.append(h('p', { class: 'muted' }, e.message));
        break;
      default:
        break;
    }
  };
  (async () => {
    try {
      await streamEvents(`/v1/factory/jobs/${id}/events`, { onEvent, signal: stop.signal });
    } catch (e) {
      if (!stop.signal.aborted) notes.append(h('p', { class: 'error' }, `progress stream: ${e.message}`));
    }
  })();
  return leave;
}

async function showPublish(ctx, id, box) {
  const { h } = ctx;
  let job;
  try {
    job = await ctx.rest(`/v1/factory/jobs/${id}`, { signal: ctx.signal });
  } catch (e) {
    return;
  }
  const m = job.metrics || {};
  const name = h('input', { placeholder: 'adapter name', name: 'adapter-name', value: `job-${id}` });
  const button = h('button', { id: 'job-publish-button' }, 'Publish on chain');
  const out = h('div', { id: 'job-published' });
  const cmd = () => `openledger --from <submitter key> factory publish ${job.paths && job.paths.job} --name ${name.value || 'NAME'}`;
  const code = h('pre', { id: 'publish-command' }, cmd());
  name.addEventListener('input', () => { code.textContent = cmd(); });
  button.addEventListener('click', () => ctx.busy(button, async () => {
    // The node packs the adapter with the job's config and metrics and builds the attribution
    // index of the trained-on datanet versions; the registration is a transaction signed here.
    const p = await signedRest(ctx, 'POST', `/v1/factory/jobs/${id}/publish`, { name: name.value.trim() });
    const r = await ctx.send('model', 'registerAdapter', [p.base_model_id, p.name, p.datanet_ids, p.datanet_versions, p.training_config_hash, p.adapter_hash, p.attribution_index_root]);
    const ev = r.logs.map((l) => ctx.decodeLog(l)).find((x) => x && x.name === 'AdapterRegistered');
    ctx.toast(`adapter ${p.name} published${ev ? ` as #${ev.args.adapterId}` : ''}`, 'ok');
    out.replaceChildren(h('p', { class: 'ok' }, 'Published: ', h('a', { href: `#/models/${encodeURIComponent(p.name)}`, class: 'published-link' }, p.name), ' in ', ctx.link(r.transactionHash), '. ',
      h('a', { href: `#/playground?model=${encodeURIComponent(p.name)}` }, 'Chat with it →')));
  }));
  box.replaceChildren(h('h3', null, 'Finished'), kv(ctx, [
    ['final train loss', m.train_loss != null ? Number(m.train_loss).toFixed(4) : ''],
    ['validation loss', m.val_loss != null ? Number(m.val_loss).toFixed(4) : ''],
    ['adapter hash (BLAKE3)', m.adapter_hash || ''], ['job directory', (job.paths && job.paths.job) || ''],
  ]), h('p', null, 'Publish it: the node packs the adapter and builds the attribution index of the datanet versions it was trained on; you sign the registration (the job\'s submitter only).'),
  h('div', { class: 'row' }, h('label', null, 'Adapter name', name), button), out,
  h('p', { class: 'muted' }, 'or from a terminal on the node:'), code);
}

// ------------------------------------------------------------------------------ one adapter

async function renderAdapter(root, ctx, key) {
  const { h } = ctx;
  const id = /^\d+$/.test(key) ? BigInt(key) : await ctx.call('model', 'adapterByName', [key]);
  if (!id) throw new Error(`no adapter named ${key} on chain`);
  const a = await ctx.call('model', 'getAdapter', [id]);
  const [base, parents] = await Promise.all([ctx.call('model', 'getBaseModel', [a.baseModelId]), ctx.call('model', 'parentsOf', [id]).catch(() => [])]);
  const rows = await Promise.all(a.datanetIds.map(async (d, i) => {
    let check = '';
    try {
      const v = await ctx.call('datanet', 'getVersion', [d, a.datanetVersions[i]]);
      check = v.root === a.datanetRoots[i] ? h('span', { class: 'ok' }, 'matches the chain') : h('span', { class: 'error' }, `chain has ${v.root}`);
    } catch (e) {
      check = h('span', { class: 'error' }, e.message);
    }
    return [h('a', { href: `#/datanets/${d}`, class: 'provenance' }, `datanet ${d}`), `v${a.datanetVersions[i]}`, h('span', { class: 'mono' }, a.datanetRoots[i]), check];
  }));
  root.append(
    h('p', null, h('a', { href: '#/models' }, '← Models')),
    h('h1', null, `Adapter ${a.name}`),
    h('div', { class: 'card' }, kv(ctx, [
      ['id', String(a.id)], ['owner', ctx.link(a.owner)], ['base model', `#${base.id} ${base.name} (SHA-256 ${ctx.short(base.modelHash)})`],
      ['training config hash', h('span', { class: 'mono' }, a.trainingConfigHash)], ['adapter hash (BLAKE3)', h('span', { class: 'mono' }, a.adapterHash)],
      ['attribution index root', h('span', { class: 'mono' }, a.attributionIndexRoot)], ['registered', when(a.registeredAt)],
      ['parents', parents.length ? h('span', null, [...parents].map((p) => h('a', { href: `#/models/${p}` }, `#${p} `))) : 'none (trained, not merged)'],
    ]), h('p', null, h('a', { href: `#/playground?model=${encodeURIComponent(a.name)}` }, 'Chat with it in the Playground →'))),
    h('h2', null, 'Provenance: trained on'),
    table(ctx, ['datanet', 'version', 'root recorded with the adapter', 'check'], rows, { id: 'provenance' }));
}
