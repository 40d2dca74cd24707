"""structlog set-up: readable console lines on a terminal, JSON lines otherwise, for every line the process writes.

Our own events go through structlog. Everything else that logs goes through the standard library's `logging` (uvicorn's
`uvicorn.error` / `uvicorn.access` / `uvicorn.asgi`, asyncio's "Task exception was never retrieved", nats-py, httpx,
warnings); one root handler renders those records with the same processors (structlog's ProcessorFormatter), so each
is one line too, once. An exception is a field, never a multi-line traceback: in JSON its frames as a list
(`exception: [{exc_type, exc_value, frames: [{filename, lineno, name}]}]`, no local variables: they may hold
secrets), on a terminal a field of the line (`raised="TypeError: … (asgi_csrf.py:291 in …)"`). An exception
nobody caught (sys.excepthook, a thread's) is logged the same way as `process.uncaught_exception`.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

# Other libraries' records below WARNING are left out: httpx logs every request's URL at INFO (a Slack webhook's URL
# is its secret), uvicorn its start-up banner; our own events keep IMPROMPTU_LOG_LEVEL.
FOREIGN_MIN_LEVEL = logging.WARNING
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written, not when logging was configured: a command run inside a test
    runner (or anything that swaps stderr for a while) must not leave every later log line writing to a closed
    stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _StructlogHandler(logging.StreamHandler[_CurrentStderr]):
    """The root handler configure_logging installs (told apart from anyone else's when configuring again)."""


def _exc_info_of(
    event_dict: MutableMapping[str, Any],
) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
    exc_info = event_dict.pop("exc_info", None)
    if isinstance(exc_info, BaseException):
        return type(exc_info), exc_info, exc_info.__traceback__
    if isinstance(exc_info, tuple) and exc_info and exc_info[0] is not None:
        return exc_info
    if exc_info is True:
        current = sys.exc_info()
        return current if current[0] is not None else None
    return None


def one_line_exception(_logger: object, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """On a terminal: `raised="TypeError: boom (file.py:12 in f)"`, the innermost frame, not a traceback."""
    found = _exc_info_of(event_dict)
    if found is not None:
        kind, error, tb = found
        text = f"{kind.__name__}: {error}" if str(error) else kind.__name__
        frames = traceback.extract_tb(tb)
        if frames:
            last = frames[-1]
            text += f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name})"
        # not "exception": ConsoleRenderer prints that one on lines of its own
        event_dict["raised"] = " ".join(text.split())
    return event_dict


def _one_line_event(_logger: object, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn writes "Exception in ASGI application\\n": the event itself stays on its line."""
    event = event_dict.get("event")
    if isinstance(event, str) and "\n" in event:
        event_dict["event"] = " ".join(event.split())
    return event_dict


def configure_logging(*, json: bool | None = None, level: str = "INFO") -> None:
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    exceptions: structlog.typing.Processor = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False, max_frames=20))
        if use_json
        else one_line_exception
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exceptions,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # typed as TextIO; structlog only calls write() and flush()
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(renderer, exceptions, level)


def _route_standard_logging(
    renderer: structlog.typing.Processor, exceptions: structlog.typing.Processor, level: str
) -> None:
    handler = _StructlogHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _one_line_event,
                exceptions,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(FOREIGN_MIN_LEVEL, logging.getLevelNamesMapping()[level.upper()]))
    for name in UVICORN_LOGGERS:  # whatever uvicorn or a log config gave them: through the root handler, once
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.captureWarnings(True)  # warnings.warn: the py.warnings logger, not a bare line on stderr
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


_uncaught = structlog.get_logger("pipeline.process")


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    _uncaught.critical("process.uncaught_exception", exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread else None
    _uncaught.error(
        "process.uncaught_exception", thread=thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )
