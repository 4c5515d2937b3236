// The dashboard shell: the hash router (#/<page>/<param>/…?query → pages/<page>.js's
// `render(root, ctx, params)`, params = the decoded path segments after the page name) and the
// account picker (an injected EIP-1193 wallet, or a dev key on a dev chain) with its balance.

import * as lib from './lib.js';

const PAGES = ['datanets', 'models', 'playground', 'explorer', 'rewards', 'governance', 'simulator'];
const DEFAULT_PAGE = 'explorer';

let leaveCurrent = () => {};
let renderSeq = 0;

function parseHash() {
  const raw = (location.hash || '').replace(/^#\/?/, '');
  const [path, q = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } });
  return { page: parts[0] || DEFAULT_PAGE, params: parts.slice(1), query: new URLSearchParams(q) };
}

async function route() {
  const seq = ++renderSeq;
  leaveCurrent();
  leaveCurrent = () => {};
  const { page, params, query } = parseHash();
  const root = document.getElementById('page');
  for (const a of document.querySelectorAll('nav.pages a')) a.classList.toggle('active', a.dataset.page === page);
  root.replaceChildren(lib.h('p', { class: 'muted' }, 'Loading…'));
  root.dataset.page = page;
  root.removeAttribute('data-ready');
  if (!PAGES.includes(page)) {
    root.replaceChildren(lib.h('h1', null, 'Not found'), lib.h('p', null, `There is no page "${page}".`));
    return;
  }
  let mod;
  try {
    mod = await import(`./pages/${page}.js`);
  } catch (e) {
    if (seq !== renderSeq) return;
    root.replaceChildren(lib.h('h1', null, page), lib.h('p', { class: 'error' }, `This page could not be loaded: ${e.message}`));
    return;
  }
  if (seq !== renderSeq) return;
  const { ctx, leave } = lib.pageContext(query);
  leaveCurrent = leave;
  const view = lib.h('div', { class: 'view' });
  root.replaceChildren(view);
  try {
    await mod.render(view, ctx, params);
  } catch (e) {
    if (seq !== renderSeq) return;
    console.warn(e);
    view.append(lib.h('p', { class: 'error' }, e.message || String(e)));
  }
  if (seq === renderSeq) root.dataset.ready = '1';
}

async function refreshBalance() {
  const el = document.getElementById('balance');
  const addr = lib.account();
  if (!addr) {
    el.textContent = '';
    return;
  }
  try {
    el.replaceChildren(lib.link(addr), ' ', lib.h('span', { id: 'balance-amount' }, lib.fmtOpen(await lib.rpc('eth_getBalance', [addr, 'latest']))));
  } catch (e) {
    el.textContent = e.message;
  }
}

async function setupAccounts() {
  const select = document.getElementById('account-select');
  const devs = await lib.loadDevAccounts();
  const opts = [lib.h('option', { value: '' }, 'No account (read only)')];
  if (window.ethereum) opts.push(lib.h('option', { value: 'injected' }, 'Browser wallet'));
  for (const d of devs) opts.push(lib.h('option', { value: d.name }, `${d.name} ${lib.short(d.address, 4)}`));
  select.replaceChildren(...opts);
  select.addEventListener('change', async () => {
    try {
      await lib.selectAccount(select.value);
    } catch (e) {
      lib.toast(e.message, 'error');
      select.value = '';
      await lib.selectAccount('').catch(() => {});
    }
  });
  lib.onAccountChange(refreshBalance);
  const saved = lib.savedAccountChoice();
  if (saved && [...select.options].some((o) => o.value === saved) && saved !== 'injected') {
    select.value = saved;
    await lib.selectAccount(saved).catch(() => {});
  }
  document.getElementById('chain').textContent = `chain ${await lib.chainId()}${devs.length ? ' · dev' : ''}`;
  setInterval(refreshBalance, 5000);
}

async function main() {
  try {
    await lib.loadInterfaces();
    await setupAccounts();
  } catch (e) {
    lib.toast(`could not reach the node: ${e.message}`, 'error');
  }
  window.addEventListener('hashchange', route);
  document.body.dataset.booted = '1';
  await route();
}

main();
