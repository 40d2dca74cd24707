"""Render announcements from per-channel jinja2 templates, inside a sandbox, within each channel's rules.

One template per channel and kind: `templates/<channel>/<kind>.j2`; IMPROMPTU_OUTREACH_TEMPLATES_DIR holds your own,
file by file (the shipped ones fill the gaps). User-written text (share text, article title, summary) only ever
arrives as variables, never as template source. Every render is checked against the channel's rules (length, JSON
structure, e-mail layout); a render that is too long is tried again with the article title and summary shortened at
word boundaries before it is refused.

Every render is bounded: it stops once it has run `seconds` (each template call, attribute, item, operator and loop
step checks the clock) or written `max_output` characters, refused with the template's name and line. That bound
is cooperative (a single huge C-level operation is not interrupted): the pipeline renders in worker processes with a
hard time and memory limit on top (bounded.py); `impromptu render` renders here, in its own process.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from pipeline.channels import xtext
from pipeline.channels.base import ChannelAdapter, Problem
from pipeline.errors import PermanentError
from pipeline.messages import ScheduledSession
from pipeline.session_time import when, when_local, zone_named
from pipeline.text import shorten as text_shorten

TEMPLATES = Path(__file__).parent / "templates"
X_URL_WEIGHT = xtext.URL_WEIGHT
SHORT_TITLE = 90  # `short_article_title`, for channels where the title shares little room
_PRIVATE = re.compile(r"attribute '_")
MAX_OUTPUT = 200_000  # a sandboxed `*` may not build strings or lists longer than this
RENDER_SECONDS = 2.0  # one announcement (every shortening step of it) renders within this
RENDER_MAX_OUTPUT = 65_536  # characters one render may write, before the channel's own limit is checked

# Graceful shortening: on a too-long render, try again with these limits (title, summary, reason), longest first.
SHORTENING_STEPS: tuple[tuple[int | None, int | None], ...] = (
    (None, None),
    (200, 1000),
    (150, 600),
    (120, 400),
    (100, 280),
    (80, 200),
    (60, 140),
    (45, 100),
    (30, 60),
    (20, 30),
    (12, 0),
    (0, 0),
)


class TemplateRefused(PermanentError):
    """A template is missing, broken, unsafe, uses an unknown variable, or renders outside the channel's rules."""


class TemplateOverrun(jinja2.exceptions.SecurityError):
    """A render went past its bound: `code` is template_timeout or template_output."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Budget:
    seconds: float
    deadline: float


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _spend() -> None:
    """Called at every step a template can repeat (call, filter or test applied per item, attribute, item, operator,
    loop step): past the deadline the render stops here, so the error carries the template line that was running."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TemplateOverrun("template_timeout", f"rendering took over {budget.seconds:g} s")


def _bounded_loop(iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` iterates through this (see `_Sandbox._parse`): nested loops over anything stop in time."""
    for item in iterable:
        _spend()
        yield item


# --- filters ------------------------------------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """Cut at a word boundary and add an ellipsis; never mid-word (a first word too long is dropped whole)."""
    return text_shorten(text, limit, whole_words=True)


def oneline(text: str) -> str:
    """Whitespace (newlines too) collapsed to single spaces: titles and names must not break a line or a header."""
    return " ".join(str(text).split())


def mrkdwn(text: str) -> str:
    """Slack's three control characters, as Slack documents: & < > become &amp; &lt; &gt;."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_url(url: str) -> str:
    """A URL safe inside Slack's <url|label>: no raw <, >, | or spaces; & escaped as in all mrkdwn text."""
    return mrkdwn(quote(str(url), safe=":/?#[]@!$&'()*+,;=%~"))


# --- the environment ----------------------------------------------------------------------------------------------


class _Sandbox(SandboxedEnvironment):
    """The sandbox, plus a cap on `*` and `**` so a custom template cannot exhaust memory ("a" * 10**10), and the
    render's time budget checked at every call, attribute, item, operator and loop step."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    LOOP_FILTER = "bounded_loop"

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # {% for x in ITER %} becomes {% for x in ITER|bounded_loop %}
            loop.iter = nodes.Filter(loop.iter, self.LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno)
        return tree

    def call(self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        return super().call(__context, __obj, *args, **kwargs)

    def call_filter(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:  # map, select: once per item
        _spend()
        return super().call_filter(name, value, *args, **kwargs)

    def call_test(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        return super().call_test(name, value, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _spend()
        return super().getitem(obj, argument)

    def call_binop(self, context: jinja2.runtime.Context, operator_name: str, left: Any, right: Any) -> Any:
        _spend()
        if operator_name == "**" and isinstance(right, int) and abs(right) > 100:
            raise jinja2.exceptions.SecurityError("exponents above 100 are not allowed in templates")
        if operator_name == "*":
            for sized, count in ((left, right), (right, left)):
                if isinstance(sized, str | list | tuple) and isinstance(count, int) and len(sized) * count > MAX_OUTPUT:
                    raise jinja2.exceptions.SecurityError("the result would be too large")
        if operator_name == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            if len(left) + len(right) > MAX_OUTPUT:  # doubling a string twenty times is a memory bomb too
                raise jinja2.exceptions.SecurityError("the result would be too large")
        return super().call_binop(context, operator_name, left, right)


def environment(folder: Path | None = None) -> SandboxedEnvironment:
    """The sandboxed environment; with `folder` (IMPROMPTU_OUTREACH_TEMPLATES_DIR), its templates win file by file
    and the shipped ones fill the gaps."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(TEMPLATES)]
    if folder is not None and Path(folder).resolve() != TEMPLATES.resolve():
        loaders.insert(0, jinja2.FileSystemLoader(folder))
    env = _Sandbox(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text; JSON channels insert user text with `tojson`, Slack mrkdwn with `mrkdwn`
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(shorten=shorten, oneline=oneline, mrkdwn=mrkdwn, slack_escape=mrkdwn, slack_url=slack_url)
    env.filters[_Sandbox.LOOP_FILTER] = _bounded_loop
    return env


def available_channels(kind: str = "scheduled", folder: Path | None = None) -> list[str]:
    """Channels with a template for `kind`, shipped or in `folder`."""
    folders = [TEMPLATES] + ([Path(folder)] if folder is not None else [])
    return sorted({path.parent.name for base in folders for path in base.glob(f"*/{kind}.j2") if path.is_file()})


# --- variables ----------------------------------------------------------------------------------------------------


def template_variables(
    session: ScheduledSession,
    *,
    library_url: str | None = None,
    tagline: str | None = None,
    reason: str | None = "",
    title_limit: int | None = None,
    summary_limit: int | None = None,
) -> dict[str, object]:
    """What every template may use. `library_url`, `tagline` and `reason` are always present (None or "" when not
    given) so templates can test them; the limits shorten user-written text for a re-render that must fit."""
    proposal = session.proposal
    article = proposal.content.article
    share = proposal.content.trigger.share
    zone = zone_named(proposal.timezone)  # the rules file's, carried on the proposal
    full_title = oneline(article.title)
    article_title = _cut(full_title, title_limit)
    starts_at, ends_at = session.starts_at, session.ends_at
    return {
        "title": _cut(oneline(proposal.title), None if title_limit is None else title_limit + 6),  # "Live: " + title
        "article_title": article_title,
        "short_article_title": shorten(article_title, SHORT_TITLE),
        "author": oneline(article.author) if article.author else None,
        "site_name": oneline(article.site_name) if article.site_name else None,
        "article_url": article.url,
        "summary": _cut(article.summary.strip(), summary_limit),
        "sharer": oneline(share.sharer),
        "share_text": _cut(share.text.strip(), summary_limit),
        "join_url": session.join_url,
        "library_url": library_url,
        "link": library_url or session.join_url,  # the post's main link: the library page for a recording
        "tagline": oneline(tagline) if tagline else None,
        "reason": _cut(oneline(reason or ""), summary_limit),
        "provider": session.provider,
        "starts_at": starts_at,
        "ends_at": ends_at,
        # the session's date and time as people read it: its zone, and UTC for a mixed audience (session_time.py)
        "when": when(starts_at, zone.key),  # "Fri 11 Dec, 09:00 CET (08:00 UTC)"
        "when_span": when(starts_at, zone.key, ends_at),  # "Fri 11 Dec, 09:00–10:00 CET (08:00–09:00 UTC)"
        "when_local": when_local(starts_at, zone.key),  # "Fri 11 Dec, 09:00 CET"
        "timezone": zone.key,
        "local_starts_at": starts_at.astimezone(zone),
        # UTC alone (custom templates written before `when`): "08:00 UTC", "Fri 11 Dec 2026"
        "start_time": f"{starts_at:%H:%M} UTC",
        "end_time": f"{ends_at:%H:%M} UTC",
        "start_date": f"{starts_at:%a} {starts_at.day} {starts_at:%b %Y}",
        "duration_minutes": proposal.duration_minutes,
        "topics": proposal.content.trigger.topics,
        "hashtags": [f"#{''.join(topic.split())}" for topic in proposal.content.trigger.topics],
    }


def _cut(text: str, limit: int | None) -> str:
    return text if limit is None else shorten(text, limit)


# --- rendering ----------------------------------------------------------------------------------------------------


def render(
    env: SandboxedEnvironment,
    channel: str | type[ChannelAdapter],
    kind: str,
    session: ScheduledSession,
    *,
    library_url: str | None = None,
    tagline: str | None = None,
    reason: str | None = "",
    limit: int | None = None,
    seconds: float = RENDER_SECONDS,
    max_output: int = RENDER_MAX_OUTPUT,
) -> str:
    """The announcement for `channel` and `kind`, checked against the channel's rules. `limit` overrides the
    channel's length limit (a Mastodon instance's own). Raises TemplateRefused with a reason code first. The whole
    render (every shortening step) runs within `seconds` and each step writes at most `max_output` characters.
    `channel`: its name, or its adapter class (a render in a worker process, for a channel registered at run time)."""
    rules = rules_for(channel)
    name = f"{rules.name}/{kind}.j2"
    template = _load(env, name)
    if kind == "recording" and not library_url:
        raise TemplateRefused(f"template_variable: {name}: a recording announcement needs library_url")
    token = _BUDGET.set(_Budget(seconds, time.monotonic() + seconds))
    try:
        return _render_within_rules(template, name, rules, session, library_url, tagline, reason, limit, max_output)
    finally:
        _BUDGET.reset(token)


def _render_within_rules(
    template: jinja2.Template,
    name: str,
    rules: type[ChannelAdapter],
    session: ScheduledSession,
    library_url: str | None,
    tagline: str | None,
    reason: str | None,
    limit: int | None,
    max_output: int,
) -> str:
    problem: Problem | None = None
    for title_limit, summary_limit in SHORTENING_STEPS:
        variables = template_variables(
            session,
            library_url=library_url,
            tagline=tagline,
            reason=reason,
            title_limit=title_limit,
            summary_limit=summary_limit,
        )
        text = _render(template, name, variables, max_output)
        text, problem = check(rules, text, limit)
        if problem is None:
            return text
        if problem.code != "too_long":
            break
    assert problem is not None
    shortened = " (even with the title and summary shortened)" if problem.code == "too_long" else ""
    raise TemplateRefused(f"{problem.code}: {name} {problem.detail}{shortened}")


def _load(env: SandboxedEnvironment, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound as error:
        raise TemplateRefused(f"template_missing: no template {name} for this channel") from error
    except jinja2.TemplateSyntaxError as error:
        raise TemplateRefused(f"template_syntax: {name}:{error.lineno}: {error.message}") from error


def _render(template: jinja2.Template, name: str, variables: dict[str, object], max_output: int) -> str:
    try:
        return _generate(template, variables, max_output).strip()
    except TemplateOverrun as error:
        raise TemplateRefused(f"{error.code}: {_where(name, template, error)}: {error}") from error
    except jinja2.exceptions.SecurityError as error:
        raise TemplateRefused(f"template_unsafe: {_where(name, template, error)}: {error}") from error
    except jinja2.UndefinedError as error:
        # a private attribute (__init__, _module) reads as missing in some objects: still an escape attempt
        code = "template_unsafe" if _PRIVATE.search(error.message or "") else "template_variable"
        raise TemplateRefused(f"{code}: {_where(name, template, error)}: {error.message}") from error
    except jinja2.TemplateSyntaxError as error:  # from an {% include %} of a broken template
        raise TemplateRefused(f"template_syntax: {error.name or name}:{error.lineno}: {error.message}") from error
    except Exception as error:  # any other failure inside a template is the template's fault: retrying won't help
        where = _where(name, template, error)
        raise TemplateRefused(f"template_error: {where}: {type(error).__name__}: {error}") from error


def _generate(template: jinja2.Template, variables: dict[str, object], max_output: int) -> str:
    """The render, piece by piece: it stops as soon as it has written more than `max_output` characters."""
    pieces: list[str] = []
    written = 0
    # jinja2 annotates generate() as an Iterator; it is a generator, which throw() and close() need
    stream = cast("Generator[str, None, None]", template.generate(variables))
    try:
        for piece in stream:
            written += len(piece)
            if written > max_output:
                # thrown into the template's generator, so the traceback (and the refusal) names the line writing
                stream.throw(TemplateOverrun("template_output", f"renders more than {max_output} characters"))
            pieces.append(piece)
    finally:
        stream.close()
    return "".join(pieces)


def _where(name: str, template: jinja2.Template, error: BaseException) -> str:
    """`name:line` where the template failed: jinja rewrites tracebacks so the template's frames carry its lines."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if template.filename and frame.filename == template.filename:
            line = frame.lineno
    return f"{name}:{line}" if line else name


# --- a facilitator's own text ------------------------------------------------------------------------------------

JOIN_URL_MARK = "{join_url}"  # where a written announcement wants the join link (made only on approval)
WRITTEN_MAX = RENDER_MAX_OUTPUT


def written_text(channel: str, text: str, session: ScheduledSession, limit: int | None = None) -> str:
    """A channel's announcement as a facilitator wrote it (SessionProposal.texts), the join link put in, checked
    against the channel's rules as a rendered one is; TemplateRefused says what is wrong."""
    if len(text) > WRITTEN_MAX:
        raise TemplateRefused(f"too_long: the {channel} text written by hand has {len(text)} characters")
    if JOIN_URL_MARK not in text:
        raise TemplateRefused(f"bad_structure: the {channel} text has no {JOIN_URL_MARK}: say where the join link goes")
    filled, problem = check(channel, text.replace(JOIN_URL_MARK, session.join_url).strip(), limit)
    if problem is not None:
        raise TemplateRefused(f"{problem.code}: the {channel} text written by hand {problem.detail}")
    return filled


# --- each channel's rules (its adapter says them: pipeline/channels/) -----------------------------------


def weighted_length(channel: str, text: str) -> int:
    """The length the channel counts: X weighs (links 23, CJK and emoji 2), Mastodon counts graphemes (links 23),
    Teams counts bytes, the others characters."""
    return rules_for(channel).length(text)


def rules_for(channel: str | type[ChannelAdapter]) -> type[ChannelAdapter]:
    """The channel's adapter class, its rules; a name is looked up in the registry."""
    if not isinstance(channel, str):
        return channel
    # here, not at the top: the registry imports every adapter, and a template worker, given the adapter class it
    # renders for, needs none of the others
    from pipeline.channels import registry

    return registry.rules_for(channel)


def check(channel: str | type[ChannelAdapter], text: str, limit: int | None = None) -> tuple[str, Problem | None]:
    """The text as it will be posted (JSON compacted), and what is wrong with it, if anything."""
    rules = rules_for(channel)
    text, problem = rules.shaped(text)
    if problem is not None:
        return text, problem
    if not text:
        return text, Problem("bad_structure", "renders nothing")
    limit = limit if limit is not None else rules.limit
    if limit is not None and (length := rules.length(text)) > limit:
        return text, Problem("too_long", f"renders {length} {rules.unit}, {rules.name} allows {limit}")
    return text, None
