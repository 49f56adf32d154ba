"""The DreamFusion-for-Blender wire protocol: job spec, messages, framing.

Pure Python + numpy (+ pyzmq for `transport`), importable inside Blender's
Python. Only relative imports, so `build_addon.py` can vendor this folder
into the add-on under any name.
"""

from .errors import (BadBuffer, BadDtype, BadField, BadJobSpec, BadJSON, BadTag, DreamFusionError,
                     FrameCountMismatch, IndexOutOfRange, LengthMismatch, MissingField, MissingType, NonFinite,
                     OverSize, PROTOCOL_ERRORS, ProtocolError, SpecError, UnexpectedType, UnknownField,
                     UnknownType)
from .framing import DEFAULT_MAX_MESSAGE_BYTES, MAX_HEADER_BYTES, decode, encode
from .jobspec import PRESETS, JobSpec, jobspec_knobs, model_source
from .knobs import Knob
from .mesh import MeshData, Texture
from .messages import (CLIENT_TYPES, MESSAGE_TYPES, SERVER_TYPES, Accepted, Ack, Bye, Cancel, Cancelled, Chosen,
                       Delete, Deleted, Error, Failed, Finished, Heartbeat, Hello, Image, JobInfo, List, ListReply,
                       Message, Pick, Progress, Rejected, Result, Resume, Status, StatusReply, Submit, Update, Watch,
                       Welcome)
from .version import PROTOCOL_TAG, PROTOCOL_VERSION, __version__

__all__ = [name for name in dir() if not name.startswith("_")]
