"""`impromptu rules explain`: what the rules say about one share, term by term and rule by rule."""

from __future__ import annotations

from datetime import datetime

from pipeline.messages import Share
from pipeline.triggers.scoring import Known, Verdict, evaluate


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
        failed = result.failed
        if failed is not None:
            mark, status = "-", f"first failed condition {failed.condition}: {failed.detail}"
        elif result is winner:
            mark, status = "+", "fires"
        else:
            mark, status = "=", f"would pass too, but {winner.rule.name if winner else '?'} comes first"
        lines.append(f"  {mark} {result.rule.name}: {status}")
        lines.append(f"      score {terms}")
    lines.append("note:    cooldowns and daily caps depend on the running pipeline's state; not checked here")
    return "\n".join(lines)
