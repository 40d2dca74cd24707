"""Deciding whether a share fires: who shared it, whose work it is, what it is about, and what state allows.

Pure functions over a `Known` index built once per rules file (handles, one keyword regex for the whole topic
vocabulary, rules indexed by topic), so a share costs a dict lookup and one regex pass, not a scan of 10,000
people and 1,000 rules. State (cooldowns, daily caps) comes in as a `Budget` snapshot; `state.py` keeps it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from pipeline.domain.canonical import canonical_url, host_of, on_domain
from pipeline.domain.rules import Author, Person, Rule, Rules, normalise_handle
from pipeline.messages import ScoreTerms, Share, Sharer

NETWORKS = ("x", "mastodon", "linkedin", "rss")


def folded(text: str) -> str:
    """`text` as it is matched: NFC (one form for "ü", whether typed precomposed or as u + combining mark), lower."""
    return unicodedata.normalize("NFC", text).lower()


def phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive alternation of `phrases` (longest first, so 'soft skills' beats 'soft')."""
    unique = sorted({folded(p.strip()) for p in phrases if p.strip()}, key=len, reverse=True)
    if not unique:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in unique) + r")(?!\w)")


@dataclass
class Known:
    """A rules file indexed for fast evaluation. Build with `Known.of(rules)`; rebuild when the file changes."""

    rules: Rules
    people: dict[tuple[str, str], Person]
    keywords: re.Pattern[str] | None
    topics_of_keyword: dict[str, list[str]]
    rules_by_topic: dict[str, list[int]]
    rules_without_topics: list[int]
    author_names: re.Pattern[str] | None
    authors_by_name: dict[str, Author]
    authors_by_domain: dict[str, Author]
    rule_keywords: dict[str, re.Pattern[str] | None] = field(default_factory=dict)
    only_trusted: bool = True  # every rule requires a trusted sharer: strangers' shares need no state at all
    uses_budget: bool = False  # some cooldown or daily cap: firing must read and reserve the shared budget

    @classmethod
    def of(cls, rules: Rules) -> Known:
        people = {
            (network, normalise_handle(network, handle)): person
            for person in rules.people
            for network in NETWORKS
            for handle in getattr(person, network)
        }
        topics_of_keyword: dict[str, list[str]] = {}
        for topic, spec in rules.topics.items():
            for keyword in spec.keywords:
                topics_of_keyword.setdefault(folded(keyword.strip()), []).append(topic)
        rules_by_topic: dict[str, list[int]] = {}
        without: list[int] = []
        for i, rule in enumerate(rules.rules):
            named = {*rule.when.topics_any, *rule.when.topics_all}
            for topic in named:
                rules_by_topic.setdefault(topic, []).append(i)
            if not named:
                without.append(i)
        return cls(
            rules=rules,
            people=people,
            keywords=phrase_pattern(topics_of_keyword),
            topics_of_keyword=topics_of_keyword,
            rules_by_topic=rules_by_topic,
            rules_without_topics=without,
            author_names=phrase_pattern(a.name for a in rules.authors),
            authors_by_name={folded(a.name.strip()): a for a in rules.authors},
            authors_by_domain={d.lower().removeprefix("www."): a for a in rules.authors for d in a.domains},
            rule_keywords={r.name: phrase_pattern(r.when.keywords) for r in rules.rules},
            only_trusted=all(r.when.require_trusted_sharer for r in rules.rules),
            uses_budget=bool(
                rules.topic_cooldown_minutes
                or rules.max_sessions_per_day
                or any(r.cooldown_minutes or r.max_per_day for r in rules.rules)
            ),
        )

    def person(self, share: Share) -> Person | None:
        """Who in the trusted network `share.sharer` is: on its network, or on any when the network is unknown."""
        networks = (share.network,) if share.network else NETWORKS
        for network in networks:
            person = self.people.get((network, normalise_handle(network, share.sharer)))
            if person is not None:
                return person
        return None

    def topics_in(self, text: str) -> list[str]:
        if self.keywords is None:
            return []
        found = {t for hit in self.keywords.findall(folded(text)) for t in self.topics_of_keyword[hit]}
        return [t for t in self.rules.topics if t in found]  # in vocabulary order, for stable output

    def topic_mentions(self, text: str) -> dict[str, int]:
        """Topic -> how many times its keywords occur in `text` (for scoring an article's match)."""
        counts: dict[str, int] = {}
        if self.keywords is not None:
            for hit in self.keywords.findall(folded(text)):
                for topic in self.topics_of_keyword[hit]:
                    counts[topic] = counts.get(topic, 0) + 1
        return {t: counts[t] for t in self.rules.topics if t in counts}

    def candidate_rules(self, topics: Iterable[str]) -> list[int]:
        indices = set(self.rules_without_topics)
        for topic in topics:
            indices.update(self.rules_by_topic.get(topic, ()))
        return sorted(indices)


@dataclass(frozen=True)
class Budget:
    """What state allows right now: when rules and topics last fired, and how many sessions today."""

    rule_last: Mapping[str, datetime] = field(default_factory=dict)
    topic_last: Mapping[str, datetime] = field(default_factory=dict)
    today_total: int = 0
    today_by_rule: Mapping[str, int] = field(default_factory=dict)
    known: bool = True  # False offline (`rules explain`): cooldowns and caps are then not checked


@dataclass(frozen=True)
class Check:
    condition: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    terms: ScoreTerms
    topics: list[str]
    checks: list[Check]

    @property
    def fired(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.passed), None)


@dataclass(frozen=True)
class Facts:
    """What is known about one link from all its shares so far, independent of any rule."""

    share: Share
    canonical: str
    host: str
    sharers: list[Sharer]
    untrusted: list[str]
    topics: list[str]
    author: Author | None
    age: timedelta

    @cached_property
    def text(self) -> str:
        return folded(self.share.text)


@dataclass(frozen=True)
class Verdict:
    facts: Facts
    results: list[RuleResult]
    blocked: str | None = None  # a reason no rule was even tried (e.g. a backfilled old share)

    @property
    def winner(self) -> RuleResult | None:
        return next((r for r in self.results if r.fired), None)

    @property
    def summary(self) -> str:
        if self.blocked:
            return self.blocked
        if (winner := self.winner) is not None:
            return f"fired rule {winner.rule.name} ({winner.terms.total:.2f})"
        if not self.results:
            return (
                "no rule concerns its topics" if self.facts.sharers else "not shared by anyone in the trusted network"
            )
        best = max(self.results, key=lambda r: r.terms.total)
        failed = best.failed
        return f"not fired: rule {best.rule.name}: {failed.detail if failed else '?'}"


def facts_of(known: Known, share: Share, earlier: Sequence[Share], now: datetime) -> Facts:
    shares = [*earlier, share]
    text = " ".join(s.text for s in shares)
    canonical = canonical_url(share.url)
    topics = known.topics_in(f"{text} {canonical}")
    sharers: dict[str, Sharer] = {}
    untrusted: list[str] = []
    for s in sorted(shares, key=lambda s: s.shared_at):
        person = known.person(s)
        if person is None:
            untrusted.append(s.sharer)
        elif person.name not in sharers:
            on_topic = not person.trusted_on or bool(set(person.trusted_on) & set(topics))
            trust = person.trust if on_topic else 0.0
            sharers[person.name] = Sharer(
                name=person.name, handle=s.sharer, trust=trust, share_id=s.id, shared_at=s.shared_at
            )
    return Facts(
        share=share,
        canonical=canonical,
        host=host_of(canonical),
        sharers=list(sharers.values()),
        untrusted=untrusted,
        topics=topics,
        author=respected_author(known, canonical, text),
        age=now - share.shared_at,
    )


def respected_author(known: Known, url: str, text: str) -> Author | None:
    labels = host_of(url).split(".")
    # the host and each parent domain: blog.joshbersin.com is on joshbersin.com
    suffixes = (".".join(labels[i:]) for i in range(len(labels)))
    matches = [a for suffix in suffixes if (a := known.authors_by_domain.get(suffix)) is not None]
    if known.author_names is not None:
        matches += [known.authors_by_name[name] for name in known.author_names.findall(folded(text))]
    return max(matches, key=lambda a: a.respect, default=None)


def score(known: Known, facts: Facts, topic_hit: bool) -> ScoreTerms:
    weights = known.rules.scoring
    distrust = 1.0
    for sharer in facts.sharers:
        distrust *= 1.0 - sharer.trust
    counted = [s for s in facts.sharers if s.trust > 0]
    terms = {
        "sharers": 1.0 - distrust,
        "author": facts.author.respect if facts.author else 0.0,
        "topic": 1.0 if topic_hit else 0.0,
        "crowd": 1.0 - 1.0 / len(counted) if counted else 0.0,
    }
    total_weight = weights.sharers + weights.author + weights.topic + weights.crowd
    total = sum(getattr(weights, name) * value for name, value in terms.items()) / total_weight
    return ScoreTerms(**{k: round(v, 4) for k, v in terms.items()}, total=round(min(total, 1.0), 4))


def _since(moment: datetime | None, now: datetime) -> timedelta | None:
    return None if moment is None else now - moment


def judge(known: Known, rule: Rule, facts: Facts, now: datetime, budget: Budget) -> RuleResult:
    """Every condition of `rule`, in the order a rule writer reads them, up to the first failure (the reason)."""
    rule_topics = [*rule.when.topics_any, *rule.when.topics_all]
    hits = [t for t in facts.topics if t in rule_topics] if rule_topics else list(facts.topics)
    terms = score(known, facts, topic_hit=bool(hits))
    checks: list[Check] = []
    for check in conditions(known, rule, facts, terms, hits, now, budget):
        checks.append(check)
        if not check.passed:
            break
    return RuleResult(rule, terms, hits, checks)


def conditions(
    known: Known, rule: Rule, facts: Facts, terms: ScoreTerms, hits: list[str], now: datetime, budget: Budget
) -> Iterator[Check]:
    """The checks of one rule, lazily: `judge` stops at the first that fails."""
    when, share, rules = rule.when, facts.share, known.rules
    if when.require_trusted_sharer:
        trusted = [s for s in facts.sharers if s.trust > 0]
        names = ", ".join(f"{s.name} {s.trust:.2f}" for s in facts.sharers)
        if trusted:
            detail = f"trusted sharers: {names}"
        elif facts.sharers:
            detail = f"{names}: trusted, but not on {', '.join(facts.topics) or 'these topics'}"
        else:
            detail = f"{share.sharer} is not in the trusted network"
        yield Check("require_trusted_sharer", bool(trusted), detail)
    if when.exclude_replies:
        yield Check("exclude_replies", not share.is_reply, "the post is a reply" if share.is_reply else "not a reply")
    if when.exclude_reposts:
        yield Check("exclude_reposts", not share.is_repost, "the post is a repost" if share.is_repost else "original")
    if when.languages:
        language = (share.language or "").split("-")[0].lower()
        ok = not language or language in {x.lower() for x in when.languages}
        yield Check("languages", ok, f"post language {language or 'unknown'}, wanted {', '.join(when.languages)}")
    if when.domains_deny:
        denied = on_domain(facts.host, when.domains_deny)
        yield Check("domains_deny", not denied, f"{facts.host} is {'a' if denied else 'not a'} denied domain")
    if when.domains_allow:
        allowed = on_domain(facts.host, when.domains_allow)
        yield Check("domains_allow", allowed, f"{facts.host} is {'an' if allowed else 'not an'} allowed domain")
    if (keywords := known.rule_keywords.get(rule.name)) is not None:
        found = keywords.search(facts.text)
        yield Check("keywords", found is not None, f"found {found.group(0)!r}" if found else "no keyword in the post")
    matched = ", ".join(facts.topics) or "none"
    if when.topics_any:
        yield Check("topics_any", any(t in facts.topics for t in when.topics_any), f"matched topics: {matched}")
    if when.topics_all:
        missing = [t for t in when.topics_all if t not in facts.topics]
        yield Check("topics_all", not missing, f"missing topics: {', '.join(missing)}" if missing else matched)
    relation = ">=" if terms.total >= when.min_score else "<"
    yield Check("min_score", terms.total >= when.min_score, f"score {terms.total:.2f} {relation} {when.min_score:.2f}")
    if rules.quiet_hours is not None:
        local, quiet = now.astimezone(rules.zone), rules.quiet_hours
        inside = quiet.contains(local.time())
        window = f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M}"
        yield Check(
            "quiet_hours", not inside, f"{local:%H:%M} {rules.timezone} is {'in' if inside else 'outside'} {window}"
        )
    if not budget.known:
        return
    since = _since(budget.rule_last.get(rule.name), now)
    cooldown = timedelta(minutes=rule.cooldown_minutes)
    if cooldown and since is not None and since < cooldown:
        minutes_ago = int(since.total_seconds() // 60)
        yield Check("cooldown_minutes", False, f"rule fired {minutes_ago} min ago, rests {rule.cooldown_minutes} min")
    topic_cooldown = timedelta(minutes=rules.topic_cooldown_minutes)
    resting = [t for t in hits if (ago := _since(budget.topic_last.get(t), now)) is not None and ago < topic_cooldown]
    if resting:
        yield Check("topic_cooldown_minutes", False, f"topic {', '.join(resting)} fired less than {topic_cooldown} ago")
    if rule.max_per_day is not None:
        used = budget.today_by_rule.get(rule.name, 0)
        yield Check("max_per_day", used < rule.max_per_day, f"{used} of {rule.max_per_day} sessions of this rule today")
    if rules.max_sessions_per_day is not None:
        cap = rules.max_sessions_per_day
        yield Check("max_sessions_per_day", budget.today_total < cap, f"{budget.today_total} of {cap} sessions today")


def evaluate(
    known: Known,
    share: Share,
    *,
    now: datetime,
    earlier: Sequence[Share] = (),
    budget: Budget | None = None,
    every_rule: bool = False,
) -> Verdict:
    """Does `share` (joined by `earlier` shares of the same link) fire a rule? The first rule in file order wins;
    `every_rule` judges them all (for `rules explain`)."""
    facts = facts_of(known, share, earlier, now)
    max_age = timedelta(minutes=known.rules.max_share_age_minutes)
    if facts.age > max_age:
        hours = facts.age.total_seconds() / 3600
        return Verdict(facts, [], blocked=f"the share is {hours:.1f} h old (max_share_age_minutes): recorded only")
    budget = budget or Budget()
    indices = range(len(known.rules.rules)) if every_rule else known.candidate_rules(facts.topics)
    results: list[RuleResult] = []
    for i in indices:
        result = judge(known, known.rules.rules[i], facts, now, budget)
        results.append(result)
        if result.fired and not every_rule:
            break
    return Verdict(facts, results)
