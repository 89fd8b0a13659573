// The harness's leaderboard (GET /v1/leaderboard): methods x datasets with significance marks, a quality-versus-latency
// plot drawn here in SVG, and two methods compared query by query (GET /v1/leaderboard/compare).
import { api } from "./api.js";
import { fmt } from "./metrics.js";

const SVG = "http://www.w3.org/2000/svg";
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};
const svgEl = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
export const latency = (row) => row.encode_ms + row.search_ms + row.fuse_ms;

export function marks(row, alpha = 0.05) {
  const out = [];
  if (row.p_vs_bm25 !== null && row.p_vs_bm25 !== undefined && row.p_vs_bm25 < alpha) out.push("†");
  if (row.p_vs_best_single !== null && row.p_vs_best_single !== undefined && row.p_vs_best_single < alpha) out.push("‡");
  if (row.p_vs_base !== null && row.p_vs_base !== undefined && row.p_vs_base < alpha) out.push("§");
  return out.join("");
}

export function renderTable(container, board, metric) {
  const rows = board.results;
  const datasets = [...new Set(rows.map((r) => r.dataset))];
  const methods = [...new Set(rows.map((r) => r.method))];
  const cell = new Map(rows.map((r) => [`${r.method}\u0000${r.dataset}`, r]));
  const best = Object.fromEntries(datasets.map((d) => [d, Math.max(...rows.filter((r) => r.dataset === d)
    .map((r) => r.scores[metric] ?? -Infinity))]));
  const table = el("table", { className: "board" });
  const head = el("tr", {}, el("th", { scope: "col", textContent: "#" }), el("th", { scope: "col", textContent: "method" }));
  for (const d of datasets) head.append(el("th", { scope: "col", textContent: d }));
  if (datasets.length > 1) head.append(el("th", { scope: "col", textContent: "average" }));
  head.append(el("th", { scope: "col", textContent: "ms/query" }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  methods.forEach((method, number) => {
    const tr = el("tr", {}, el("td", { className: "num", textContent: String(number + 1) }),
      el("th", { scope: "row", textContent: method }));
    const mine = [];
    for (const d of datasets) {
      const r = cell.get(`${method}\u0000${d}`);
      const value = r ? r.scores[metric] : undefined;
      if (value !== undefined) mine.push(value);
      const td = el("td", { className: "num" });
      if (value !== undefined) {
        td.append(value.toFixed(4));
        if (metric === board.primary && marks(r)) {
          td.append(el("sup", { className: "sig", textContent: marks(r), title: [
            r.p_vs_bm25 !== null ? `p vs bm25 ${fmt(r.p_vs_bm25)}` : null,
            r.p_vs_best_single !== null ? `p vs best single (${r.best_single}) ${fmt(r.p_vs_best_single)}` : null,
            r.p_vs_base !== null ? `p vs ${r.base} ${fmt(r.p_vs_base)}` : null].filter(Boolean).join("; ") }));
        }
        if (value === best[d]) td.classList.add("best");
      } else td.textContent = "–";
      tr.append(td);
    }
    if (datasets.length > 1) tr.append(el("td", { className: "num", textContent: mine.length ? (mine.reduce((x, y) => x + y, 0) / mine.length).toFixed(4) : "–" }));
    const lat = rows.filter((r) => r.method === method).map(latency);
    tr.append(el("td", { className: "num", textContent: (lat.reduce((x, y) => x + y, 0) / lat.length).toFixed(1) }));
    body.append(tr);
  });
  table.append(body);
  container.replaceChildren(table, el("p", { className: "legend",
    textContent: `Significance (paired randomization test on per-query ${board.primary}, p < 0.05): † vs bm25, ` +
      "‡ vs the best single retriever, § vs the method it refines. Best per dataset in bold." }));
}

export function renderPlot(container, board, metric) {
  const rows = board.results.filter((r) => r.scores[metric] !== undefined && latency(r) > 0);
  const W = 640, H = 320, L = 56, R = 16, T = 16, B = 40;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img",
    "aria-label": `${metric} versus milliseconds per query` });
  if (!rows.length) { container.replaceChildren(el("p", { textContent: "nothing to plot" })); return; }
  const xs = rows.map((r) => Math.log10(latency(r)));
  const ys = rows.map((r) => r.scores[metric]);
  const pad = (lo, hi) => (hi - lo < 1e-9 ? [lo - 0.5, hi + 0.5] : [lo - (hi - lo) * 0.08, hi + (hi - lo) * 0.08]);
  const [x0, x1] = pad(Math.min(...xs), Math.max(...xs));
  const [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
  const X = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => H - B - ((v - y0) / (y1 - y0)) * (H - T - B);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }),
    svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (let e = Math.ceil(x0); e <= Math.floor(x1); e++) {
    const t = svgEl("text", { x: X(e), y: H - B + 16, class: "tick", "text-anchor": "middle" });
    t.textContent = `${10 ** e} ms`;
    svg.append(t, svgEl("line", { x1: X(e), y1: T, x2: X(e), y2: H - B, class: "grid" }));
  }
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    const t = svgEl("text", { x: L - 6, y: Y(v) + 4, class: "tick", "text-anchor": "end" });
    t.textContent = v.toFixed(3);
    svg.append(t);
  }
  const xl = svgEl("text", { x: (L + W - R) / 2, y: H - 6, class: "label", "text-anchor": "middle" });
  xl.textContent = "ms per query (encode + search + fuse, log scale)";
  const yl = svgEl("text", { x: 12, y: (T + H - B) / 2, class: "label", transform: `rotate(-90 12 ${(T + H - B) / 2})`,
    "text-anchor": "middle" });
  yl.textContent = metric;
  svg.append(xl, yl);
  const datasets = [...new Set(rows.map((r) => r.dataset))];
  const methods = [...new Set(board.results.map((r) => r.method))];
  rows.forEach((r, i) => {
    const color = COLORS[datasets.indexOf(r.dataset) % COLORS.length];
    const point = svgEl("circle", { cx: X(xs[i]), cy: Y(ys[i]), r: 4, fill: color, class: "point" });
    const tip = svgEl("title");
    tip.textContent = `${methods.indexOf(r.method) + 1}. ${r.method} on ${r.dataset}: ${metric} ${ys[i].toFixed(4)}, ${latency(r).toFixed(1)} ms/query`;
    point.append(tip);
    // Points carry the table's row numbers (method names overlap where methods cluster); the tooltip names them.
    const label = svgEl("text", { x: X(xs[i]) + 6, y: Y(ys[i]) - 4, class: "point-label" });
    label.textContent = String(methods.indexOf(r.method) + 1);
    svg.append(point, label);
  });
  const legend = el("div", { className: "plot-legend" }, ...datasets.map((d, i) => {
    const swatch = el("span", { className: "swatch" });
    swatch.style.background = COLORS[i % COLORS.length];  // CSSOM, which the page's style policy allows
    return el("span", {}, swatch, ` ${d}`);
  }));
  container.replaceChildren(svg, legend);
}

// Two methods' per-query values: summary, a bar per query (a - b, sorted), and the queries that moved most.
export async function renderComparison(container, { dataset, a, b, metric }, openQuery) {
  container.replaceChildren(el("p", { className: "busy", textContent: "comparing…" }));
  let found;
  try {
    found = await api.compare(dataset, a, b, metric);
  } catch (err) {
    container.replaceChildren(el("p", { className: "error", role: "alert", textContent: err.message }));
    return;
  }
  const summary = el("p", { className: "wl" },
    el("strong", { textContent: a }), ` wins ${found.wins}, loses ${found.losses}, ties ${found.ties} against `,
    el("strong", { textContent: b }),
    ` on ${found.queries.length} ${dataset} queries (${found.metric}: ${fmt(found.mean_a)} vs ${fmt(found.mean_b)}, ` +
    `p = ${found.p_value < 0.0001 ? "<0.0001" : fmt(found.p_value)}).`);
  summary.dataset.wins = found.wins;
  summary.dataset.losses = found.losses;
  const diffs = found.queries.map((q) => ({ ...q, d: q.a - q.b })).sort((x, y) => y.d - x.d);
  const W = 640, H = 160, mid = H / 2;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "bars", role: "img",
    "aria-label": `per-query ${found.metric} of ${a} minus ${b}, sorted` });
  const span = Math.max(1e-9, ...diffs.map((q) => Math.abs(q.d)));
  const w = W / Math.max(diffs.length, 1);
  diffs.forEach((q, i) => {
    const h = (Math.abs(q.d) / span) * (mid - 4);
    const bar = svgEl("rect", { x: i * w, y: q.d >= 0 ? mid - h : mid, width: Math.max(w - 0.5, 0.5), height: Math.max(h, 0.5),
      class: q.d > 1e-9 ? "win" : q.d < -1e-9 ? "loss" : "tie" });
    const tip = svgEl("title");
    tip.textContent = `query ${q.id}: ${fmt(q.a)} vs ${fmt(q.b)}`;
    bar.append(tip);
    svg.append(bar);
  });
  svg.append(svgEl("line", { x1: 0, y1: mid, x2: W, y2: mid, class: "axis" }));
  const table = el("table", { className: "movers" }, el("thead", {}, el("tr", {},
    ...["query", a.length > 24 ? "A" : a, b.length > 24 ? "B" : b, "A − B", ""].map((t) => el("th", { scope: "col", textContent: t })))));
  const body = el("tbody");
  const movers = [...diffs.slice(0, 10), ...diffs.slice(-10).reverse()].filter((q, i, all) => all.indexOf(q) === i && Math.abs(q.d) > 1e-9);
  for (const q of movers) {
    const open = openQuery(q.id);
    body.append(el("tr", { className: q.d > 0 ? "win" : "loss" }, el("td", { textContent: q.id }),
      el("td", { className: "num", textContent: fmt(q.a) }), el("td", { className: "num", textContent: fmt(q.b) }),
      el("td", { className: "num", textContent: (q.d > 0 ? "+" : "") + q.d.toFixed(4) }),
      el("td", {}, open ? el("a", { href: open, textContent: "open in search" }) : null)));
  }
  table.append(body);
  container.replaceChildren(summary, svg, el("h3", { textContent: "Largest wins and losses" }), table);
}
