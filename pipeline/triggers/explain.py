"""`impromptu rules explain`: what the rules say about one share, term by term and rule by rule; and the verdict
the trigger stage keeps (bucket impromptu-verdicts, key `share.<sha256 of the share id>`) when a share fires
nothing, worded the same way, for `impromptu trace` to show."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from pipeline.domain.scoring import Known, RuleResult, Verdict, evaluate
from pipeline.messages import Share

# A kept verdict stays small whatever a share holds (the bucket refuses values over stores.MAX_VALUE_BYTES)
VERDICT_REASON_CHARS = 300
VERDICT_ID_CHARS = 200
VERDICT_RULE_CHARS = 200
VERDICT_RULES = 10
VERDICT_MAX_BYTES = 4096


class TriggerVerdict(BaseModel):
    """Why the trigger stage let a share go without firing: the stage's own reason (untrusted, already among the
    sharers, not fired: rule X: score 0.42 < 0.50, ...) and each rule's first failed condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share_id: str
    reason: str
    rules: list[str] = []


def verdict_key(share_id: str) -> str:
    """A KV key for any share id (ids hold characters keys may not, and any length)."""
    return f"share.{hashlib.sha256(share_id.encode()).hexdigest()[:32]}"


def _clip(text: str, limit: int) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def rule_status(result: RuleResult, winner: RuleResult | None) -> str:
    """One rule's outcome as `rules explain` and `trace` word it."""
    failed = result.failed
    if failed is not None:
        return f"first failed condition {failed.condition}: {failed.detail}"
    if result is winner:
        return "fires"
    return f"would pass too, but {winner.rule.name if winner else '?'} comes first"


def kept_verdict(share: Share, reason: str, verdict: Verdict | None) -> TriggerVerdict:
    """What the trigger stage keeps for a share that fired nothing; the same inputs give the same record (a
    redelivery puts the same value again), and it always fits in VERDICT_MAX_BYTES."""
    rules = []
    if verdict is not None and not verdict.blocked:
        rules = [_clip(f"{r.rule.name}: {rule_status(r, verdict.winner)}", VERDICT_RULE_CHARS) for r in verdict.results]
    if len(rules) > VERDICT_RULES:
        rules = [*rules[: VERDICT_RULES - 1], f"... and {len(rules) - VERDICT_RULES + 1} more rules"]
    kept = TriggerVerdict(
        share_id=_clip(share.id, VERDICT_ID_CHARS), reason=_clip(reason, VERDICT_REASON_CHARS), rules=rules
    )
    while len(kept.model_dump_json().encode()) > VERDICT_MAX_BYTES and kept.rules:  # long ids, wide characters
        kept = kept.model_copy(update={"rules": kept.rules[:-1]})
    return kept


def explain(known: Known, share: Share, now: datetime) -> tuple[Verdict, str]:
    """Judge `share` against every rule, offline: cooldowns and daily caps need the pipeline's state."""
    verdict = evaluate(known, share, now=now, every_rule=True)
    return verdict, render(known, verdict)


def render(known: Known, verdict: Verdict) -> str:
    facts, weights = verdict.facts, known.rules.scoring
    winner = verdict.winner
    headline = f"would fire: rule {winner.rule.name} (score {winner.terms.total:.2f})" if winner else "would not fire"
    lines = [headline, f"link:    {facts.canonical}"]
    sharers = [f"{s.name} ({s.handle}) trust {s.trust:.2f}" for s in facts.sharers]
    lines.append(f"sharers: {'; '.join(sharers) or 'nobody in the trusted network'}")
    if facts.untrusted:
        lines.append(f"outside the network: {', '.join(facts.untrusted)}")
    author = f"{facts.author.name} (respect {facts.author.respect:.2f})" if facts.author else "none recognised"
    lines += [f"author:  {author}", f"topics:  {', '.join(facts.topics) or 'none'}"]
    if verdict.blocked:
        lines.append(f"not judged: {verdict.blocked}")
        return "\n".join(lines)
    if not verdict.results:
        lines.append("rules:   none defined")
        return "\n".join(lines)
    lines.append("rules:")
    for result in verdict.results:
        t = result.terms
        terms = (
            f"sharers {t.sharers:.2f}x{weights.sharers:g} + author {t.author:.2f}x{weights.author:g} + "
            f"topic {t.topic:.2f}x{weights.topic:g} + crowd {t.crowd:.2f}x{weights.crowd:g} -> {t.total:.2f}"
        )
        mark = "-" if result.failed is not None else "+" if result is winner else "="
        status = rule_status(result, winner)
        lines.append(f"  {mark} {result.rule.name}: {status}")
        lines.append(f"      score {terms}")
    lines.append("note:    cooldowns and daily caps depend on the running pipeline's state; not checked here")
    return "\n".join(lines)
