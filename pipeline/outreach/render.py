"""Render announcements from per-channel jinja2 templates, inside a sandbox, within each channel's limits.

User-written text (share text, article title) only ever arrives as variables, never as template source.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from pipeline.errors import PermanentError
from pipeline.messages import ScheduledSession

TEMPLATES = Path(__file__).parent / "templates"
URL = re.compile(r"https?://\S+")
X_URL_WEIGHT = 23  # X counts every link as 23 characters (t.co)
LIMITS = {"x": 280, "linkedin": 3000, "facebook": 63206}


class TemplateRefused(PermanentError):
    """A template is missing, broken, uses an unknown variable, or renders past the channel's limit."""


def environment(folder: Path = TEMPLATES) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain-text posts; HTML channels (email) get their own escaping environment
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def weighted_length(channel: str, text: str) -> int:
    if channel == "x":
        return len(URL.sub("x" * X_URL_WEIGHT, text))
    return len(text)


def shorten(text: str, limit: int) -> str:
    """Cut at a word boundary and add an ellipsis; never mid-word (a first word too long is dropped whole)."""
    if len(text) <= limit:
        return text
    head = text[:limit]  # one char more than is kept: tells whether the cut falls on a boundary
    cut = head[:-1] if head[-1] == " " else head.rsplit(" ", 1)[0] if " " in head else ""
    return f"{cut.rstrip(',;:.-–— ')}…"


def template_variables(session: ScheduledSession) -> dict[str, object]:
    proposal = session.proposal
    article = proposal.content.article
    share = proposal.content.trigger.share
    return {
        "title": proposal.title,
        "article_title": article.title,
        "short_article_title": shorten(article.title, 90),
        "author": article.author,
        "article_url": article.url,
        "summary": article.summary,
        "sharer": share.sharer,
        "join_url": session.join_url,
        "starts_at": session.starts_at,
        "start_time": f"{session.starts_at:%H:%M} UTC",
        "duration_minutes": proposal.duration_minutes,
        "topics": proposal.content.trigger.topics,
    }


def render(env: SandboxedEnvironment, channel: str, kind: str, session: ScheduledSession) -> str:
    name = f"{channel}/{kind}.j2"
    try:
        text = env.get_template(name).render(template_variables(session)).strip()
    except jinja2.TemplateNotFound as error:
        raise TemplateRefused(f"template_missing: no template {name} for channel {channel}") from error
    except jinja2.TemplateSyntaxError as error:
        raise TemplateRefused(f"template_syntax: {name}:{error.lineno}: {error.message}") from error
    except jinja2.UndefinedError as error:
        raise TemplateRefused(f"template_variable: {name}: {error.message}") from error
    except jinja2.exceptions.SecurityError as error:
        raise TemplateRefused(f"template_unsafe: {name}: {error}") from error
    except Exception as error:  # any other failure inside a template is the template's fault: retrying won't help
        raise TemplateRefused(f"template_error: {name}: {type(error).__name__}: {error}") from error
    limit = LIMITS.get(channel)
    if limit is not None and (length := weighted_length(channel, text)) > limit:
        raise TemplateRefused(f"too_long: {name} renders {length} characters, {channel} allows {limit}")
    return text
