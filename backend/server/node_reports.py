"""What a job's host (a Ray node, or a plain server's job process) may tell the service about its job, checked
before the service's store or clients see it.

A host is trusted with its own job only: a job process may have been driven by hostile input into a broken
state. Its worker's reports (`job_host.py`) are applied as a worker in the service's own process would have
made them: record changes field by field (an end of the job only as a transition from `running`), files only
as result files in the job's folder, messages only about its job, and `finished` with the paths the service
knows, not the host's. Anything else raises ValueError.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from blender_dreamfusion.shared import (SERVER_TYPES, Cancelled, Chosen, Failed, Finished, Message, MeshData,
                                        Progress, ProtocolError, Texture, Update)
from blender_dreamfusion.shared.errors import safe_text
from blender_dreamfusion.shared.formats import result_file_pattern
from blender_dreamfusion.shared.framing import decode
from blender_dreamfusion.shared.states import RUN_ENDS, RUNNING

from .jobs import JobStore
from .job_host import CHECKPOINT, FILE, MESH, MESSAGE, TEXTURE, UPDATE

#: Files a node may put into its job's folder: what `export_result` writes for the result.
RESULT_FILES = result_file_pattern()
#: What a node may say to its job's clients.
_NODE_MESSAGES = (Progress, Update, Chosen, Finished, Failed, Cancelled)
#: Record fields a node may change.
_NODE_FIELDS = frozenset({"state", "step", "loss", "elapsed", "reason", "files"})


def apply_report(store: JobStore, job_id: str, report: tuple) -> Message | None:
    """Apply one report of the job's node to the gateway's store; returns the message it carries for the job's
    clients, if it is one. A report about another job, a path outside the job's folder or a record change a
    worker never makes raises ValueError (the job fails, naming it)."""
    try:
        return _apply_report(store, job_id, report)
    except (IndexError, KeyError, AttributeError, TypeError, ValueError, ProtocolError, OverflowError) as exc:
        raise ValueError(f"{type(exc).__name__}: {safe_text(exc, 300)}") from None


def _apply_report(store: JobStore, job_id: str, report: tuple) -> Message | None:
    if not isinstance(report, tuple) or not report or not isinstance(report[0], str):
        raise ValueError("a report is a tuple that starts with its kind")
    kind = report[0]
    if kind == MESSAGE:
        return _checked_message(store, job_id, decode(report[1], accept=SERVER_TYPES))
    elif kind == UPDATE:
        _, changes, persist = report
        _apply_changes(store, job_id, dict(changes), bool(persist))
    elif kind == MESH:
        store.save_mesh(job_id, MeshData(*report[1:]))
    elif kind == TEXTURE:
        store.save_texture(job_id, Texture(*report[1:]))
    elif kind == CHECKPOINT:
        if not isinstance(report[1], bytes):
            raise ValueError("a checkpoint must arrive as bytes")
        store.put_checkpoint(job_id, report[1])
    elif kind == FILE:
        _, name, data = report
        if not isinstance(name, str) or not re.fullmatch(RESULT_FILES, name) or not isinstance(data, bytes):
            raise ValueError(f"a node may only send result files ({RESULT_FILES}), not {safe_text(name, 80)!r}")
        store.put_file(job_id, name, data)
    else:
        raise ValueError(f"unknown report {safe_text(kind, 40)!r} from the job's node")
    return None


def _checked_message(store: JobStore, job_id: str, message: Message) -> Message:
    if not isinstance(message, _NODE_MESSAGES) or getattr(message, "job_id", None) != job_id:
        raise ValueError(f"a node may only send its own job's progress, updates and end, not "
                         f"{message.TYPE} for {getattr(message, 'job_id', None)!r}")
    if isinstance(message, Finished):  # paths the gateway knows to be there, not what the node says
        record = store.get(job_id)
        checkpoints = store.checkpoints(job_id)
        message = dataclasses.replace(message, checkpoint=str(checkpoints[0]) if checkpoints else "",
                                      files=dict(record.files) if record is not None else {})
    return message


def _apply_changes(store: JobStore, job_id: str, changes: dict[str, Any], persist: bool) -> None:
    """A record change of the node's worker, checked field by field; an end of the job is a transition
    from `running`, as a worker here would make it."""
    unknown = set(changes) - _NODE_FIELDS
    if unknown:
        raise ValueError(f"a node may not change {sorted(map(str, unknown))}")
    record = store.get(job_id)
    if record is None:
        return  # deleted meanwhile
    if "step" in changes and not (type(changes["step"]) is int and 0 <= changes["step"] <= record.spec.steps):
        raise ValueError(f"step = {safe_text(changes['step'], 40)} is not a step of this job")
    for name in ("loss", "elapsed"):
        value = changes.get(name)
        if value is not None and not (type(value) in (int, float) and math.isfinite(value)):
            raise ValueError(f"{name} = {safe_text(value, 40)} is not a finite number")
    if "elapsed" in changes and not 0 <= (changes["elapsed"] or 0) <= 1e9:
        raise ValueError("elapsed is out of range")
    if "reason" in changes:
        changes["reason"] = safe_text(changes["reason"], 2000) if isinstance(changes["reason"], str) else ""
    if "files" in changes:
        files = changes["files"]
        if not isinstance(files, dict):
            raise ValueError("files must be a mapping")
        folder = store.folder(job_id)
        changes["files"] = checked = {}
        for kind, path in files.items():
            name = Path(str(path)).name
            if not (isinstance(kind, str) and re.fullmatch(r"[a-z0-9_]{1,20}", kind)
                    and re.fullmatch(RESULT_FILES, name) and (folder / name).is_file()):
                raise ValueError(f"files: {safe_text(kind, 40)!r} names no result file of this job")
            checked[kind] = str(folder / name)
    state = changes.pop("state", None)
    if state is None:
        store.update(job_id, persist=persist, **changes)
    elif state in RUN_ENDS:
        store.transition(job_id, (RUNNING,), state, **changes)
    else:
        raise ValueError(f"a node may not set a job {safe_text(state, 40)!r}")
