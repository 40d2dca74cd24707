"""A share as people and other systems hand it in: the webhook's body, and each line of a replay file.

`ShareBody` is the small shape a sender writes (`url`, `by`, ...); a replay file may also hold whole `Share`
messages as they were on the bus. Reading JSON into either never raises anything but `InvalidShare`, whose
problems each name a field and say what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import pydantic_core
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ImpromptuError
from pipeline.messages import HttpUrlStr, Network, Share, stable_id

# Ids travel as the Nats-Msg-Id header: a space, CR or LF there would corrupt the NATS protocol line.
HEADER_SAFE = re.compile(r"^[!-~]{1,200}$")
HEADER_SAFE_MESSAGE = "must be 1-200 printable ASCII characters without spaces (it becomes a NATS header)"


class Problem(NamedTuple):
    field: str
    message: str


class InvalidShare(ImpromptuError):
    """The input is not a share; `problems` lists every reason, each naming its field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))


class ShareBody(BaseModel):
    """A share as a sender describes it; the pipeline derives the bus message's ids from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrlStr = Field(description="The linked article, expanded (never a short link).")
    by: str = Field(min_length=1, description="Who shared it, e.g. @britz.", examples=["@britz"])
    text: str = Field(default="", description="The post's own text.")
    network: Network | None = Field(default=None, description="The network `by` is a handle on.")
    id: str | None = Field(
        default=None,
        pattern=HEADER_SAFE.pattern,
        description="The sender's stable id for this share; default: derived from url + by, so re-sending the "
        "same link from the same person is one share.",
    )
    shared_at: AwareDatetime | None = Field(default=None, description="When it was shared; default: now.")
    is_reply: bool = False
    is_repost: bool = False
    language: str | None = None

    def to_share(self, source: str) -> Share:
        optional: dict[str, datetime] = {"shared_at": self.shared_at} if self.shared_at is not None else {}
        return Share.from_source(
            source=source,
            native_id=self.id or stable_id("s", self.url, self.by),
            sharer=self.by,
            network=self.network,
            text=self.text,
            url=self.url,
            is_reply=self.is_reply,
            is_repost=self.is_repost,
            language=self.language,
            **optional,
        )


# Keys only a bus Share has: a JSON object with one of them (and no `by`) is read as a whole Share.
BUS_ONLY_FIELDS = frozenset(Share.model_fields) - frozenset(ShareBody.model_fields)


def problems_of(error: ValidationError) -> list[Problem]:
    return [
        Problem(
            # drop pydantic's internal steps such as 'function-after[...]'
            ".".join(str(part) for part in issue["loc"] if not (isinstance(part, str) and "[" in part)) or "<body>",
            issue["msg"],
        )
        for issue in error.errors(include_url=False)
    ]


def read_json_object(raw: bytes | str) -> dict[str, object]:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")  # a lone surrogate then fails below as invalid UTF-8
    try:
        data = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as error:  # bad syntax, bad UTF-8, lone surrogates, nesting too deep
        raise InvalidShare([Problem("<json>", str(error))]) from None
    if not isinstance(data, dict):
        raise InvalidShare([Problem("<json>", f"expected a JSON object, got {type(data).__name__}")])
    return data


def body_from_json(raw: bytes | str) -> ShareBody:
    """The webhook's body: only the sender's shape."""
    try:
        return ShareBody.model_validate(read_json_object(raw))
    except ValidationError as error:
        raise InvalidShare(problems_of(error)) from None


def is_bus_share(data: dict[str, object]) -> bool:
    return "by" not in data and not BUS_ONLY_FIELDS.isdisjoint(data)


def share_from_object(data: dict[str, object], source: str) -> Share:
    """A whole bus Share kept as it is, or a sender's body turned into one from `source`."""
    try:
        if is_bus_share(data):
            share = Share.model_validate(data)
            problems = [
                Problem(field, HEADER_SAFE_MESSAGE)
                for field, value in (("id", share.id), ("correlation_id", share.correlation_id))
                if not HEADER_SAFE.fullmatch(value)
            ]
            if problems:
                raise InvalidShare(problems)
            return share
        return ShareBody.model_validate(data).to_share(source)
    except ValidationError as error:
        raise InvalidShare(problems_of(error)) from None


def share_from_json(raw: bytes | str, source: str) -> Share:
    return share_from_object(read_json_object(raw), source)
