"""The one secret scrubber (pipeline/redaction.py): known values and bearer tokens cut out of what operators see."""

from __future__ import annotations

from pipeline.redaction import redact, redact_bearer


def test_redact_replaces_every_secret_longest_first() -> None:
    # a secret that starts a longer one must not leave the longer one's tail behind
    assert redact("token=abcdef and abc", ["abc", "abcdef"]) == "token=[redacted] and [redacted]"
    assert redact("token=abcdef", ["abc", "abcdef", ""], marker="***") == "token=***"
    assert redact("nothing here", []) == "nothing here"


def test_redact_bearer_cuts_the_token_only() -> None:
    said = "headers={'Authorization': 'Bearer AAAA%2Fsecret-1', 'User-Agent': 'tweepy'}"
    assert redact_bearer(said) == "headers={'Authorization': 'Bearer [redacted]', 'User-Agent': 'tweepy'}"
