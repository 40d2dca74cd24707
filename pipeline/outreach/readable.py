"""What a person sees of a Slack Block Kit message or a Teams Adaptive Card, for previews on the approval page:
the texts in reading order, buttons as "[label] url". Other channels' posts are text already."""

from __future__ import annotations

import json
import re
from typing import Any

SLACK_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")


def readable(channel: str, text: str) -> str:
    if channel not in ("slack", "teams"):
        return text
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    body = payload.get("blocks", []) if channel == "slack" else [payload.get("body", []), payload.get("actions", [])]
    lines: list[str] = []
    _collect(body, lines)
    shown = "\n".join(line for line in lines if line.strip())
    # Slack's mrkdwn: <url|label> links and &amp; &lt; &gt; escapes
    shown = SLACK_LINK.sub(r"\2 (\1)", shown) if channel == "slack" else shown
    return shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") if channel == "slack" else shown


def _collect(node: Any, lines: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, lines)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in ("button", "Action.OpenUrl"):
        label = node.get("title") or (node.get("text") or {}).get("text", "")
        lines.append(f"[{label}] {node.get('url', '')}")
    elif kind == "FactSet":
        lines.extend(f"{fact.get('title')}: {fact.get('value')}" for fact in node.get("facts", []))
    elif isinstance(node.get("text"), str):
        lines.append(node["text"])
    else:
        for key in ("text", "fields", "elements", "items", "columns"):
            _collect(node.get(key), lines)
