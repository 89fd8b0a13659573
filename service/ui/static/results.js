// One column of results: hits with title, highlighted snippet, score, judgment grade, rank shift against the other
// column, and each retriever's part in the fused score.
import { fmt, ndcg, recall } from "./metrics.js";

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

// The server marks query terms with <em>...</em> in otherwise raw text: escape everything, then restore the marks.
export function snippetHtml(hit) {
  if (hit.highlight) return escapeHtml(hit.highlight).replace(/&lt;(\/?)em&gt;/g, "<$1em>");
  const text = hit.text || "";
  return escapeHtml(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

// In the order the search listed its retrievers (the explanation's own keys come in the engine's order).
function explanation(hit, order) {
  const parts = [];
  const explain = hit.explain || {};
  const names = [...order.filter((n) => n in explain), ...Object.keys(explain).filter((n) => !order.includes(n))];
  for (const [name, part] of names.map((n) => [n, explain[n]])) {
    const share = hit.contributions ? hit.contributions[name] : part && part.contribution;
    const chip = el("span", { className: part ? "why" : "why missed" });
    chip.dataset.retriever = name;
    chip.textContent = part
      ? `${name} #${part.rank} (${fmt(part.score, 3)})${share !== undefined && share !== null ? ` +${fmt(share, 4)}` : ""}`
      : `${name} –`;
    chip.title = part
      ? `${name}: rank ${part.rank}, score ${part.score}` + (part.normalized !== undefined && part.normalized !== null
        ? `, normalized ${part.normalized}` : "") + (share !== undefined && share !== null ? `, adds ${share} to the fused score` : "")
      : `${name} did not return this document`;
    parts.push(chip);
  }
  return parts.length ? el("div", { className: "explain" }, ...parts) : null;
}

function shiftBadge(rank, other) {
  if (!other) return null;
  const there = other.get(rank.id);
  const badge = el("span", { className: "shift" });
  if (there === undefined) {
    badge.textContent = rank.side === "b" ? "new" : "out";
    badge.classList.add(rank.side === "b" ? "new" : "out");
    badge.title = rank.side === "b" ? "not in A's list" : "not in B's list";
  } else if (rank.side === "b") {
    const moved = there - rank.rank;
    badge.textContent = moved > 0 ? `▲${moved}` : moved < 0 ? `▼${-moved}` : "=";
    badge.classList.add(moved > 0 ? "up" : moved < 0 ? "down" : "same");
    badge.title = `rank ${there} in A`;
  } else {
    badge.textContent = `→${there}`;
    badge.classList.add(there < rank.rank ? "up" : there > rank.rank ? "down" : "same");
    badge.title = `rank ${there} in B`;
  }
  return badge;
}

function gradeBadge(id, judgments) {
  if (!judgments) return null;
  const grade = judgments[id];
  if (grade === undefined) return el("span", { className: "grade unjudged", textContent: "?", title: "not judged" });
  return el("span", { className: `grade g${Math.max(0, Math.min(grade, 3))}`, textContent: String(grade),
    title: grade > 0 ? `judged relevant, grade ${grade}` : "judged not relevant" });
}

// Renders ``result`` into ``column`` (a <section>); ``other`` maps the other column's ids to their ranks.
export function renderColumn(column, { side, title, result, error, judgments, other, k }) {
  const list = column.querySelector("ol.hits");
  const head = column.querySelector(".colhead");
  head.replaceChildren(el("h2", { textContent: title }));
  list.replaceChildren();
  column.dataset.state = error ? "error" : result ? "done" : "empty";
  if (error) {
    list.append(el("li", { className: "error", role: "alert", textContent: error }));
    return;
  }
  if (!result) return;
  const ids = result.hits.map((h) => h.id);
  const stats = el("div", { className: "stats" });
  stats.append(el("span", { textContent: `${result.hits.length} hits · ${fmt(result.took_ms, 1)} ms` }));
  if (judgments) {
    const n = ndcg(ids, judgments, 10);
    const r = recall(ids, judgments, k);
    stats.append(el("span", { className: "metric ndcg", textContent: `nDCG@10 ${fmt(n)}` }),
      el("span", { className: "metric recall", textContent: `R@${k} ${fmt(r)}` }));
  }
  head.append(stats);
  if (!result.hits.length) list.append(el("li", { className: "empty", textContent: "no hits" }));
  for (const hit of result.hits) {
    const item = el("li", { className: "hit", tabIndex: 0 });
    item.dataset.doc = hit.id;
    const snippet = el("div", { className: "snippet" });
    snippet.innerHTML = snippetHtml(hit);
    item.append(
      el("div", { className: "line" },
        el("span", { className: "rank", textContent: String(hit.rank) }),
        gradeBadge(hit.id, judgments),
        shiftBadge({ id: hit.id, rank: hit.rank, side }, other),
        el("span", { className: "title", textContent: hit.title || "(no title)" }),
        el("span", { className: "score", textContent: fmt(hit.score, 4), title: `fused score ${hit.score}` })),
      el("div", { className: "docid", textContent: hit.id }),
      snippet,
      explanation(hit, result.retrievers || []));
    list.append(item);
  }
}
