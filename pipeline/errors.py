"""One exception base; stages map retryable vs permanent to retry-with-delay or dead letter."""


class ImpromptuError(Exception):
    """Base of every error Impromptu raises on purpose."""


class RetryableError(ImpromptuError):
    """Worth trying again later: a timeout, a 5xx, a peer that is down."""


class PermanentError(ImpromptuError):
    """Trying again cannot help: the input is wrong or refused. Goes to the dead-letter subject."""


class ConfigError(ImpromptuError):
    """A settings or rules file is wrong; the message names the file, line and field."""
