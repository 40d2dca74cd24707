"""Rule evaluation: every condition, the score and its terms, merged sharers, quiet hours, cooldowns, caps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.domain.canonical import canonical_url, on_domain
from pipeline.domain.rules import Rules
from pipeline.domain.scoring import Budget, Known, evaluate
from pipeline.messages import Share

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
BERSIN = "https://joshbersin.com/2026/03/why-elearning-isnt-working"
BASE: dict[str, Any] = {
    "people": [
        {"name": "Mark Britz", "x": "@britz", "mastodon": "britz@mastodon.social", "trust": 0.9},
        {"name": "Jane Hart", "x": "janehart", "trust": 0.5, "trusted_on": ["learning"]},
        {"name": "Low One", "x": "low", "trust": 0.5},
        {"name": "Low Two", "x": "low2", "trust": 0.5},
    ],
    "authors": [{"name": "Josh Bersin", "domains": ["joshbersin.com"], "respect": 0.9}],
    "topics": {
        "leadership": ["leadership", "soft skills"],
        "learning": ["elearning", "training"],
        "crypto": ["bitcoin"],
    },
    "rules": [{"name": "lead", "when": {"topics_any": ["leadership", "learning"]}}],
}


def known(**changes: Any) -> Known:
    return Known.of(Rules.model_validate({**BASE, **changes}))


def rule(**when: Any) -> dict[str, Any]:
    return {"name": "r", "when": when}


def share(sharer: str = "@britz", text: str = "leadership", url: str = BERSIN, n: str = "1", **extra: Any) -> Share:
    fields = {"shared_at": NOW - timedelta(minutes=1), **extra}
    return Share.from_source(source="x", native_id=n, sharer=sharer, text=text, url=url, **fields)


def test_seed_story_fires_with_every_term_explained() -> None:
    verdict = evaluate(known(), share(text="Josh Bersin on why eLearning isn't working for soft skills"), now=NOW)
    winner = verdict.winner
    assert winner is not None and winner.rule.name == "lead"
    terms = winner.terms
    assert (terms.sharers, terms.author, terms.topic, terms.crowd) == (0.9, 0.9, 1.0, 0.0)
    assert terms.total == pytest.approx(0.6 * 0.9 + 0.2 * 0.9 + 0.1 * 1.0)  # 0.82
    assert verdict.facts.topics == ["leadership", "learning"]
    assert verdict.facts.author is not None and verdict.facts.author.name == "Josh Bersin"
    assert verdict.summary == "fired rule lead (0.82)"


def test_unknown_sharer_does_not_fire_and_says_so() -> None:
    verdict = evaluate(known(), share(sharer="@stranger"), now=NOW)
    assert verdict.winner is None
    failed = verdict.results[0].failed
    assert failed is not None and failed.condition == "require_trusted_sharer"
    assert failed.detail == "@stranger is not in the trusted network"


@pytest.mark.parametrize(("handle", "network"), [("BRITZ", "x"), ("@Britz", None), ("@britz@Mastodon.social", None)])
def test_handles_match_across_networks_and_spellings(handle: str, network: str | None) -> None:
    verdict = evaluate(known(), share(sharer=handle, network=network), now=NOW)
    assert verdict.facts.sharers[0].name == "Mark Britz"


def test_handle_on_another_network_is_not_the_same_person() -> None:
    verdict = evaluate(known(), share(sharer="britz", network="linkedin"), now=NOW)
    assert verdict.facts.sharers == []


def test_trust_counts_only_on_the_topics_a_person_is_trusted_on() -> None:
    k = known(rules=[rule(topics_any=["crypto", "learning"], min_score=0.1)])
    on_topic = evaluate(k, share(sharer="janehart", text="training budgets"), now=NOW)
    assert on_topic.facts.sharers[0].trust == 0.5 and on_topic.winner is not None
    off_topic = evaluate(k, share(sharer="janehart", text="bitcoin again", url="https://example.com/c"), now=NOW)
    failed = off_topic.results[0].failed
    assert off_topic.facts.sharers[0].trust == 0.0
    assert failed is not None and failed.detail == "Jane Hart 0.00: trusted, but not on crypto"


def test_min_score_blocks_and_reports_the_score() -> None:
    verdict = evaluate(known(), share(sharer="low", url="https://example.com/a"), now=NOW)
    failed = verdict.results[0].failed
    assert failed is not None and failed.condition == "min_score"
    assert failed.detail == "score 0.40 < 0.50"  # 0.6 * 0.5 + 0.1 * topic


def test_a_second_trusted_sharer_lifts_the_link_over_the_threshold() -> None:
    k = known()
    first = share(sharer="low", url="https://example.com/a?utm_source=x", n="1")
    assert evaluate(k, first, now=NOW).winner is None
    second = share(sharer="low2", url="https://example.com/a#comments", n="2")
    verdict = evaluate(k, second, now=NOW, earlier=[first])
    winner = verdict.winner
    assert winner is not None
    assert [s.name for s in verdict.facts.sharers] == ["Low One", "Low Two"]
    assert winner.terms.sharers == 0.75 and winner.terms.crowd == 0.5  # 1-(0.5*0.5), 1-1/2
    assert winner.terms.total == pytest.approx(0.6 * 0.75 + 0.1 * 1 + 0.1 * 0.5)


def test_the_same_person_twice_counts_once() -> None:
    k = known()
    first = share(sharer="@britz", n="1")
    again = share(sharer="@britz@mastodon.social", network="mastodon", n="2")
    verdict = evaluate(k, again, now=NOW, earlier=[first])
    assert len(verdict.facts.sharers) == 1 and verdict.results[0].terms.crowd == 0


def test_first_rule_in_file_order_wins_among_candidates() -> None:
    k = known(rules=[rule(topics_any=["crypto"]) | {"name": "c"}, rule(topics_any=["learning"]) | {"name": "l"}])
    verdict = evaluate(k, share(text="training"), now=NOW)
    assert verdict.winner is not None and verdict.winner.rule.name == "l"
    assert [r.rule.name for r in verdict.results] == ["l"]  # the crypto rule was never a candidate


@pytest.mark.parametrize(
    ("when", "extra", "condition"),
    [
        ({"exclude_replies": True}, {"is_reply": True}, "exclude_replies"),
        ({"exclude_reposts": True}, {"is_repost": True}, "exclude_reposts"),
        ({"languages": ["de"]}, {"language": "en-GB"}, "languages"),
        ({"domains_deny": ["joshbersin.com"]}, {}, "domains_deny"),
        ({"domains_allow": ["hbr.org"]}, {}, "domains_allow"),
        ({"keywords": ["podcast"]}, {}, "keywords"),
        ({"topics_any": ["crypto"]}, {}, "topics_any"),
        ({"topics_all": ["leadership", "crypto"]}, {}, "topics_all"),
        ({"min_score": 0.99}, {}, "min_score"),
    ],
)
def test_each_condition_can_stop_a_rule(when: dict[str, Any], extra: dict[str, Any], condition: str) -> None:
    k = known(rules=[rule(**when)])
    verdict = evaluate(k, share(**extra), now=NOW, every_rule=True)
    failed = verdict.results[0].failed
    assert verdict.winner is None and failed is not None and failed.condition == condition


@pytest.mark.parametrize(
    ("when", "extra"),
    [
        ({"exclude_replies": False}, {"is_reply": True}),
        ({"languages": ["en"]}, {"language": "en-GB"}),
        ({"languages": ["de"]}, {"language": None}),  # unknown language passes
        ({"domains_deny": ["medium.com"]}, {}),
        ({"domains_allow": ["joshbersin.com"]}, {"url": "https://blog.joshbersin.com/x"}),
        ({"keywords": ["Leadership"]}, {}),
        ({"topics_all": ["leadership"]}, {}),
        ({"require_trusted_sharer": False, "min_score": 0.1}, {"sharer": "@stranger"}),
    ],
)
def test_each_condition_lets_a_matching_share_through(when: dict[str, Any], extra: dict[str, Any]) -> None:
    assert evaluate(known(rules=[rule(**when)]), share(**extra), now=NOW).winner is not None


@pytest.mark.parametrize(
    ("local_time", "quiet"),
    [("23:30", True), ("06:59", True), ("07:00", False), ("21:59", False)],
)
def test_quiet_hours_wrap_midnight_in_the_rules_time_zone(local_time: str, quiet: bool) -> None:
    k = known(timezone="America/New_York", quiet_hours={"start": "22:00", "end": "07:00"})
    hour, minute = map(int, local_time.split(":"))
    now = (
        datetime(2026, 3, 4, hour + 5, minute, tzinfo=UTC)
        if hour < 19
        else datetime(2026, 3, 5, hour - 19, minute, tzinfo=UTC)
    )
    verdict = evaluate(k, share(shared_at=now), now=now)
    failed = verdict.results[0].failed
    assert (failed is not None and failed.condition == "quiet_hours") is quiet


def test_rule_cooldown_topic_cooldown_and_caps_come_from_the_budget() -> None:
    k = known(
        topic_cooldown_minutes=30,
        max_sessions_per_day=2,
        rules=[{"name": "r", "when": {"topics_any": ["leadership"]}, "cooldown_minutes": 60, "max_per_day": 1}],
    )
    s = share()
    recent = NOW - timedelta(minutes=45)
    cases = {
        "cooldown_minutes": Budget(rule_last={"r": recent}),
        "topic_cooldown_minutes": Budget(topic_last={"leadership": NOW - timedelta(minutes=10)}),
        "max_per_day": Budget(today_by_rule={"r": 1}, today_total=1),
        "max_sessions_per_day": Budget(today_by_rule={"other": 2}, today_total=2),
    }
    for condition, budget in cases.items():
        failed = evaluate(k, s, now=NOW, budget=budget).results[0].failed
        assert failed is not None and failed.condition == condition, condition
    rested = Budget(rule_last={"r": NOW - timedelta(minutes=61)}, topic_last={"leadership": NOW - timedelta(hours=1)})
    assert evaluate(k, s, now=NOW, budget=rested).winner is not None


def test_offline_budget_skips_state_checks() -> None:
    k = known(rules=[{"name": "r", "when": {}, "cooldown_minutes": 60}])
    verdict = evaluate(k, share(), now=NOW, budget=Budget(rule_last={"r": NOW}, known=False))
    assert verdict.winner is not None


def test_old_shares_are_recorded_but_never_fire() -> None:
    verdict = evaluate(known(), share(shared_at=NOW - timedelta(days=3)), now=NOW)
    assert verdict.winner is None and verdict.blocked is not None and "72.0 h old" in verdict.blocked


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        (
            "https://WWW.LinkedIn.com/pulse/Foo?utm_source=tw&utm_medium=social#top",
            "https://www.linkedin.com/pulse/Foo",
        ),
        ("https://example.com/a?b=2&fbclid=X&a=1&gclid=Y", "https://example.com/a?a=1&b=2"),
        ("HTTPS://Example.com:443", "https://example.com/"),
        ("http://example.com:80/p?id=7", "http://example.com/p?id=7"),
    ],
)
def test_canonical_urls(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


def test_domains_match_subdomains_not_lookalikes() -> None:
    assert on_domain("news.example.com", ["example.com"])
    assert on_domain("example.com", ["www.example.com"])
    assert not on_domain("badexample.com", ["example.com"])
