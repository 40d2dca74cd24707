"""One exception base; stages map retryable vs permanent to retry-with-delay or dead letter."""


class ImpromptuError(Exception):
    """Base of every error Impromptu raises on purpose."""


class RetryableError(ImpromptuError):
    """Worth trying again later: a timeout, a 5xx, a peer that is down."""


class PermanentError(ImpromptuError):
    """Trying again cannot help: the input is wrong or refused. Goes to the dead-letter subject."""


class NotYet(ImpromptuError):
    """Not a failure: what this message needs has not happened yet (a follow-up's announcement is still being
    made). Redelivered after `retry_after` seconds (else the policy's backoff) without counting against the retry
    budget; the handler bounds how long it waits."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(ImpromptuError):
    """A settings or rules file is wrong; the message names the file, line and field."""
