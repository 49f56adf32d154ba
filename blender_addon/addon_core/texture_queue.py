"""Finished jobs' textures, PNG-encoded off Blender's main thread before they are packed into the .blend.

Encoding a 2048 px texture takes a few hundred milliseconds, many frames; a worker thread does it while the
object already shows the final mesh in vertex colours, and a later tick swaps the texture in.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from ..shared.mesh import Texture
from .png import encode_png


class TextureQueue:
    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, tuple[Future, Texture]] = {}

    def submit(self, job_id: str, texture: Texture) -> None:
        """Start encoding `job_id`'s texture; a newer one for the same job replaces it."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreamfusion-png")
        self._pending[job_id] = (self._pool.submit(encode_png, texture.image), texture)

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def ready(self) -> list[tuple[str, Texture, bytes | None, str]]:
        """The encodings that are done, each once: (job id, texture, PNG bytes or None, error text)."""
        out = []
        for job_id, (future, texture) in list(self._pending.items()):
            if not future.done():
                continue
            del self._pending[job_id]
            error = future.exception()
            out.append((job_id, texture, None if error else future.result(), str(error or "")))
        return out

    def shutdown(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
