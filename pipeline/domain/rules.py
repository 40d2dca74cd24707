"""The rules file: who we trust (and on what), whose work we respect, what we care about, and what to create.

Models only, plus loading with FILE:LINE:COLUMN errors and the cross-field checks pydantic cannot do alone.
Every field has a default where one makes sense, so a ten-line file works.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pipeline.messages import SessionPlan
from pipeline.settings import Settings
from pipeline.yaml_errors import DEFAULT_BOUNDS, Location, YamlBounds, load_yaml_model


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


OneOrMany = Annotated[list[str], BeforeValidator(_one_or_many)]
Weight = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(Strict):
    """Someone in the trusted network, with their handles on every network we read."""

    name: str = Field(min_length=1)
    x: OneOrMany = Field(default_factory=list, description="X handles, with or without @.", examples=[["@britz"]])
    mastodon: OneOrMany = Field(
        default_factory=list, description="Mastodon accounts as user@instance.", examples=[["britz@mastodon.social"]]
    )
    linkedin: OneOrMany = Field(default_factory=list, description="LinkedIn public profile names.")
    rss: OneOrMany = Field(default_factory=list, description="URLs of feeds this person publishes or curates.")
    trust: Weight = Field(default=0.8, description="How much their share counts, 0..1.")
    trusted_on: list[str] = Field(
        default_factory=list, description="Topics they are trusted on; empty: every topic. Elsewhere trust is 0."
    )

    @field_validator("mastodon")
    @classmethod
    def _full_accounts(cls, accounts: list[str]) -> list[str]:
        for account in accounts:
            if account.strip().lstrip("@").count("@") != 1:
                raise ValueError(f"{account!r} is not user@instance (e.g. britz@mastodon.social)")
        return accounts

    @field_validator("rss")
    @classmethod
    def _feed_urls(cls, feeds: list[str]) -> list[str]:
        for feed in feeds:
            if not feed.startswith(("http://", "https://")):
                raise ValueError(f"{feed!r} is not an http(s) feed URL")
        return feeds

    @model_validator(mode="after")
    def _has_a_handle(self) -> Person:
        if not (self.x or self.mastodon or self.linkedin or self.rss):
            raise ValueError(f"{self.name!r} has no handle: give at least one of x, mastodon, linkedin, rss")
        return self


class Author(Strict):
    """Someone whose work we respect: matched by name (in the post or on the page) or by the link's domain."""

    name: str = Field(min_length=1)
    domains: OneOrMany = Field(default_factory=list, description="Sites that are theirs, e.g. joshbersin.com.")
    respect: Weight = 0.8


class Topic(Strict):
    keywords: OneOrMany = Field(min_length=1, description="Words or phrases; matched case-insensitively, whole words.")


def _topic_shorthand(value: Any) -> Any:
    # `leadership: [leadership, soft skills]` is short for `leadership: {keywords: [...]}`
    return {"keywords": value} if isinstance(value, list | str) else value


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
_HOURS = re.compile(r"^\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*$")


def _midnight_as_end(value: Any) -> Any:
    return "00:00" if isinstance(value, str) and value.strip() == "24:00" else value


def _hours_shorthand(value: Any) -> Any:
    # `hours: "09:00-17:30"` is short for `hours: {start: "09:00", end: "17:30"}`; "24:00" ends at midnight
    if isinstance(value, str):
        match = _HOURS.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not HH:MM-HH:MM (e.g. 09:00-17:30)")
        value = {"start": match[1].zfill(5), "end": match[2].zfill(5)}
    if isinstance(value, dict) and "end" in value:
        value = {**value, "end": _midnight_as_end(value["end"])}
    return value


class WorkingHours(Strict):
    """A facilitator's working hours, the same every working day; `end` 00:00 (or "24:00") is midnight.

    They never wrap midnight: a session must start and end inside one day's hours."""

    start: time
    end: time = Field(description='After `start`; 00:00 (or "24:00") is midnight, the end of the day.')

    @model_validator(mode="after")
    def _within_one_day(self) -> WorkingHours:
        if self.end == time(0):
            return self
        if self.end == self.start:
            raise ValueError(f"'{self}' is empty: working hours must end after they start (e.g. 09:00-17:30)")
        if self.end < self.start:
            raise ValueError(
                f"'{self}' wraps midnight: working hours must end after they start, on the same day "
                "(e.g. 09:00-17:30; 24:00 for midnight)"
            )
        return self

    @property
    def whole_day(self) -> bool:
        return self.start == time(0) and self.end == time(0)

    def __str__(self) -> str:
        end = "24:00" if self.end == time(0) else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"


Hours = Annotated[
    WorkingHours,
    BeforeValidator(
        _hours_shorthand,
        json_schema_input_type=Annotated[str, Field(pattern=_HOURS.pattern, examples=["09:00-17:30"])] | WorkingHours,
    ),
]


def _days_shorthand(value: Any) -> Any:
    # `days: mon-fri` or `days: [mon, wed-fri]`: ranges run forward through the week, any case
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return value
    days: list[Any] = []
    for item in items:
        first, dash, last = item.lower().partition("-") if isinstance(item, str) else (item, "", "")
        first, last = (first.strip(), last.strip()) if dash else (first, last)
        if dash and first in WEEKDAYS and last in WEEKDAYS:
            start, stop = WEEKDAYS.index(first), WEEKDAYS.index(last)
            days.extend(WEEKDAYS[(start + i) % 7] for i in range((stop - start) % 7 + 1))
        else:
            days.append(item.strip().lower() if isinstance(item, str) else item)
    return days


_DAY = "(mon|tue|wed|thu|fri|sat|sun)"
DaySpec = Annotated[str, Field(pattern=f"^{_DAY}(-{_DAY})?$", examples=["mon-fri"])]
Days = Annotated[list[Weekday], BeforeValidator(_days_shorthand, json_schema_input_type=DaySpec | list[DaySpec])]


def days_text(days: Iterable[str]) -> str:
    """Days in week order, consecutive runs joined: "mon-fri", "mon, wed-fri", "every day"."""
    given = set(days)
    chosen = [day in given for day in WEEKDAYS]
    if all(chosen):
        return "every day"
    runs: list[str] = []
    i = 0
    while i < 7:
        if not chosen[i]:
            i += 1
            continue
        j = i
        while j + 1 < 7 and chosen[j + 1]:
            j += 1
        runs.append(WEEKDAYS[i] if i == j else f"{WEEKDAYS[i]}{', ' if j == i + 1 else '-'}{WEEKDAYS[j]}")
        i = j + 1
    return ", ".join(runs)


class Facilitator(Strict):
    """Who hosts and approves sessions, and when they can: sessions are suggested inside their working hours."""

    name: str = Field(min_length=1)
    email: str | None = None
    timezone: str | None = Field(
        default=None, description="IANA time zone of `hours`, `days` and the daily cap; default: the file's `timezone`."
    )
    hours: Hours | None = Field(
        default=None,
        description='Working hours, e.g. "09:00-17:30" (local time, never across midnight); default: any time.',
    )
    days: Days = Field(
        default_factory=lambda: list(WEEKDAYS),
        min_length=1,
        description="Working days, e.g. [mon, tue] or mon-fri; default: all seven.",
    )
    max_sessions_per_day: int | None = Field(
        default=None, ge=1, description="Sessions they host per local day (approved, scheduled or live)."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        return None if zone is None else Rules._known_zone(zone)

    @field_validator("days")
    @classmethod
    def _week_order(cls, days: list[str]) -> list[str]:
        return [day for day in WEEKDAYS if day in days]

    def zone(self, default: str = "UTC") -> ZoneInfo:
        """Their time zone; `default` (the rules file's `timezone`) when they have none of their own."""
        return ZoneInfo(self.timezone or default)


class QuietHours(Strict):
    """No session is created between `start` and `end` (local time of the file's `timezone`); may wrap midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class Scoring(Strict):
    """Weights of the score's terms; the score is their weighted mean, 0..1."""

    sharers: float = Field(default=0.6, ge=0)
    author: float = Field(default=0.2, ge=0)
    topic: float = Field(default=0.1, ge=0)
    crowd: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> Scoring:
        if self.sharers + self.author + self.topic + self.crowd <= 0:
            raise ValueError("at least one weight must be above 0")
        return self


class Conditions(Strict):
    """Everything must hold for a rule to fire. Unset conditions do not restrict."""

    min_score: Weight = 0.5
    topics_any: list[str] = Field(default_factory=list, description="At least one of these topics matches.")
    topics_all: list[str] = Field(default_factory=list, description="Every one of these topics matches.")
    keywords: list[str] = Field(default_factory=list, description="At least one of these words is in the post.")
    domains_allow: list[str] = Field(default_factory=list, description="Only links to these sites (and subdomains).")
    domains_deny: list[str] = Field(default_factory=list, description="Never links to these sites (and subdomains).")
    languages: list[str] = Field(default_factory=list, description="Post languages, e.g. [en, de]; unknown passes.")
    exclude_replies: bool = True
    exclude_reposts: bool = False
    require_trusted_sharer: bool = Field(default=True, description="Someone in the trusted network shared it.")


class Rule(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    when: Conditions = Conditions()
    cooldown_minutes: int = Field(default=0, ge=0, description="After firing, this rule rests this long.")
    max_per_day: int | None = Field(default=None, ge=1, description="Sessions this rule may create per day.")
    session: SessionPlan | None = Field(default=None, description="What to create; default: the file's `session`.")


class Rules(Strict):
    """A trigger rules file."""

    timezone: str = Field(default="UTC", description="IANA time zone for quiet hours and daily caps.")
    people: list[Person] = Field(default_factory=list, description="The trusted network.")
    authors: list[Author] = Field(default_factory=list, description="Respected authors.")
    topics: dict[str, Annotated[Topic, BeforeValidator(_topic_shorthand)]] = Field(
        default_factory=dict, description="Topic name -> keywords (a list is enough)."
    )
    facilitators: list[Facilitator] = Field(default_factory=list)
    scoring: Scoring = Scoring()
    session: SessionPlan = Field(default=SessionPlan(), description="Default of every rule's `session`.")
    merge_window_minutes: int = Field(
        default=24 * 60, ge=0, description="A later trusted share of the same link within this joins the first."
    )
    max_share_age_minutes: int = Field(
        default=24 * 60, gt=0, description="Older shares (backfills) are recorded but never fire."
    )
    topic_cooldown_minutes: int = Field(default=0, ge=0, description="After a topic fired, it rests this long.")
    quiet_hours: QuietHours | None = None
    max_sessions_per_day: int | None = Field(default=None, ge=1)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(zone, sorted(available_timezones()), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (e.g. Europe/London, America/New_York)"
            raise ValueError(f"unknown time zone {zone!r}{hint}") from None
        return zone

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def plan(self, rule: Rule) -> SessionPlan:
        return rule.session or self.session


def cross_checks(rules: Rules) -> Iterator[tuple[Location, str]]:
    """What pydantic cannot see field by field: names that must refer to something defined elsewhere."""
    known = ", ".join(rules.topics) or "none defined"

    def topic_problems(names: list[str], where: Location, owner: str) -> Iterator[tuple[Location, str]]:
        for j, topic in enumerate(names):
            if topic not in rules.topics:
                yield (*where, j), f"{owner} names unknown topic {topic!r} (known: {known})"

    for i, person in enumerate(rules.people):
        yield from topic_problems(person.trusted_on, ("people", i, "trusted_on"), f"{person.name!r}")
    facilitators = {f.name for f in rules.facilitators}
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules.rules):
        if rule.name in seen:
            yield ("rules", i, "name"), f"rule name {rule.name!r} is already used by rules[{seen[rule.name]}]"
        seen.setdefault(rule.name, i)
        yield from topic_problems(rule.when.topics_any, ("rules", i, "when", "topics_any"), f"rule {rule.name!r}")
        yield from topic_problems(rule.when.topics_all, ("rules", i, "when", "topics_all"), f"rule {rule.name!r}")
        plan_where: Location = ("rules", i, "session") if rule.session else ("session",)
        for j, name in enumerate(rules.plan(rule).facilitators):
            if name not in facilitators:
                listed = ", ".join(sorted(facilitators)) or "none defined"
                message = f"rule {rule.name!r} names unknown facilitator {name!r} (known: {listed})"
                yield (*plan_where, "facilitators", j), message
    handles: dict[tuple[str, str], str] = {}
    for i, person in enumerate(rules.people):
        for network in ("x", "mastodon", "linkedin", "rss"):
            for j, handle in enumerate(getattr(person, network)):
                key = (network, normalise_handle(network, handle))
                if key in handles and handles[key] != person.name:
                    yield (
                        ("people", i, network, j),
                        f"{handle!r} is already {handles[key]!r}'s {network} handle",
                    )
                handles.setdefault(key, person.name)


def normalise_handle(network: str, handle: str) -> str:
    """One spelling per handle: X and LinkedIn without @, Mastodon as user@instance, feeds as given."""
    if network == "rss":
        return handle.strip()
    return handle.strip().lower().lstrip("@")


def load_rules(path: Path, bounds: YamlBounds = DEFAULT_BOUNDS) -> Rules:
    """The rules, or ConfigError with FILE:LINE:COLUMN lines; a file beyond `bounds` (size, nesting) is refused
    before it is parsed (IMPROMPTU_RULES_MAX_BYTES, IMPROMPTU_RULES_MAX_DEPTH)."""
    return load_yaml_model(path, Rules, checks=(cross_checks,), bounds=bounds)


def rules_bounds(settings: Settings) -> YamlBounds:
    return YamlBounds(max_bytes=settings.rules_max_bytes, max_depth=settings.rules_max_depth)
