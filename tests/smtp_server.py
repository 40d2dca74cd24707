"""A real SMTP server on loopback (aiosmtpd) for the e-mail tests: it keeps what it got, and refuses a login, a
recipient or a message when told to."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, Session


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps what it got; answers RCPT or DATA with a refusal when told to."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    envelopes: list[Envelope] = field(default_factory=list)
    # address -> the replies to its next RCPTs, one used per attempt ("451 ..." once, then accepted)
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        if planned := self.rcpt_replies.get(address.lower()):
            reply = planned.pop(0)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(e.original_content or b"", policy=email.policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]

    def received_by(self) -> dict[str, int]:
        """How many messages each envelope recipient got."""
        counts: dict[str, int] = {}
        for envelope in self.envelopes:
            for address in envelope.rcpt_tos:
                counts[address.lower()] = counts.get(address.lower(), 0) + 1
        return counts


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox
    logins: list[tuple[str, bytes]] = field(default_factory=list)  # (mechanism, password) of refused logins


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reject_login(logins: list[tuple[str, bytes]]) -> Any:
    def authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> Any:
        logins.append((mechanism, auth_data.password))
        return AuthResult(success=False, handled=False)

    return authenticator


@contextmanager
def smtp_server(options: dict[str, Any]) -> Iterator[SmtpServer]:
    """options: rcpt_reply / data_reply (an SMTP reply such as "550 5.1.1 No such user"), reject_auth (bool)."""
    server = SmtpServer(
        free_port(), Mailbox(rcpt_reply=options.get("rcpt_reply"), data_reply=options.get("data_reply"))
    )
    kwargs: dict[str, Any] = {}
    if options.get("reject_auth"):
        kwargs = {"authenticator": _reject_login(server.logins), "auth_require_tls": False}
    controller = Controller(server.mailbox, hostname="127.0.0.1", port=server.port, **kwargs)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
