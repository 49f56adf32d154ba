"""Protocol identity. Bump PROTOCOL_VERSION only for changes an old peer would misread."""

PROTOCOL_NAME = "dreamfusion"
PROTOCOL_VERSION = 1
#: Frame 0 of every message, ASCII.
PROTOCOL_TAG = f"{PROTOCOL_NAME}/{PROTOCOL_VERSION}".encode("ascii")

#: Version of this package (the add-on and backend ship the same one).
__version__ = "0.1.0"
