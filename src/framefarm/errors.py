"""One small hierarchy of typed errors; each module translates its library's errors at its edge."""


class FramefarmError(Exception):
    """Base of every error framefarm raises on purpose."""


class ConfigError(FramefarmError):
    """The pipeline file is invalid; ``problems`` holds every finding, each with file:line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RegistryError(FramefarmError):
    """A module kind could not be registered or loaded."""


class ModelError(FramefarmError):
    """A model file is missing, unreadable or not a YOLO network framefarm can decode."""


class SourceError(FramefarmError):
    """An input cannot read its source."""


class SourceUnavailable(SourceError):
    """The source cannot be opened now; the runner retries with backoff."""


class SourceStalled(SourceError):
    """The source was open but delivered nothing within its timeout."""


class BadInput(SourceError):
    """One item of the source (a file, a frame) is unreadable; it is set aside, the input goes on."""


class IncompleteFile(BadInput):
    """A file that ends too early: still being written, or truncated for good if it stays so."""


class SinkError(FramefarmError):
    """An output could not deliver. Raise one of the two kinds below so the stage knows what to do."""


class SinkUnavailable(SinkError):
    """Worth another try: the receiver is down, timed out or answered 5xx/429. Retried with backoff, or after
    ``retry_after`` seconds when the receiver said when (an HTTP ``Retry-After``)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SinkRejected(SinkError):
    """Never worth another try: the receiver refused the result (a 4xx, a payload it does not take).

    The frame is dropped and counted as ``rejected.<output>``; the receiver's answer belongs in the message.
    """


class SinkFull(SinkError):
    """The output dropped the result unsent: too many results already wait for its receiver (``max_pending``).

    Counted as ``dropped.<output>``, the frame released: a receiver that never returns cannot fill the broker.
    """


class BusError(FramefarmError):
    """The broker or the frame store failed."""


class FrameMissing(BusError):
    """A frame's bytes are gone from the store (expired or already released)."""


class MasterError(FramefarmError):
    """The supervisord master cannot be started, reached or controlled."""
