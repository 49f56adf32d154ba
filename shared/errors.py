"""Every error the protocol package raises.

Two families: `SpecError` for a job specification a user got wrong (the
server answers `rejected`), and `ProtocolError` for a message that is not a
valid message (the server answers `error` and keeps serving). Each
`ProtocolError` subclass has a stable `code` that travels in the `error`
reply, so a client in any language can tell the cases apart.
"""

from __future__ import annotations

from typing import Any

#: Longest JobSpec field name an error names (longer unknown keys are cut, so a reply can always carry it).
MAX_FIELD_NAME = 200


def safe_text(text: Any, limit: int = 4096) -> str:
    """`text` as valid, printable Unicode of at most `limit` characters: safe to put in any reply.

    Replies about bad input quote that input; lone surrogates and control characters in it would make the reply
    itself invalid, so they become backslash escapes, and long text is cut with an ellipsis.
    """
    s = text if isinstance(text, str) else str(text)
    s = s[:limit]
    if not s.isprintable():
        s = "".join(c if c.isprintable() or c in "\t\n" else _escape(c) for c in s)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class DreamFusionError(Exception):
    """Base of everything this project raises on purpose."""


class SpecError(DreamFusionError, ValueError):
    """A JobSpec field is missing, unknown, of the wrong type or out of range."""

    def __init__(self, field: str, value: Any, allowed: str, problem: str = "is not allowed"):
        self.field = safe_text(field, MAX_FIELD_NAME)
        self.value = value
        self.allowed = allowed
        try:
            shown = repr(value)
        except RecursionError:  # a value nested too deep to print; the wire refuses those before they get here
            shown = f"<{type(value).__name__} nested too deep>"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(safe_text(f"{self.field} = {shown} {problem}; allowed: {allowed}"))


class ProtocolError(DreamFusionError, ValueError):
    """A message could not be decoded (or encoded). `code` names the kind."""

    code = "protocol_error"

    def __init__(self, detail: str, *, message_type: str | None = None, request_id: str | None = None):
        detail = safe_text(detail)
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
