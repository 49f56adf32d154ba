"""Every error the protocol package raises.

Two families: `SpecError` for a job specification a user got wrong (the
server answers `rejected`), and `ProtocolError` for a message that is not a
valid message (the server answers `error` and keeps serving). Each
`ProtocolError` subclass has a stable `code` that travels in the `error`
reply, so a client in any language can tell the cases apart.
"""

from __future__ import annotations

from typing import Any


class DreamFusionError(Exception):
    """Base of everything this project raises on purpose."""


class SpecError(DreamFusionError, ValueError):
    """A JobSpec field is missing, unknown, of the wrong type or out of range."""

    def __init__(self, field: str, value: Any, allowed: str, problem: str = "is not allowed"):
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field} = {shown} {problem}; allowed: {allowed}")


class ProtocolError(DreamFusionError, ValueError):
    """A message could not be decoded (or encoded). `code` names the kind."""

    code = "protocol_error"

    def __init__(self, detail: str, *, message_type: str | None = None, request_id: str | None = None):
        self.detail = detail
        self.message_type = message_type
        self.request_id = request_id
        prefix = f"{message_type}: " if message_type else ""
        super().__init__(prefix + detail)


class BadTag(ProtocolError):
    code = "bad_tag"


class FrameCountMismatch(ProtocolError):
    code = "frame_count"


class BadJSON(ProtocolError):
    code = "bad_json"


class MissingType(ProtocolError):
    code = "missing_type"


class UnknownType(ProtocolError):
    code = "unknown_type"


class UnexpectedType(ProtocolError):
    """A known type sent in the wrong direction (e.g. a client sending `update`)."""

    code = "unexpected_type"


class MissingField(ProtocolError):
    code = "missing_field"


class UnknownField(ProtocolError):
    code = "unknown_field"


class BadField(ProtocolError):
    """A header field has the wrong JSON type or an out-of-range value."""

    code = "bad_field"


class BadJobSpec(ProtocolError):
    """The `spec` of a `submit` is invalid; the server answers `rejected`."""

    code = "bad_spec"

    def __init__(self, spec_error: SpecError, **kwargs: Any):
        self.spec_error = spec_error
        super().__init__(f"spec.{spec_error}", **kwargs)


class BadBuffer(ProtocolError):
    """A buffer descriptor is malformed, unknown, duplicated, missing or has the wrong shape."""

    code = "bad_buffer"


class BadDtype(ProtocolError):
    code = "bad_dtype"


class LengthMismatch(ProtocolError):
    code = "length_mismatch"


class IndexOutOfRange(ProtocolError):
    code = "index_out_of_range"


class NonFinite(ProtocolError):
    code = "non_finite"


class OverSize(ProtocolError):
    code = "oversize"


#: code -> class, for clients that want to re-raise an `error` reply.
PROTOCOL_ERRORS: dict[str, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        ProtocolError, BadTag, FrameCountMismatch, BadJSON, MissingType, UnknownType,
        UnexpectedType, MissingField, UnknownField, BadField, BadJobSpec, BadBuffer,
        BadDtype, LengthMismatch, IndexOutOfRange, NonFinite, OverSize,
    )
}
