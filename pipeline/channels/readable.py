"""What a person sees of a post, for previews on the approval page: each channel's adapter says it (`readable`).
Slack Block Kit messages and Teams Adaptive Cards show their texts in reading order, buttons as "[label] url";
other channels' posts are text already."""

from __future__ import annotations

from pipeline.channels.registry import rules_for


def readable(channel: str, text: str) -> str:
    return rules_for(channel).readable(text)
