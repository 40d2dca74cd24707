"""A proposal as text for the terminal (`impromptu proposals show`): the same facts the approval page shows."""

from __future__ import annotations

from pipeline.actions.service import ChannelPreview
from pipeline.domain.approval import ProposalRecord


def sharers_of(record: ProposalRecord) -> list[str]:
    trigger = record.proposal.content.trigger
    names = [s.name for s in trigger.shared_by] or [trigger.share.sharer]
    return names + [s.name for s in record.also_shared_by if s.name not in names]


def describe_record(record: ProposalRecord, previews: list[ChannelPreview]) -> str:
    p = record.proposal
    article, trigger = p.content.article, p.content.trigger
    lines = [
        f"{p.id}  [{record.state}]",
        f"  {p.title}",
        f"  starts {p.starts_at:%Y-%m-%d %H:%M} UTC for {p.duration_minutes} min"
        + (f", hosted by {p.facilitator}" if p.facilitator else ""),
        f"  why then: {p.slot_reason}" if p.slot_reason else "",
        f"  decide by {p.expires_at:%Y-%m-%d %H:%M} UTC" if record.state == "proposed" else "",
        f"  shared by {', '.join(sharers_of(record))} (score {trigger.score:.2f}, rule {trigger.rule})",
        f"  article: {article.title}" + (f" by {article.author}" if article.author else "") + f" <{article.url}>",
    ]
    if p.preview is not None:
        lines.append(f"  creates: {p.preview.summary}")
    if record.session is not None:
        lines.append(f"  join: {record.session.join_url}")
    if record.problem:
        lines.append(f"  problem: {record.problem}")
    lines.append("  announcements:")
    for preview in previews:
        if preview.problem:
            lines.append(f"    {preview.channel}: cannot post: {preview.problem}")
        else:
            limit = f"/{preview.limit}" if preview.limit else ""
            written = ", written by hand" if preview.written is not None else ""
            lines.append(f"    {preview.channel} ({preview.length}{limit}{written}): {preview.text}")
    lines.append("  history:")
    for entry in record.history or []:
        changes = ", ".join(f"{k}: {c.before} -> {c.after}" for k, c in entry.changes.items())
        detail = "; ".join(x for x in (entry.reason, changes) if x)
        lines.append(
            f"    {entry.at:%Y-%m-%d %H:%M:%S} {entry.by}: {entry.from_state} -> {entry.to_state} {detail}".rstrip()
        )
    if not record.history:
        lines.append("    (none yet)")
    return "\n".join(line for line in lines if line)
