// A configuration: everything about a search but its text. It lives in the URL (a.* / b.* parameters), in a form,
// and becomes a SearchRequest body for POST /v1/indexes/{name}/search.

// What each retriever kind offers (the request schema's documentation; the server refuses anything else with 422).
export const PRF_METHODS = { bm25: ["rm3", "rocchio"], splade: ["rocchio"], dense: ["average", "rocchio"] };
export const QUERY_MODES = { splade: ["torch", "onnx", "onnx-int8", "tokens"], dense: ["torch", "onnx", "onnx-int8"] };
export const NORMALIZATIONS = ["minmax", "zscore", "dbsf"];

export function defaultConfig(retrievers) {
  return { ret: [...retrievers], fus: "rrf", rrfk: null, norm: "minmax", w: {}, prf: {}, qm: {}, depth: null,
    filter: "", exact: false };
}

const pairs = (text) => Object.fromEntries((text || "").split(",").filter((p) => p.includes(":")).map((p) => {
  const at = p.lastIndexOf(":");
  return [p.slice(0, at), p.slice(at + 1)];
}));
const unpairs = (map) => Object.entries(map).map(([k, v]) => `${k}:${v}`).join(",");
const positiveInt = (text) => (/^\d+$/.test(text || "") && Number(text) > 0 ? Number(text) : null);

export function configFromParams(params, prefix, retrievers) {
  const config = defaultConfig(retrievers);
  const get = (name) => params.get(`${prefix}.${name}`);
  if (get("ret") !== null) config.ret = get("ret").split(",").filter((r) => retrievers.includes(r));
  if (get("fus") === "weighted") config.fus = "weighted";
  config.rrfk = positiveInt(get("rrfk"));
  if (NORMALIZATIONS.includes(get("norm"))) config.norm = get("norm");
  config.w = Object.fromEntries(Object.entries(pairs(get("w"))).filter(([, v]) => v !== "" && !Number.isNaN(Number(v)))
    .map(([k, v]) => [k, Number(v)]));
  config.prf = pairs(get("prf"));
  config.qm = pairs(get("qm"));
  config.depth = positiveInt(get("depth"));
  config.filter = get("filter") || "";
  config.exact = get("exact") === "1";
  return config;
}

export function configToParams(config, prefix, params, retrievers) {
  const set = (name, value) => { if (value !== null && value !== "" && value !== undefined) params.set(`${prefix}.${name}`, value); };
  if (config.ret.join(",") !== retrievers.join(",")) set("ret", config.ret.join(","));
  if (config.fus !== "rrf") set("fus", config.fus);
  set("rrfk", config.rrfk);
  if (config.fus === "weighted" && config.norm !== "minmax") set("norm", config.norm);
  set("w", unpairs(config.w));
  set("prf", unpairs(config.prf));
  set("qm", unpairs(config.qm));
  set("depth", config.depth);
  set("filter", config.filter.trim());
  if (config.exact) set("exact", "1");
}

const only = (map, names) => Object.fromEntries(Object.entries(map).filter(([k, v]) => names.includes(k) && v !== ""));

// The request body; throws Error with a message for the user when the filter is not JSON.
export function requestBody(config, query, k, features) {
  const body = { query, k, explain: true, highlight: true, include_text: true, retrievers: config.ret };
  const fusion = { method: config.fus };
  if (config.fus === "rrf" && config.rrfk) fusion.rrf_k = config.rrfk;
  if (config.fus === "weighted") {
    fusion.normalization = config.norm;
    const weights = only(config.w, config.ret);
    if (Object.keys(weights).length) fusion.weights = weights;
  }
  body.fusion = fusion;
  const prf = only(config.prf, config.ret);
  if (Object.keys(prf).length) body.prf = Object.fromEntries(Object.entries(prf).map(([k, m]) => [k, { method: m }]));
  const modes = only(config.qm, config.ret);
  if (Object.keys(modes).length) body.query_mode = modes;
  if (config.depth) body.depth = config.depth;
  if (config.filter.trim()) {
    try {
      body.filter = JSON.parse(config.filter);
    } catch {
      throw new Error("the filter is not JSON, e.g. {\"term\": {\"lang\": \"en\"}}");
    }
  }
  if (features.exact && config.exact) body.exact = true;
  return body;
}

// One line that says what a configuration searches, for column headers.
export function describe(config) {
  if (!config.ret.length) return "no retriever";
  const extras = [];
  for (const [name, method] of Object.entries(only(config.prf, config.ret))) extras.push(`${name}+${method}`);
  for (const [name, mode] of Object.entries(only(config.qm, config.ret))) extras.push(`${name}:${mode}`);
  if (config.depth) extras.push(`depth ${config.depth}`);
  if (config.filter.trim()) extras.push("filtered");
  if (config.exact) extras.push("exact");
  let head;
  if (config.ret.length === 1) head = config.ret[0];
  else if (config.fus === "rrf") head = `rrf${config.rrfk ? `(k=${config.rrfk})` : ""}: ${config.ret.join("+")}`;
  else head = `weighted ${config.norm}: ${config.ret.map((r) => `${r}=${config.w[r] ?? 1}`).join(", ")}`;
  return extras.length ? `${head} · ${extras.join(", ")}` : head;
}

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
};

// The form of one configuration; ``onChange(config)`` after every edit (the caller re-searches).
export function renderConfigForm(container, side, config, retrievers, features, onChange) {
  container.replaceChildren();
  const id = (name) => `${side}-${name}`;
  const changed = () => onChange(config);
  const kinds = Object.fromEntries(retrievers.map((r) => [r.name, r.kind]));

  const ret = el("fieldset", { className: "ret" }, el("legend", { textContent: "Retrievers" }));
  for (const r of retrievers) {
    const box = el("input", { type: "checkbox", id: id(`ret-${r.name}`), checked: config.ret.includes(r.name) });
    box.dataset.retriever = r.name;
    box.addEventListener("change", () => {
      const chosen = new Set(config.ret);
      if (box.checked) chosen.add(r.name); else chosen.delete(r.name);
      config.ret = retrievers.map((x) => x.name).filter((n) => chosen.has(n));
      renderConfigForm(container, side, config, retrievers, features, onChange);
      changed();
    });
    ret.append(el("label", { htmlFor: box.id, title: r.description || r.kind }, box, ` ${r.name}`,
      el("small", { textContent: ` ${r.kind}` })));
  }
  container.append(ret);

  const fusion = el("fieldset", { className: "fusion" }, el("legend", { textContent: "Fusion" }));
  const method = el("select", { id: id("fus") });
  for (const m of ["rrf", "weighted"]) method.append(el("option", { value: m, textContent: m, selected: config.fus === m }));
  method.addEventListener("change", () => {
    config.fus = method.value;
    renderConfigForm(container, side, config, retrievers, features, onChange);
    changed();
  });
  fusion.append(el("label", { htmlFor: method.id, textContent: "method " }), method);
  if (config.fus === "rrf") {
    const k = el("input", { type: "number", id: id("rrfk"), min: 1, max: 100000, placeholder: "60",
      value: config.rrfk ?? "", className: "narrow" });
    k.addEventListener("change", () => { config.rrfk = Number(k.value) > 0 ? Math.round(Number(k.value)) : null; changed(); });
    fusion.append(el("label", { htmlFor: k.id, textContent: " k " }), k);
  } else {
    const norm = el("select", { id: id("norm") });
    for (const n of NORMALIZATIONS) norm.append(el("option", { value: n, textContent: n, selected: config.norm === n }));
    norm.addEventListener("change", () => { config.norm = norm.value; changed(); });
    fusion.append(el("label", { htmlFor: norm.id, textContent: " normalization " }), norm);
    const weights = el("div", { className: "weights" });
    for (const name of config.ret) {
      const w = el("input", { type: "number", id: id(`w-${name}`), min: 0, step: 0.1, value: config.w[name] ?? 1,
        className: "narrow" });
      w.addEventListener("change", () => {
        if (w.value === "" || Number(w.value) < 0) delete config.w[name]; else config.w[name] = Number(w.value);
        changed();
      });
      weights.append(el("label", { htmlFor: w.id, textContent: `${name} ` }), w);
    }
    fusion.append(weights);
  }
  container.append(fusion);

  const more = el("fieldset", { className: "more" }, el("legend", { textContent: "Per retriever" }));
  for (const name of config.ret) {
    const kind = kinds[name];
    const row = el("div", { className: "per" }, el("span", { textContent: name }));
    if (PRF_METHODS[kind]) {
      const prf = el("select", { id: id(`prf-${name}`) }, el("option", { value: "", textContent: "no PRF" }));
      for (const m of PRF_METHODS[kind]) prf.append(el("option", { value: m, textContent: `PRF ${m}`, selected: config.prf[name] === m }));
      prf.addEventListener("change", () => { if (prf.value) config.prf[name] = prf.value; else delete config.prf[name]; changed(); });
      row.append(el("label", { htmlFor: prf.id, className: "sr", textContent: `${name} PRF` }), prf);
    }
    if (QUERY_MODES[kind]) {
      const qm = el("select", { id: id(`qm-${name}`) }, el("option", { value: "", textContent: "default mode" }));
      for (const m of QUERY_MODES[kind]) qm.append(el("option", { value: m, textContent: m, selected: config.qm[name] === m }));
      qm.addEventListener("change", () => { if (qm.value) config.qm[name] = qm.value; else delete config.qm[name]; changed(); });
      row.append(el("label", { htmlFor: qm.id, className: "sr", textContent: `${name} query mode` }), qm);
    }
    more.append(row);
  }
  const depth = el("input", { type: "number", id: id("depth"), min: 1, max: 10000, placeholder: "100",
    value: config.depth ?? "", className: "narrow" });
  depth.addEventListener("change", () => { config.depth = Number(depth.value) > 0 ? Math.round(Number(depth.value)) : null; changed(); });
  more.append(el("div", {}, el("label", { htmlFor: depth.id, textContent: "depth " }), depth));
  if (features.exact) {
    const exact = el("input", { type: "checkbox", id: id("exact"), checked: config.exact });
    exact.addEventListener("change", () => { config.exact = exact.checked; changed(); });
    more.append(el("div", {}, el("label", { htmlFor: exact.id }, exact, " exact (no approximation)")));
  }
  const filter = el("textarea", { id: id("filter"), rows: 2, value: config.filter,
    placeholder: "filter JSON, e.g. {\"term\": {\"lang\": \"en\"}}", spellcheck: false });
  filter.addEventListener("change", () => { config.filter = filter.value; changed(); });
  more.append(el("label", { htmlFor: filter.id, className: "sr", textContent: "filter" }), filter);
  container.append(more);
}
