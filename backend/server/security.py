"""Who may connect: loopback needs no keys; anything else needs CURVE keys and a list of allowed clients.

Key folder layout (`dreamfusion-backend keys generate DIR`):

    DIR/server.key, DIR/server.key_secret      the server's pair (keep the secret on the server)
    DIR/authorized/<name>.key                  public keys of the clients the server lets in
    DIR/clients/<name>.key, <name>.key_secret  each client's pair, to hand to that client

A client needs `server.key` and its own `<name>.key_secret`.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\*|\d+)$")


class SecurityError(RuntimeError):
    """The server must not start like this; the message says why and what to do."""


def is_loopback(endpoint: str) -> bool:
    """True for tcp on 127.0.0.0/8, ::1 or localhost, and for ipc:// (a socket file, guarded by its folder's
    permissions) and inproc://. Not for abstract ipc (`ipc://@name`): no file guards it, so any local user of
    any account can connect."""
    if endpoint.startswith("ipc://@"):
        return False
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = _TCP.match(endpoint)
    if not match:
        return False
    host = match["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name: reachable from elsewhere
        return False


def zmq_endpoint(endpoint: str) -> str:
    """Port 0 means 'any free port', which ZeroMQ spells '*'."""
    match = _TCP.match(endpoint)
    if match and match["port"] == "0":
        return f"tcp://{match['host']}:*"
    return endpoint


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: Path  # folder of allowed client public keys


def load_server_keys(folder: Path) -> ServerKeys:
    import zmq.auth

    folder = Path(folder).expanduser()
    secret_file = folder / "server.key_secret"
    authorized = folder / "authorized"
    if not secret_file.is_file():
        raise SecurityError(f"--curve-dir {folder}: no server.key_secret there; "
                            f"make one with `dreamfusion-backend keys generate {folder}`")
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise SecurityError(f"--curve-dir {folder}: no authorised client keys in {authorized}; "
                            "copy each client's .key (public) file there")
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if not secret:
        raise SecurityError(f"{secret_file} holds no secret key")
    return ServerKeys(public, secret, authorized)


def check_bind(endpoint: str, curve_dir: Path | None) -> ServerKeys | None:
    """The keys to use, or None for a key-free loopback bind; refuses a non-loopback bind without keys."""
    if curve_dir is not None:
        return load_server_keys(curve_dir)
    if not is_loopback(endpoint):
        what = "an abstract ipc socket, which every local user can reach," if endpoint.startswith("ipc://@") \
            else endpoint
        raise SecurityError(f"refusing to listen on {what} without authentication: only loopback "
                            "(127.0.0.1, ::1, localhost) and ipc socket files may run key-free. Make keys with "
                            "`dreamfusion-backend keys generate DIR` and start with --curve-dir DIR")
    return None


def generate_keys(folder: Path, clients: list[str]) -> list[Path]:
    """Write a server pair and one pair per client name; authorise those clients. Returns the files written."""
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise SecurityError("this pyzmq/libzmq build has no CURVE support")
    folder = Path(folder).expanduser()
    for name in clients:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise SecurityError(f"client name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    if (folder / "server.key_secret").exists():
        raise SecurityError(f"{folder} already holds server keys; pick a new folder or delete them first")
    written = []
    for sub in ("authorized", "clients"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    written += [Path(p) for p in zmq.auth.create_certificates(str(folder), "server")]
    for name in clients:
        public, secret = (Path(p) for p in zmq.auth.create_certificates(str(folder / "clients"), name))
        written += [public, secret, Path(shutil.copy(public, folder / "authorized" / public.name))]
    for path in written:
        if path.name.endswith("_secret"):
            path.chmod(0o600)
    return written
