// Per-query metrics of one ranked list against graded judgments, as trec_eval (pytrec_eval) computes them:
// gain = the grade, discount log2(rank + 1), ideal list from every judged document; relevant = grade > 0.

export function ndcg(ids, judgments, cutoff = 10) {
  const gains = Object.values(judgments).filter((g) => g > 0).sort((x, y) => y - x);
  let ideal = 0;
  gains.slice(0, cutoff).forEach((g, i) => { ideal += g / Math.log2(i + 2); });
  if (ideal === 0) return null;
  let dcg = 0;
  ids.slice(0, cutoff).forEach((id, i) => {
    const g = judgments[id] || 0;
    if (g > 0) dcg += g / Math.log2(i + 2);
  });
  return dcg / ideal;
}

export function recall(ids, judgments, cutoff) {
  const relevant = Object.keys(judgments).filter((id) => judgments[id] > 0);
  if (relevant.length === 0) return null;
  const found = ids.slice(0, cutoff).filter((id) => judgments[id] > 0).length;
  return found / relevant.length;
}

export const fmt = (value, digits = 4) => (value === null || value === undefined ? "–" : value.toFixed(digits));
