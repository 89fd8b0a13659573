"""The workbench (``/ui``) in a real browser: Debian's chromium driven by Playwright, against the real server over the
harness's index of the tiny judged dataset (fixture ``judged``: BM25, no model; a search key is enough). A typed query
shows hits; a second column shows a second configuration with rank shifts; a judged query shows grades and the same
nDCG@10 and recall pytrec_eval gives; the leaderboard shows the harness's table, plot and per-query comparison; the
URL carries the state; keys drive it; nothing leaves the server's origin. The three-retriever case (fusion weights,
every retriever's explanation) runs over the session index (slow)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from eval.metrics import evaluate, parse_metrics
from service.client import HybridClient
from tests.support import cranfield_docs
from tests.support.judged import INDEX, SEARCH_KEY, Judged
from tests.support.server import Server

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (the test extra)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no system chromium: apt-get install -y chromium (.ci/run does)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
QUERY = "heat transfer in laminar boundary layers"  # none of the judged queries
Page = sync_api.Page


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def _page(browser: sync_api.Browser, origin: str, key: str | None) -> Iterator[Page]:
    """A fresh tab (laptop-sized) that fails the test on a script error or a request leaving ``origin``."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    if key:
        context.add_init_script(f"sessionStorage.setItem('hybrid.apiKey', {json.dumps(key)})")
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("request", lambda req: None if req.url.startswith((origin, "data:")) else problems.append(f"left: {req.url}"))
    yield page
    context.close()
    assert [p for p in problems if "status of 4" not in p] == []  # a 401/404 the page handles is logged, not an error


@pytest.fixture
def page(browser: sync_api.Browser, judged: Judged) -> Iterator[Page]:
    yield from _page(browser, judged.server.url, SEARCH_KEY)


@pytest.fixture
def client(judged: Judged) -> Iterator[HybridClient]:
    with HybridClient(judged.server.url, api_key=SEARCH_KEY) as c:
        yield c


def wait_until(page: Page, expression: str, timeout: float = 60.0) -> None:
    """Polls ``expression`` from here: Playwright's own wait_for_function evaluates strings inside the page, which the
    page's content security policy (no eval) refuses, as it should."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.05)


def url_has(page: Page, key: str, value: str) -> None:
    wait_until(page, f"new URLSearchParams(location.search).get({json.dumps(key)}) === {json.dumps(value)}")


def ready(page: Page) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)


def done(page: Page, side: str) -> list[str]:
    page.wait_for_selector(f"#col-{side}[data-state='done']", timeout=60_000)
    wait_until(page, "!document.querySelector('#columns').dataset.busy")
    return page.eval_on_selector_all(f"#col-{side} li.hit", "items => items.map(li => li.dataset.doc)")


def test_a_typed_query_shows_hits_and_a_second_column_a_second_configuration(
        browser: sync_api.Browser, judged: Judged, client: HybridClient) -> None:
    for page in _page(browser, judged.server.url, None):  # no key yet: the page asks for one
        page.goto(f"{judged.server.url}/ui")  # redirected to /ui/
        ready(page)
        assert "needs an API key" in page.inner_text("#banner")
        page.fill("#key", SEARCH_KEY)
        page.press("#key", "Enter")
        ready(page)
        page.select_option("#index", INDEX)
        page.keyboard.press("Escape")
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"
        page.keyboard.type(QUERY)
        page.keyboard.press("Enter")
        ids = done(page, "a")
        expected = client.search(INDEX, QUERY, k=10, retrievers=["bm25"])
        assert ids == [h.id for h in expected.hits] and len(ids) == 10
        first = page.locator("#col-a li.hit").first
        assert first.locator(".title").inner_text() == expected.hits[0].title or first.locator(".title").inner_text()
        assert first.locator(".snippet em").count() >= 1  # the query's terms, highlighted
        assert first.locator(".why").first.inner_text().startswith("bm25 #1 (")
        assert float(first.locator(".score").inner_text()) == pytest.approx(expected.hits[0].score, abs=1e-4)
        assert "nDCG" not in page.inner_text("#col-a .colhead")  # a typed query that is none of the judged ones

        page.locator("#q").blur()
        page.keyboard.press("c")  # side by side: B is BM25 with RM3 (the index has one retriever)
        b_ids = done(page, "b")
        assert "bm25+rm3" in page.inner_text("#col-b .colhead h2")
        with_prf = client.search(INDEX, QUERY, k=10, retrievers=["bm25"], prf={"bm25": {"method": "rm3"}})
        assert b_ids == [h.id for h in with_prf.hits]
        badges = page.eval_on_selector_all("#col-b li.hit .shift", "nodes => nodes.map(n => n.textContent)")
        for rank, (doc, badge) in enumerate(zip(b_ids, badges, strict=True), start=1):
            assert badge == ("new" if doc not in ids else "=" if ids.index(doc) + 1 == rank else
                             f"▲{ids.index(doc) + 1 - rank}" if ids.index(doc) + 1 > rank else f"▼{rank - ids.index(doc) - 1}")
        lines = int(page.get_attribute("#shifts", "data-lines") or 0)
        assert lines == len(set(ids) | set(b_ids))  # one line a document: across, or a stub where one list lacks it
        state = parse_qs(urlparse(page.url).query)
        assert state["q"] == [QUERY] and state["cmp"] == ["1"] and state["b.prf"] == ["bm25:rm3"] and "a.prf" not in state


def test_judged_queries_show_grades_and_trec_eval_metrics(page: Page, judged: Judged, client: HybridClient) -> None:
    page.goto(f"{judged.server.url}/ui/?index={INDEX}")
    ready(page)
    assert page.is_visible("#judged")
    options = page.eval_on_selector_all("#qpick option", "os => os.map(o => o.value)")
    assert options == ["", "1", "2", "3", "4"]  # the split's judged queries
    page.select_option("#qpick", "1")
    ids = done(page, "a")
    assert page.input_value("#q") == client.queries(INDEX).queries[0].text
    judgments = client.qrels(INDEX, "1")["1"]
    shown = dict(zip(ids, page.eval_on_selector_all("#col-a li.hit .grade", "ns => ns.map(n => n.textContent)"), strict=True))
    assert shown == {d: str(judgments[d]) if d in judgments else "?" for d in ids}
    docs = cranfield_docs(40)
    assert shown[docs[11]["_id"]] == "2"  # the graded judgment is found and marked

    run = {"1": {doc: float(len(ids) - rank) for rank, doc in enumerate(ids)}}  # the page's order
    expected = evaluate(run, {"1": judgments}, parse_metrics("ndcg@10,recall@10"))
    head = page.inner_text("#col-a .colhead")
    assert f"nDCG@10 {expected['ndcg@10']['1']:.4f}" in head and f"R@10 {expected['recall@10']['1']:.4f}" in head

    page.locator("#col-a li.hit").first.focus()
    page.keyboard.press("]")  # the next judged query
    done(page, "a")
    url_has(page, "qid", "2")
    assert page.input_value("#qpick") == "2" and page.input_value("#q") == "boundary layer transition"


def test_leaderboard_table_plot_and_per_query_comparison(page: Page, judged: Judged, client: HybridClient) -> None:
    results = json.loads((judged.reports / "results.json").read_text())["results"]
    page.goto(f"{judged.server.url}/ui/")
    ready(page)
    page.keyboard.press("2")
    page.wait_for_selector("table.board")
    rows = page.eval_on_selector_all("table.board tbody tr", "trs => trs.map(tr => [...tr.children].map(c => c.textContent))")
    assert [r[1] for r in rows] == [r["method"] for r in results]
    for row, result in zip(rows, results, strict=True):
        assert row[2].startswith(f"{result['scores']['ndcg@10']:.4f}")
    assert page.locator("svg.plot circle.point").count() == len(results)
    page.select_option("#lb-metric", "recall@100")
    wait_until(page, "document.querySelector('svg.plot').getAttribute('aria-label').startsWith('recall@100')")
    assert page.inner_text("table.board tbody tr:first-child td:nth-child(3)").startswith(f"{results[0]['scores']['recall@100']:.4f}")

    page.select_option("#lb-a", "bm25+rm3")
    page.select_option("#lb-b", "bm25")
    page.click("#lb-go")
    page.wait_for_selector("p.wl")
    found = client.compare_methods("tiny", "bm25+rm3", "bm25", metric="recall@100")
    assert page.get_attribute("p.wl", "data-wins") == str(found.wins)
    assert page.get_attribute("p.wl", "data-losses") == str(found.losses)
    assert f"ties {found.ties}" in page.inner_text("p.wl")
    assert page.locator("svg.bars rect").count() == 4
    state = parse_qs(urlparse(page.url).query)
    assert state["view"] == ["leaderboard"] and state["lb.a"] == ["bm25+rm3"] and state["lb.metric"] == ["recall@100"]


def test_the_url_restores_a_comparison_and_edits_update_it(page: Page, judged: Judged, client: HybridClient) -> None:
    page.goto(f"{judged.server.url}/ui/?index={INDEX}&q=slipstream+wing+lift&cmp=1&a.prf=bm25:rocchio&b.depth=5&k=20")
    ready(page)
    a_ids, b_ids = done(page, "a"), done(page, "b")
    assert page.input_value("#a-prf-bm25") == "rocchio" and page.input_value("#b-depth") == "5"
    assert page.input_value("#k") == "20" and page.input_value("#qpick") == "3"  # the text is judged query 3's
    assert a_ids == [h.id for h in client.search(INDEX, "slipstream wing lift", k=20, retrievers=["bm25"],
                                                 prf={"bm25": {"method": "rocchio"}}).hits]
    assert b_ids == [h.id for h in client.search(INDEX, "slipstream wing lift", k=20, retrievers=["bm25"], depth=5).hits]
    page.click("#col-b summary")  # a shared link opens folded
    page.select_option("#b-prf-bm25", "rm3")
    url_has(page, "b.prf", "bm25:rm3")
    b_ids = done(page, "b")
    assert b_ids == [h.id for h in client.search(INDEX, "slipstream wing lift", k=20, retrievers=["bm25"], depth=5,
                                                 prf={"bm25": {"method": "rm3"}}).hits]
    page.keyboard.press("Escape")
    page.locator("body").focus()
    page.keyboard.press("x")  # swap A and B
    url_has(page, "a.depth", "5")
    assert "rocchio" in page.inner_text("#col-b .colhead h2") and "depth 5" in page.inner_text("#col-a .colhead h2")
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")


def test_exact_is_offered_only_where_the_server_has_it(page: Page, judged: Judged, client: HybridClient) -> None:
    """The form shows "exact" only when the server's OpenAPI schema lists the field. This server's does: the page
    sends it and shows the exact search's hits. A schema without it (an older server, served to the page here) hides
    the box."""
    page.goto(f"{judged.server.url}/ui/?index={INDEX}&q=wing")
    ready(page)
    assert page.locator("#a-exact").count() == 1
    done(page, "a")
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data or "{}")) if r.url.endswith("/search") else None)
    page.goto(f"{judged.server.url}/ui/?index={INDEX}&q=wing&a.exact=1")
    ready(page)
    assert page.is_checked("#a-exact")
    ids = done(page, "a")
    assert sent and sent[-1]["exact"] is True
    assert ids == [h.id for h in client.search(INDEX, "wing", k=len(ids), exact=True).hits]

    def without_exact(route: sync_api.Route) -> None:
        spec = route.fetch().json()
        spec["components"]["schemas"]["SearchRequest"]["properties"].pop("exact", None)
        route.fulfill(json=spec)

    page.route("**/openapi.json", without_exact)
    page.goto(f"{judged.server.url}/ui/?index={INDEX}&q=wing")
    ready(page)
    assert page.locator("#a-exact").count() == 0


def test_three_retrievers_fused_with_weights(browser: sync_api.Browser, server: Server) -> None:
    """Over the session's index (BM25, SPLADE, dense; no judgments, no key): weighted fusion from the form, every
    retriever's rank and contribution on every hit, the same ranking the API gives."""
    for page in _page(browser, server.url, None):
        page.goto(f"{server.url}/ui/?q=heat+transfer+in+laminar+boundary+layers")
        ready(page)
        assert page.is_hidden("#judged")
        done(page, "a")
        page.click("#col-a summary")
        page.select_option("#a-fus", "weighted")
        page.fill("#a-w-dense", "0.5")
        page.press("#a-w-dense", "Enter")
        url_has(page, "a.w", "dense:0.5")
        ids = done(page, "a")
        with HybridClient(server.url) as client:
            order = [r.name for r in client.get_index("small").retrievers]  # the index's order, the form's
            expected = client.search("small", "heat transfer in laminar boundary layers", k=10, explain=True,
                                     retrievers=order, fusion={"method": "weighted", "weights": {"dense": 0.5}})
        assert ids == [h.id for h in expected.hits] and sorted(order) == ["bm25", "dense", "splade"]
        chips = page.eval_on_selector_all("#col-a li.hit:first-child .why", "ns => ns.map(n => n.dataset.retriever)")
        assert chips == order
        weights = ", ".join(f"{name}={0.5 if name == 'dense' else 1}" for name in order)
        assert f"weighted minmax: {weights}" in page.inner_text("#col-a .colhead h2")
        assert page.locator("#a-qm-splade option").count() == 5 and page.locator("#a-qm-bm25").count() == 0
