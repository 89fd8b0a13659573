// Lines between the two columns: each document from its row in A to its row in B (up: moved up in B, down: moved
// down, grey: same rank); a stub with a dot for a document only one list has.
const SVG = "http://www.w3.org/2000/svg";

export function drawShifts(svg, columnA, columnB) {
  svg.replaceChildren();
  const box = svg.getBoundingClientRect();
  const width = box.width;
  const rows = (column) => new Map([...column.querySelectorAll("li.hit")].map((li) => {
    const r = li.getBoundingClientRect();
    return [li.dataset.doc, { y: r.top + r.height / 2 - box.top, rank: Number(li.querySelector(".rank").textContent) }];
  }));
  const a = rows(columnA);
  const b = rows(columnB);
  const line = (x1, y1, x2, y2, cls, id) => {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", `M${x1},${y1} C${width / 2},${y1} ${width / 2},${y2} ${x2},${y2}`);
    path.setAttribute("class", cls);
    path.dataset.doc = id;
    svg.append(path);
  };
  const dot = (x, y, cls, id) => {
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("cx", x);
    c.setAttribute("cy", y);
    c.setAttribute("r", 3);
    c.setAttribute("class", cls);
    c.dataset.doc = id;
    svg.append(c);
  };
  for (const [id, from] of a) {
    const to = b.get(id);
    if (to) line(0, from.y, width, to.y, to.rank < from.rank ? "up" : to.rank > from.rank ? "down" : "same", id);
    else { line(0, from.y, width * 0.3, from.y, "out", id); dot(width * 0.3, from.y, "out", id); }
  }
  for (const [id, to] of b) {
    if (!a.has(id)) { line(width * 0.7, to.y, width, to.y, "new", id); dot(width * 0.7, to.y, "new", id); }
  }
  svg.setAttribute("height", Math.max(columnA.scrollHeight, columnB.scrollHeight));
  svg.dataset.lines = String(svg.querySelectorAll("path").length);
}
