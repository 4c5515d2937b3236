// Hand-written SVG line charts (no library): lineChart({title, xLabel, yLabel, series}) returns
// {el, append(seriesName, x, y), set(seriesName, points), clear()}; points are [x, y] numbers.
// Redraws on every change (charts here hold at most a few thousand points). Colours come from
// attributes, not style attributes, so the node's CSP holds.

const NS = 'http://www.w3.org/2000/svg';
export const COLORS = ['#2f5bd3', '#d3542f', '#1d7f45', '#8e44ad', '#c48a00', '#00838f', '#6d4c41', '#c2185b'];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceNumber(v) {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e6 || a < 1e-3) return v.toExponential(1);
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, '');
  return v.toPrecision(2);
}

export function lineChart(opts = {}) {
  const W = opts.width || 900;
  const H = opts.height || 280;
  const pad = { l: 56, r: 12, t: opts.title ? 26 : 10, b: 34 };
  const series = new Map(); // name → points
  for (const name of opts.series || []) series.set(name, []);
  const wrap = document.createElement('div');
  wrap.className = 'chart-wrap';
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img' });
  if (opts.id) root.setAttribute('id', opts.id);
  const legend = document.createElement('div');
  legend.className = 'legend';
  wrap.append(root, legend);

  function draw() {
    root.replaceChildren();
    if (opts.title) root.append(svg('text', { x: pad.l, y: 16, 'font-weight': 600 }, opts.title));
    const all = [...series.values()].flat();
    root.dataset.points = String(all.length);
    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]);
    let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
    let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
    if (opts.yFromZero && y0 > 0) y0 = 0;
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 = y0 + Math.abs(y0 || 1) * 0.1; y0 -= Math.abs(y0 || 1) * 0.1; }
    const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * (W - pad.l - pad.r);
    const sy = (y) => H - pad.b - ((y - y0) / (y1 - y0)) * (H - pad.t - pad.b);
    root.append(svg('line', { class: 'axis', x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b }));
    root.append(svg('line', { class: 'axis', x1: pad.l, y1: pad.t, x2: pad.l, y2: H - pad.b }));
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4;
      root.append(svg('text', { x: pad.l - 6, y: sy(y) + 4, 'text-anchor': 'end' }, niceNumber(y)));
      const x = x0 + ((x1 - x0) * i) / 4;
      const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
      root.append(svg('text', { x: sx(x), y: H - pad.b + 14, 'text-anchor': anchor }, opts.xFormat ? opts.xFormat(x) : niceNumber(x)));
    }
    if (opts.xLabel) root.append(svg('text', { x: (W + pad.l) / 2, y: H - 4, 'text-anchor': 'middle' }, opts.xLabel));
    if (opts.yLabel) root.append(svg('text', { x: 12, y: pad.t - 4 + (opts.title ? 0 : 10) }, opts.yLabel));
    legend.replaceChildren();
    let i = 0;
    for (const [name, pts] of series) {
      const color = COLORS[i++ % COLORS.length];
      if (pts.length) {
        const d = pts.map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ');
        root.append(svg('path', { d, fill: 'none', stroke: color, 'stroke-width': 2, 'data-series': name }));
        if (pts.length === 1) root.append(svg('circle', { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, fill: color }));
      }
      const sw = document.createElement('span');
      const box = svg('svg', { width: 10, height: 10, class: 'swatch' });
      box.append(svg('rect', { width: 10, height: 10, fill: color }));
      sw.append(box, document.createTextNode(` ${name}`));
      legend.append(sw);
    }
  }

  const api = {
    el: wrap,
    svg: root,
    append(name, x, y) {
      if (!series.has(name)) series.set(name, []);
      series.get(name).push([Number(x), Number(y)]);
      draw();
    },
    set(name, points) {
      series.set(name, points.map(([x, y]) => [Number(x), Number(y)]));
      draw();
    },
    clear() {
      for (const k of series.keys()) series.set(k, []);
      draw();
    },
  };
  draw();
  return api;
}
