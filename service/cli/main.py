"""The ``hybrid`` command line: one group per module of this package.

Every user error ends in one line ``hybrid: error: ...`` and exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import os
import sys

import click

from retrieval.core.disk import NO_SPACE, DiskFullError, is_disk_full
from retrieval.core.errors import HybridError
from service.cli.encode import encode
from service.cli.evaluate import bench, eval_group
from service.cli.index import index
from service.cli.search import search
from service.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hybrid-retrieval")
def cli() -> None:
    """Hybrid sparse/dense retrieval: SPLADE and BM25 on Lucene, dense on FAISS, fused."""


for command in (index, encode, search, serve, eval_group, bench):
    cli.add_command(command)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli.main(prog_name="hybrid", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("hybrid: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except HybridError as exc:
        click.echo(f"hybrid: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if not is_disk_full(exc):  # anything else is a bug: its traceback
            raise
        click.echo(f"hybrid: error: {NO_SPACE}; free space and retry", err=True)
        sys.exit(DiskFullError.exit_code)
    except KeyboardInterrupt:
        click.echo("hybrid: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
