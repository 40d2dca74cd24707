"""Trigger rules: who we trust, what we care about, and what to create when both meet.

Pure functions, no bus code. A share fires when its sharer is in the trusted network and its text matches
a topic of some rule; the score is the sharer's trust.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.messages import SessionPlan, Share
from pipeline.yaml_errors import load_yaml_model


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrustedPerson(Strict):
    name: str
    handles: list[str] = Field(min_length=1, description="Handles on any network, e.g. @britz.")
    trust: float = Field(default=0.8, ge=0, le=1)


class Rule(Strict):
    name: str
    topics_any: list[str] = Field(min_length=1, description="Fires when the share matches any of these.")
    min_score: float = Field(default=0.5, ge=0, le=1)
    session: SessionPlan = SessionPlan()


class Rules(Strict):
    trusted_people: list[TrustedPerson] = Field(default_factory=list)
    topics: dict[str, list[str]] = Field(default_factory=dict, description="Topic name -> keywords.")
    rules: list[Rule] = Field(default_factory=list)


def unknown_topics(rules: Rules) -> Iterator[tuple[tuple[int | str, ...], str]]:
    for i, rule in enumerate(rules.rules):
        for j, topic in enumerate(rule.topics_any):
            if topic not in rules.topics:
                known = ", ".join(rules.topics) or "none defined"
                message = f"rule {rule.name!r} names unknown topic {topic!r} (known: {known})"
                yield ("rules", i, "topics_any", j), message


@dataclass(frozen=True)
class Verdict:
    fired: bool
    rule: Rule | None = None
    score: float = 0.0
    topics: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def load_rules(path: Path) -> Rules:
    return load_yaml_model(path, Rules, checks=(unknown_topics,))


def normalise_handle(handle: str) -> str:
    return handle.strip().lower().lstrip("@")


def find_sharer(rules: Rules, handle: str) -> TrustedPerson | None:
    wanted = normalise_handle(handle)
    return next((p for p in rules.trusted_people if wanted in {normalise_handle(h) for h in p.handles}), None)


def matching_topics(vocabulary: dict[str, list[str]], text: str) -> list[str]:
    lowered = text.lower()
    return [
        topic
        for topic, keywords in vocabulary.items()
        if any(re.search(rf"(?<!\w){re.escape(k.lower())}(?!\w)", lowered) for k in keywords)
    ]


def evaluate(rules: Rules, share: Share) -> Verdict:
    person = find_sharer(rules, share.sharer)
    if person is None:
        return Verdict(False, reasons=[f"{share.sharer} is not in the trusted network"])
    topics = matching_topics(rules.topics, f"{share.text} {share.url}")
    reasons = [f"{share.sharer} is trusted ({person.name}, {person.trust:.2f})"]
    for rule in rules.rules:
        hits = [t for t in rule.topics_any if t in topics]
        if not hits:
            reasons.append(f"rule {rule.name}: no topic of {rule.topics_any} in the share")
            continue
        if person.trust < rule.min_score:
            reasons.append(f"rule {rule.name}: score {person.trust:.2f} below {rule.min_score:.2f}")
            continue
        reasons.append(f"rule {rule.name}: topics {', '.join(hits)}")
        return Verdict(True, rule, person.trust, hits, reasons)
    return Verdict(False, score=person.trust, topics=topics, reasons=reasons)
