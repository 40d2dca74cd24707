"""One spelling per article, so shares of the same link from different people and networks meet.

courlan (already used by trafilatura) lower-cases the host, drops default ports, sorts the query and strips
tracking parameters (utm_*, fbclid, gclid, mc_eid, ...). We also drop the fragment: #comments is the same page.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import courlan

from pipeline.messages import stable_id


def canonical_url(url: str) -> str:
    try:
        normalised = courlan.normalize_url(url)
    except ValueError:  # courlan refuses some odd URLs; the plain form is still a usable key
        normalised = url
    parts = urlsplit(normalised)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def link_key(canonical: str) -> str:
    return stable_id("link", canonical)


def host_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def on_domain(host: str, domains: list[str]) -> bool:
    """`host` is one of `domains` or a subdomain of one (news.example.com is on example.com)."""
    return any(host == d or host.endswith(f".{d}") for d in (d.lower().removeprefix("www.") for d in domains))
