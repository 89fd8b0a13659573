"""``hybrid search``: one query against one index, printed as a table or JSON.

Its search options are the search request's fields (:mod:`service.cli.request_options`), so the command line asks
for what the REST API asks for, with the same checks and messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from retrieval.core.options import OpenOptions
from service.cli.common import index_root_of, index_root_option, settings_from
from service.cli.request_options import request_from, search_request_options


@click.command("search")
@click.argument("name")
@click.argument("query", default="")
@search_request_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@index_root_option
def search(name: str, query: str, as_json: bool, device: str | None, index_root: Path | None, **options: Any) -> None:
    """Search index NAME for QUERY (which may be left out when --query-vector/--query-sparse give every vector)."""
    from retrieval.search.pipeline import Searcher

    request = request_from(query, options)
    settings = settings_from(index_root, device=device)
    folder = index_root_of(settings).resolve(name)
    with Searcher.open(folder, OpenOptions.from_settings(settings), retrievers=request.named()) as searcher:
        result = searcher.search(request)
    if as_json:
        partial = {"partial": True, "skipped": result.skipped} if result.skipped else {}
        click.echo(json.dumps({"query": request.query, "retrievers": result.retrievers,
                               "took_ms": round(result.took_ms, 3), **partial, "hits": [asdict(h) for h in result.hits]}, ensure_ascii=False))
        return
    names = result.retrievers
    header = f"{'rank':>4}  {'id':<14}{'score':>10}  " + "".join(f"{n + ' (rank)':>14}" for n in names) + "  title"
    click.echo(header)
    for hit in result.hits:
        cells = ""
        for n in names:
            source = (hit.explain or {}).get(n)
            cells += f"{'-' if source is None else str(source.rank):>14}"
        title = (hit.title or hit.text or "").replace("\n", " ")[:60]
        click.echo(f"{hit.rank:>4}  {hit.id:<14}{hit.score:>10.4f}  {cells}  {title}")
        if hit.highlight:  # query terms in [brackets] on a terminal
            click.echo(f"      {hit.highlight.replace('<em>', '[').replace('</em>', ']')}")
    click.echo(f"{len(result.hits)} hits in {result.took_ms:.1f} ms ({', '.join(names)})"
               + (f"; partial: --timeout-ms passed, skipped {', '.join(result.skipped)}" if result.skipped else ""))
