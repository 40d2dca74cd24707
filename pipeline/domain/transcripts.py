"""What a recording's text files say: a WebVTT transcript as timed lines, a Zoom chat as the links people shared.

Both come from outside (a provider, a person's upload), so both are bounded: at most MAX_TEXT_BYTES are read, at
most MAX_CUES lines kept; bytes that are not UTF-8 are replaced, never fatal; a file that is not WebVTT at all
gives no cues and says why.
"""

from __future__ import annotations

import io
import re

import webvtt
from webvtt.errors import MalformedFileError

from pipeline.domain.catalog import Cue
from pipeline.messages import Resource

MAX_TEXT_BYTES = 8 * 1024 * 1024  # a 10-hour meeting's transcript is about 1 MB
MAX_CUES = 50_000
MAX_RESOURCES = 100
SPEAKER = re.compile(r"^(?P<speaker>[^:\n]{1,80}):\s+(?P<text>.+)$", re.DOTALL)
URL = re.compile(r"https?://[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
# Zoom's chat file: "00:05:12 From  Mark Britz  to  Everyone:" (newer) or "00:05:12\t From  Mark Britz : text" (older)
CHAT_LINE = re.compile(r"^(?P<at>\d{1,2}:\d{2}:\d{2})\s+From\s+(?P<who>.+?)(?:\s+to\s+.+?)?\s*:\s*(?P<text>.*)$")


class TranscriptUnreadable(ValueError):
    """Not a WebVTT file: the reason says what is wrong."""


def _text(data: bytes) -> str:
    return data[:MAX_TEXT_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")


def parse_vtt(data: bytes) -> list[Cue]:
    """Timed lines of a WebVTT transcript; "Name: words" lines keep the speaker apart from the words."""
    try:
        captions = webvtt.from_buffer(io.StringIO(_text(data)))
    except MalformedFileError as error:
        raise TranscriptUnreadable(f"not a WebVTT transcript: {error}") from None
    cues = []
    for caption in captions.captions:  # what iterating the WebVTT gives, by its __getitem__
        text = " ".join(caption.text.split())
        if not text:
            continue
        speaker = None
        if match := SPEAKER.match(text):
            speaker, text = match["speaker"].strip(), match["text"].strip()
        cues.append(Cue(start=_start(caption.start_time), text=text, speaker=speaker))
        if len(cues) == MAX_CUES:
            break
    return cues


def _start(at: webvtt.models.Timestamp) -> float:
    # webvtt's own start_in_seconds drops the milliseconds
    return at.hours * 3600 + at.minutes * 60 + at.seconds + at.milliseconds / 1000


def transcript_text(cues: list[Cue]) -> str:
    """The transcript as prose for the summariser: one paragraph per speaker's turn."""
    turns: list[list[str]] = []
    last: object = object()
    for cue in cues:
        if cue.speaker != last or not turns:
            turns.append([])
            last = cue.speaker
        turns[-1].append(cue.text)
    return "\n\n".join(" ".join(turn) for turn in turns)


def _seconds(clock: str) -> float:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return float(hours * 3600 + minutes * 60 + seconds)


def chat_resources(data: bytes) -> list[Resource]:
    """The links shared in a session's chat, first mention first, each once, with who shared it and when."""
    resources: dict[str, Resource] = {}
    who: str | None = None
    at: float | None = None
    for line in _text(data).splitlines():
        if match := CHAT_LINE.match(line.strip()):
            who, at, text = match["who"].strip(), _seconds(match["at"]), match["text"]
        else:
            text = line
        for url in URL.findall(text):
            url = url.rstrip(".,;:!?")
            if url not in resources and len(url) <= 2000:
                resources[url] = Resource(url=url, shared_by=who, at_seconds=at)
        if len(resources) >= MAX_RESOURCES:
            break
    return list(resources.values())
