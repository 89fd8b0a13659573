// The workbench: state in the URL, one or two result columns, judgments, the leaderboard. Public REST API only.
import { api, apiKey, setApiKey } from "./api.js";
import { configFromParams, configToParams, defaultConfig, describe, PRF_METHODS, renderConfigForm, requestBody } from "./config.js";
import { renderComparison, renderPlot, renderTable } from "./leaderboard.js";
import { renderColumn } from "./results.js";
import { drawShifts } from "./shift.js";

const $ = (selector) => document.querySelector(selector);
const SIDES = ["a", "b"];
const state = { view: "search", index: "", q: "", qid: null, k: 10, compare: false, a: null, b: null,
  lb: { metric: "", dataset: "", a: "", b: "" } };
const cache = { indexes: [], queries: new Map(), qrels: new Map(), features: { exact: false }, board: null };
const shown = { a: { result: null, error: null }, b: { result: null, error: null } };
const pending = { a: null, b: null };
let judgments = null;

function banner(text, kind = "info") {
  const node = $("#banner");
  node.hidden = !text;
  node.textContent = text || "";
  node.className = kind;
}

const retrieversOf = (name) => (cache.indexes.find((i) => i.name === name) || { retrievers: [] }).retrievers;
const names = (name) => retrieversOf(name).map((r) => r.name);

// The second configuration to compare with, when the URL gives none: one retriever against the fused all, or
// the same retriever with and without PRF where the index has just one.
function defaultB(retrievers) {
  const b = defaultConfig(retrievers.map((r) => r.name));
  if (retrievers.length > 1) b.ret = [retrievers[0].name];
  else if (retrievers.length === 1 && PRF_METHODS[retrievers[0].kind]) b.prf = { [retrievers[0].name]: PRF_METHODS[retrievers[0].kind][0] };
  return b;
}

// --- the URL ------------------------------------------------------------------------------------------------------
function toUrl() {
  const params = new URLSearchParams();
  if (state.view !== "search") params.set("view", state.view);
  if (state.index) params.set("index", state.index);
  if (state.q) params.set("q", state.q);
  if (state.qid) params.set("qid", state.qid);
  if (state.k !== 10) params.set("k", state.k);
  if (state.compare) params.set("cmp", "1");
  const all = names(state.index);
  if (state.a) configToParams(state.a, "a", params, all);
  if (state.compare && state.b) configToParams(state.b, "b", params, all);
  for (const [key, value] of Object.entries(state.lb)) if (value) params.set(`lb.${key}`, value);
  const url = `${location.pathname}?${params}`;
  if (url !== `${location.pathname}${location.search}`) history.replaceState(null, "", url);
}

function fromUrl() {
  const params = new URLSearchParams(location.search);
  state.view = params.get("view") === "leaderboard" ? "leaderboard" : "search";
  state.index = params.get("index") || "";
  state.q = params.get("q") || "";
  state.qid = params.get("qid") || null;
  state.k = [10, 20, 50, 100].includes(Number(params.get("k"))) ? Number(params.get("k")) : 10;
  state.compare = params.get("cmp") === "1";
  for (const key of Object.keys(state.lb)) state.lb[key] = params.get(`lb.${key}`) || "";
  return params;
}

// --- search -------------------------------------------------------------------------------------------------------
async function loadJudgments() {
  judgments = null;
  const queries = cache.queries.get(state.index);
  if (!state.qid || !queries) return;
  const key = `${state.index}\u0000${state.qid}`;
  if (!cache.qrels.has(key)) {
    try {
      cache.qrels.set(key, (await api.qrels(state.index, state.qid)).judgments[state.qid] || {});
    } catch {
      cache.qrels.set(key, null);
    }
  }
  judgments = cache.qrels.get(key);
}

async function searchSide(side) {
  const config = state[side];
  if (pending[side]) pending[side].abort();
  shown[side] = { result: null, error: null };
  if (!state.q.trim() || !state.index) return;
  if (!config.ret.length) { shown[side].error = "choose at least one retriever"; return; }
  let body;
  try {
    body = requestBody(config, state.q, state.k, cache.features);
  } catch (err) {
    shown[side].error = err.message;
    return;
  }
  const controller = new AbortController();
  pending[side] = controller;
  try {
    shown[side].result = await api.search(state.index, body, { signal: controller.signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    shown[side].error = err.message;
    if (err.status === 401 || err.status === 403) banner("This server needs an API key with the search scope: enter it above.", "warn");
  } finally {
    if (pending[side] === controller) pending[side] = null;
  }
}

let generation = 0;
async function runSearch(sides = state.compare ? SIDES : ["a"]) {
  const mine = ++generation;
  toUrl();
  $("#columns").dataset.busy = "1";
  try {
    await Promise.all([loadJudgments(), ...sides.map(searchSide)]);
  } catch (err) {
    if (err.name === "AbortError") return;
    throw err;
  }
  if (mine !== generation) return;
  delete $("#columns").dataset.busy;
  render();
}

function ranks(side) {
  const result = shown[side].result;
  return result ? new Map(result.hits.map((h) => [h.id, h.rank])) : null;
}

function render() {
  const columns = $("#columns");
  columns.classList.toggle("compare", state.compare);
  $("#col-b").hidden = !state.compare;
  for (const side of SIDES) {
    if (side === "b" && !state.compare) continue;
    const other = state.compare ? ranks(side === "a" ? "b" : "a") : null;
    renderColumn($(`#col-${side}`), { side, title: `${side.toUpperCase()} · ${describe(state[side])}`,
      result: shown[side].result, error: shown[side].error, judgments, other, k: state.k });
  }
  redrawShifts();
  const queries = cache.queries.get(state.index);
  const info = $("#qinfo");
  const picked = queries && state.qid ? queries.queries.find((q) => q.id === state.qid) : null;
  info.textContent = picked ? `query ${picked.id}: ${picked.relevant} relevant judged` : "";
  document.title = `${state.q ? `${state.q} · ` : ""}Relevance workbench`;
}

function redrawShifts() {
  const svg = $("#shifts");
  if (state.compare && shown.a.result && shown.b.result) drawShifts(svg, $("#col-a ol.hits"), $("#col-b ol.hits"));
  else svg.replaceChildren();
}

function renderForms() {
  const retrievers = retrieversOf(state.index);
  for (const side of SIDES) {
    renderConfigForm($(`#col-${side} .form`), side, state[side], retrievers, cache.features, () => {
      toUrl();
      runSearch([side]);
    });
  }
}

// --- indexes and judged queries -------------------------------------------------------------------------------------
async function queriesOf(name) {
  if (!cache.queries.has(name)) {
    try {
      cache.queries.set(name, await api.queries(name));
    } catch {
      cache.queries.set(name, null);  // built from something other than a BEIR folder with judgments
    }
  }
  return cache.queries.get(name);
}

async function selectIndex(name, params = null) {
  state.index = name;
  $("#index").value = name;
  const all = names(name);
  const retrievers = retrieversOf(name);
  state.a = params ? configFromParams(params, "a", all) : defaultConfig(all);
  state.b = params && [...params.keys()].some((key) => key.startsWith("b.")) ? configFromParams(params, "b", all) : defaultB(retrievers);
  renderForms();
  const queries = await queriesOf(name);
  const pick = $("#qpick");
  pick.replaceChildren(new Option("— type your own query —", ""));
  $("#judged").hidden = !queries;
  if (queries) {
    for (const q of queries.queries) pick.append(new Option(`${q.id} · ${q.text.slice(0, 90)}`, q.id));
    if (state.qid && !queries.queries.some((q) => q.id === state.qid)) state.qid = null;
    pick.value = state.qid || "";
  } else state.qid = null;
}

function pickQuery(qid) {
  const queries = cache.queries.get(state.index);
  const found = queries && queries.queries.find((q) => q.id === qid);
  state.qid = found ? found.id : null;
  $("#qpick").value = state.qid || "";
  if (found) {
    state.q = found.text;
    $("#q").value = found.text;
    runSearch();
  }
}

function stepQuery(delta) {
  const queries = cache.queries.get(state.index);
  if (!queries || !queries.queries.length) return;
  const at = queries.queries.findIndex((q) => q.id === state.qid);
  const next = at < 0 ? (delta > 0 ? 0 : queries.queries.length - 1) : (at + delta + queries.queries.length) % queries.queries.length;
  pickQuery(queries.queries[next].id);
}

// A typed query that is one of the collection's own keeps its judgments.
function matchQuery(text) {
  const queries = cache.queries.get(state.index);
  const found = queries && queries.queries.find((q) => q.text.trim() === text.trim());
  state.qid = found ? found.id : null;
  $("#qpick").value = state.qid || "";
}

// --- leaderboard --------------------------------------------------------------------------------------------------
function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => new Option(v, v)));
  if (values.includes(chosen)) select.value = chosen;
}

function comparable(dataset) {
  return cache.board.results.filter((r) => r.dataset === dataset && r.per_query).map((r) => r.method);
}

function fillCompareForm() {
  const board = cache.board;
  const datasets = [...new Set(board.results.map((r) => r.dataset))];
  fillSelect($("#lb-dataset"), datasets, state.lb.dataset);
  const dataset = $("#lb-dataset").value;
  const methods = comparable(dataset);
  const metric = $("#lb-metric").value;
  const byScore = [...methods].sort((x, y) => {
    const score = (m) => board.results.find((r) => r.dataset === dataset && r.method === m).scores[metric] ?? -1;
    return score(y) - score(x);
  });
  fillSelect($("#lb-a"), methods, state.lb.a || byScore[0]);
  fillSelect($("#lb-b"), methods, state.lb.b || (methods.includes("bm25") && byScore[0] !== "bm25" ? "bm25" : byScore[1]));
  $("#lb-go").disabled = methods.length < 2;
}

async function showLeaderboard() {
  if (!cache.board) {
    $("#lb-table").textContent = "loading…";
    try {
      cache.board = await api.leaderboard();
    } catch (err) {
      $("#lb-table").replaceChildren(Object.assign(document.createElement("p"), { className: "error", role: "alert", textContent: err.message }));
      return;
    }
    const metrics = [...new Set(cache.board.results.flatMap((r) => Object.keys(r.scores)))];
    fillSelect($("#lb-metric"), metrics, state.lb.metric || cache.board.primary);
    $("#lb-command").textContent = cache.board.command ? `from: ${cache.board.command}` : "";
  }
  const metric = $("#lb-metric").value;
  renderTable($("#lb-table"), cache.board, metric);
  renderPlot($("#lb-plot"), cache.board, metric);
  fillCompareForm();
  if (state.lb.a && state.lb.b) compareMethods();
}

async function compareMethods() {
  Object.assign(state.lb, { dataset: $("#lb-dataset").value, a: $("#lb-a").value, b: $("#lb-b").value, metric: $("#lb-metric").value });
  toUrl();
  await Promise.all(cache.indexes.map((i) => queriesOf(i.name)));
  const { dataset } = state.lb;
  const index = cache.indexes.find((i) => (cache.queries.get(i.name) || {}).dataset === dataset);
  const openQuery = (qid) => {
    if (!index) return null;
    const found = cache.queries.get(index.name).queries.find((q) => q.id === qid);
    return found ? `?${new URLSearchParams({ index: index.name, qid, q: found.text })}` : null;
  };
  await renderComparison($("#lb-result"), state.lb, openQuery);
}

// --- views, keys, events ------------------------------------------------------------------------------------------
function showView(view) {
  state.view = view;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
  }
  $("#view-search").hidden = view !== "search";
  $("#view-leaderboard").hidden = view !== "leaderboard";
  toUrl();
  if (view === "leaderboard") showLeaderboard();
  else redrawShifts();
}

function toggleCompare(on = !state.compare) {
  state.compare = on;
  $("#compare").checked = on;
  render();
  if (on && state.q && !shown.b.result) runSearch(["b"]);
  else toUrl();
}

function moveHit(delta) {
  const hits = [...document.querySelectorAll(".column:not([hidden]) li.hit")];
  if (!hits.length) return;
  const at = hits.indexOf(document.activeElement);
  hits[at < 0 ? 0 : Math.max(0, Math.min(hits.length - 1, at + delta))].focus();
}

function lightTwins(id) {
  for (const node of document.querySelectorAll(".twin")) node.classList.remove("twin");
  if (!id) return;
  for (const node of document.querySelectorAll(`[data-doc="${CSS.escape(id)}"]`)) node.classList.add("twin");
}

function wire() {
  $("#searchform").addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = $("#q").value;
    matchQuery(state.q);
    runSearch();
  });
  $("#index").addEventListener("change", async () => {
    await selectIndex($("#index").value);
    runSearch();
  });
  $("#k").addEventListener("change", () => { state.k = Number($("#k").value); runSearch(); });
  $("#compare").addEventListener("change", () => toggleCompare($("#compare").checked));
  $("#swap").addEventListener("click", () => swap());
  $("#qpick").addEventListener("change", () => {
    if ($("#qpick").value) pickQuery($("#qpick").value);
    else { state.qid = null; runSearch(); }
  });
  $("#prev").addEventListener("click", () => stepQuery(-1));
  $("#next").addEventListener("click", () => stepQuery(1));
  $("#share").addEventListener("click", async () => {
    toUrl();
    try {
      await navigator.clipboard.writeText(location.href);
      banner("Link copied: it opens this comparison as it is now (the API key is not in it).");
    } catch {
      banner(`Link: ${location.href}`);
    }
  });
  $("#keyform").addEventListener("submit", async (event) => {
    event.preventDefault();
    setApiKey($("#key").value.trim());
    banner("");
    await start();
  });
  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  $("#lb-metric").addEventListener("change", () => { state.lb.metric = $("#lb-metric").value; showLeaderboard(); });
  $("#lb-dataset").addEventListener("change", () => { state.lb.dataset = $("#lb-dataset").value; state.lb.a = state.lb.b = ""; fillCompareForm(); });
  $("#lb-compare").addEventListener("submit", (event) => { event.preventDefault(); compareMethods(); });
  const columns = $("#columns");
  columns.addEventListener("focusin", (event) => lightTwins(event.target.closest("li.hit")?.dataset.doc));
  columns.addEventListener("mouseover", (event) => lightTwins(event.target.closest("li.hit")?.dataset.doc));
  columns.addEventListener("toggle", () => redrawShifts(), true);
  new ResizeObserver(() => redrawShifts()).observe(columns);
  window.addEventListener("popstate", () => start());
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, select, textarea, dialog");
    if (event.key === "Escape" && event.target.matches("input, select, textarea")) { event.target.blur(); return; }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = { "/": () => $("#q").focus(), c: () => toggleCompare(), x: () => swap(), "[": () => stepQuery(-1),
      "]": () => stepQuery(1), j: () => moveHit(1), k: () => moveHit(-1), 1: () => showView("search"),
      2: () => showView("leaderboard"), "?": () => $("#help").showModal() };
    const action = actions[event.key];
    if (action) { event.preventDefault(); action(); }
  });
}

function swap() {
  [state.a, state.b] = [state.b, state.a];
  [shown.a, shown.b] = [shown.b, shown.a];
  if (!state.compare) toggleCompare(true);
  renderForms();
  render();
  toUrl();
}

async function start() {
  delete document.body.dataset.ready;  // set again once the page has loaded what the URL asks (tests wait for it)
  const params = fromUrl();
  $("#key").value = apiKey();
  $("#q").value = state.q;
  $("#k").value = String(state.k);
  $("#compare").checked = state.compare;
  // A shared link opens on its results: the forms fold to their summary lines (Enter or a click unfolds them).
  for (const details of document.querySelectorAll("details.config")) details.open = !state.q;
  try {
    const spec = await api.openapi();
    cache.features.exact = Boolean(spec.components?.schemas?.SearchRequest?.properties?.exact);
  } catch {
    cache.features.exact = false;
  }
  try {
    cache.indexes = (await api.indexes()).indexes;
  } catch (err) {
    if (err.status === 401 || err.status === 403) banner("This server needs an API key with the search scope: enter it above.", "warn");
    else banner(`Could not list the indexes: ${err.message}`, "error");
    document.body.dataset.ready = "1";
    return;
  }
  $("#index").replaceChildren(...cache.indexes.map((i) => new Option(`${i.name} (${i.documents} docs)`, i.name)));
  if (!cache.indexes.length) banner("This server has no index yet: build one with 'hybrid index build'.", "warn");
  else {
    const name = cache.indexes.some((i) => i.name === state.index) ? state.index : cache.indexes[0].name;
    await selectIndex(name, params);
    if (state.q && !state.qid) matchQuery(state.q);  // a shared link's text that is a judged query keeps its grades
  }
  showView(state.view);
  if (state.q) await runSearch(); else render();
  document.body.dataset.ready = "1";
}

wire();
start();
