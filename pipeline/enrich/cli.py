"""`impromptu enrich`: read one page as the enrich stage would, without the bus."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli_support import command_settings, run_async
from pipeline.errors import ImpromptuError

if TYPE_CHECKING:  # imported where used: `--help` loads no bus
    pass


def enrich(
    url: Annotated[str | None, typer.Argument(help="The page to fetch (safely) and read.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Read this saved page instead of fetching.")] = None,
    page_url: Annotated[str | None, typer.Option("--url", help="The saved page's URL (with --html).")] = None,
) -> None:
    """What the enrich stage makes of a page, as JSON: the article, its main text, topics and author matched
    against the rules file. Exit 1 with the reason when the page is refused or unreadable."""
    import json

    from pipeline.domain.rules import load_rules, rules_bounds
    from pipeline.domain.scoring import Known, respected_author
    from pipeline.enrich.extract import extract
    from pipeline.enrich.stage import TOPIC_TEXT_LIMIT, fetch_policy, topic_scores
    from pipeline.net.fetch import fetch_page

    settings = command_settings(quiet=True)
    if html is not None:
        where = page_url or f"https://saved-page.invalid/{html.name}"  # .invalid: reserved, never a real site
        try:
            page_html: str | bytes = html.read_bytes()  # bytes: its encoding is sniffed as a fetched page's is
            final_url = where
        except OSError as error:
            raise ImpromptuError(f"{html}: cannot read: {error.strerror}") from error
    elif url is not None:
        page = run_async(fetch_page(url, fetch_policy(settings)))
        page_html, final_url, where = page.html, page.final_url, url
    else:
        raise ImpromptuError("give a URL, or --html FILE [--url URL]")
    extraction = extract(page_html, url=where, final_url=final_url)
    known = Known.of(load_rules(settings.rules_file, rules_bounds(settings)))
    author = respected_author(known, final_url, " ".join(extraction.article.authors))
    result = {
        "article": extraction.article.model_dump(mode="json"),
        "topics": topic_scores(known, extraction.article, extraction.text[:TOPIC_TEXT_LIMIT]),
        "respected_author": author.name if author else None,
        "rules_file": str(settings.rules_file),
        "text": extraction.text,
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))
