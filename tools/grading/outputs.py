"""Bounds on what a submission's kernel can make the grader hold: outputs per cell and per notebook, and messages.

The kernel runs the submission's code, so every message it sends is hostile until measured. Two layers keep the
trusted process (nbgrader, in the worker) small whatever a cell prints:

- **Messages.** :func:`limit_client` makes the grader's kernel client refuse any ZeroMQ frame over
  :attr:`OutputLimits.message_bytes` (``ZMQ_MAXMSGSIZE``: the connection is dropped before the frame is stored),
  keeps few messages queued (``ZMQ_RCVHWM``), and reads each message frame by frame, dropping one whose frames
  together pass the limit (:class:`BoundedChannel`). A dropped message becomes a small placeholder, so that the
  cell still ends and its note says what happened.
- **Outputs.** :class:`OutputBudget` admits each output message as it arrives: text past the cell's or the
  notebook's budget is cut, a rich output that does not fit keeps only its truncated ``text/plain``, errors always
  keep their name and a short message (they decide grades). Probe outputs (:data:`PROBE_MIME`, only in cells marked
  ``{"labcode_probe": true}``) have a budget of their own per cell; they never reach the autograded notebook.

Whenever something is cut, the cell ends with one line: ``[output cut by the grader: ... over the limit of ...]``.
Sizes are counted in characters of text (a character of output is at least one byte of the message).
"""

from __future__ import annotations

import contextlib
import json
import time
import typing as t
from dataclasses import dataclass, field
from queue import Empty

import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from nbformat.notebooknode import NotebookNode
from zmq.utils.monitor import parse_monitor_message

from tools.grading import probe

MIB = 1 << 20
#: MIME type of the data a grader-inserted probe cell sends back to the judge, and the key marking such a cell.
PROBE_MIME, PROBE_FLAG = probe.MIME, probe.CELL_KEY
#: Beginning of the note added to a cell whose output was cut.
CUT = "[output cut by the grader:"
#: Messages kept waiting in the client's queue, per socket (a message counts once, whatever its size).
QUEUED_MESSAGES = 32
#: Characters of an error's message kept when nothing is left of the budget.
ERROR_MESSAGE = 1000
OUTPUT_MESSAGES = {"stream", "display_data", "execute_result", "update_display_data", "error"}


@dataclass(frozen=True)
class OutputLimits:
    """Output bounds of one notebook's execution, in characters (bytes for messages).

    Attributes:
        cell_bytes: outputs kept per cell (text and rich data together).
        notebook_bytes: outputs kept per notebook.
        probe_cell_bytes: probe data kept per probe cell (counted apart from the rest).
        message_bytes: largest message the grader's kernel client accepts; must exceed ``probe_cell_bytes``.
    """

    cell_bytes: int = 2 * MIB
    notebook_bytes: int = 8 * MIB
    probe_cell_bytes: int = 32 * MIB
    message_bytes: int = 40 * MIB

    def __post_init__(self) -> None:
        for name in ("cell_bytes", "notebook_bytes", "probe_cell_bytes", "message_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"OutputLimits.{name} must be positive, got {getattr(self, name)}")


def human(size: int) -> str:
    """``size`` in bytes as a short text (``2 MiB``, ``286.1 MiB``, ``512 bytes``)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def data_size(value: t.Any) -> int:
    """The size of one MIME value of an output: its length as text (JSON values as their JSON)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):  # nbformat allows multi-line strings as lists
        return sum(len(part) for part in value if isinstance(part, str))
    return len(json.dumps(value, default=str))


# --------------------------------------------------------------------------------------------------------------------
# Outputs, as they arrive
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class _Cut:
    """What was cut in the current cell: the characters left out, and which limit decided."""

    dropped: int = 0
    limit: str = ""
    messages: int = 0


@dataclass
class OutputBudget:
    """Admits the output messages of one notebook's execution, cell by cell, within :class:`OutputLimits`."""

    limits: OutputLimits = field(default_factory=OutputLimits)
    notebook_used: int = 0
    cell_used: int = 0
    probe_used: int = 0
    cut: _Cut = field(default_factory=_Cut)

    def start_cell(self) -> None:
        """Begin a new cell: its own budget, nothing cut yet."""
        self.cell_used, self.probe_used, self.cut = 0, 0, _Cut()

    def clear(self) -> None:
        """The cell's outputs were cleared (``clear_output``): what they held is free again."""
        self.notebook_used = max(0, self.notebook_used - self.cell_used)
        self.cell_used = 0

    def dropped_message(self) -> None:
        """Record a kernel message that was refused whole (over :attr:`OutputLimits.message_bytes`)."""
        self.cut.messages += 1

    def _room(self) -> tuple[int, str]:
        cell_left = self.limits.cell_bytes - self.cell_used
        notebook_left = self.limits.notebook_bytes - self.notebook_used
        if notebook_left < cell_left:
            return max(0, notebook_left), f"{human(self.limits.notebook_bytes)} per notebook"
        return max(0, cell_left), f"{human(self.limits.cell_bytes)} per cell"

    def _take(self, size: int) -> None:
        self.cell_used += size
        self.notebook_used += size

    def _record(self, dropped: int, limit: str) -> None:
        if dropped > 0:
            self.cut.dropped += dropped
            self.cut.limit = self.cut.limit or limit

    def admit(self, msg: dict, probe_cell: bool = False) -> dict | None:
        """The output message to keep (``msg``, possibly with its content cut), or ``None`` to drop it.

        Args:
            msg: a kernel message (``msg_type`` and ``content``), changed in place when cut.
            probe_cell: whether the cell is a grader probe cell (its :data:`PROBE_MIME` data has its own budget).
        """
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
        content = msg.get("content")
        if kind not in OUTPUT_MESSAGES or not isinstance(content, dict):
            return msg
        room, limit = self._room()
        if kind == "stream":
            text = content.get("text")
            text = text if isinstance(text, str) else str(text)
            if len(text) > room:
                self._record(len(text) - room, limit)
                text = text[:room]
            if not text:
                return None
            content["text"] = text
            self._take(len(text))
            return msg
        if kind == "error":
            return self._admit_error(content, room, limit, msg)
        data = content.get("data")
        if not isinstance(data, dict):
            return None
        if probe_cell and PROBE_MIME in data:
            size = data_size(data[PROBE_MIME])
            if self.probe_used + size > self.limits.probe_cell_bytes:
                self._record(size, f"{human(self.limits.probe_cell_bytes)} of probe data per cell")
                return None
            self.probe_used += size
            return msg
        data.pop(PROBE_MIME, None)  # probe data only counts in a probe cell
        if not data:
            return None
        size = sum(data_size(value) for value in data.values())
        if size <= room:
            self._take(size)
            return msg
        plain = data.get("text/plain")
        plain = plain if isinstance(plain, str) else ""
        kept = plain[:room]
        self._record(size - len(kept), limit)
        if not kept:
            return None
        content["data"] = {"text/plain": kept}
        content["metadata"] = {}
        self._take(len(kept))
        return msg

    def _admit_error(self, content: dict, room: int, limit: str, msg: dict) -> dict:
        ename = str(content.get("ename", "Error"))[:200]
        evalue = str(content.get("evalue", ""))
        traceback = content.get("traceback")
        lines = [str(line) for line in traceback] if isinstance(traceback, list) else []
        size = len(ename) + len(evalue) + sum(len(line) for line in lines)
        if size > room:  # an error decides a grade: keep its name and the start of its message
            kept_value = evalue[:max(room, ERROR_MESSAGE)]
            self._record(size - len(kept_value) - len(ename), limit)
            evalue, lines = kept_value, [f"{ename}: {kept_value}"]
            size = len(ename) + 2 * len(kept_value)
        content.update(ename=ename, evalue=evalue, traceback=lines)
        self._take(size)
        return msg

    def note(self) -> NotebookNode | None:
        """The one-line note (a ``text/plain`` display) for the current cell, if anything of its output was cut."""
        parts = []
        if self.cut.dropped:
            parts.append(f"{human(self.cut.dropped)} of output over the limit of {self.cut.limit}")
        if self.cut.messages:
            parts.append(f"{self.cut.messages} message(s) from the kernel over the limit of "
                         f"{human(self.limits.message_bytes)} per message refused")
        if not parts:
            return None
        text = f"{CUT} {'; '.join(parts)}]"
        # display data, not a stream: nbgrader's LimitOutput, which cuts streams by lines, keeps it
        return NotebookNode(output_type="display_data", data={"text/plain": text}, metadata={})


# --------------------------------------------------------------------------------------------------------------------
# Messages, before they are stored
# --------------------------------------------------------------------------------------------------------------------

DELIMITER = b"<IDS|MSG>"
#: Marks a placeholder message that stands for one refused whole.
DROPPED = "labcode_dropped_bytes"


class BoundedChannel(AsyncZMQSocketChannel):
    """A kernel client channel that reads a message frame by frame and drops one over :attr:`max_bytes`.

    A dropped message is replaced by a placeholder with the same header and parent (so that the waiting side still
    matches it), empty content except for :data:`DROPPED` (the bytes refused), and, on the shell channel, an error
    reply (so that the cell ends). A frame over ``ZMQ_MAXMSGSIZE`` never arrives at all: ZeroMQ drops the
    connection instead, and does not reconnect by itself; the channel watches for that, connects again and counts
    the message in :attr:`refused` (what was sent meanwhile is lost).
    """

    max_bytes: int = OutputLimits.message_bytes

    def __init__(self, socket: t.Any, session: t.Any, loop: t.Any = None) -> None:
        super().__init__(socket, session, loop)
        self.refused = 0
        self._monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    async def get_msg(self, timeout: float | None = None) -> dict[str, t.Any]:  # type: ignore[override]
        """The next message; reconnects first when the kernel's connection was dropped for an oversized frame."""
        assert self.socket is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = zmq.asyncio.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(await poller.poll(left))
            if self._monitor in ready:
                await self._reconnect()
            elif self.socket in ready:
                return await self._recv()
            else:
                raise Empty

    async def _reconnect(self) -> None:
        event = parse_monitor_message(await self._monitor.recv_multipart())
        endpoint = event["endpoint"].decode() if isinstance(event["endpoint"], bytes) else str(event["endpoint"])
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disconnect(endpoint)
        self.socket.connect(endpoint)
        self.refused += 1

    def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.socket.disable_monitor()
        self._monitor.close(linger=0)
        super().close()

    stop = close

    async def _recv(self, **kwargs: t.Any) -> dict[str, t.Any]:  # type: ignore[override]
        assert self.socket is not None
        while True:
            frames: list[bytes] = []
            total, over = 0, False
            while True:
                frame = await self.socket.recv(copy=False)
                total += len(frame)
                if total > self.max_bytes:
                    over = True
                elif not over:
                    frames.append(frame.bytes)
                if not frame.more:
                    break
            if not over:
                _ident, smsg = self.session.feed_identities(frames)
                return self.session.deserialize(smsg)
            placeholder = self._placeholder(frames, total)
            if placeholder is not None:
                return placeholder

    def _placeholder(self, frames: list[bytes], total: int) -> dict[str, t.Any] | None:
        """A message standing for the refused one, or ``None`` when even its header was too large to read."""
        try:
            start = frames.index(DELIMITER)
            header = json.loads(frames[start + 2])
            parent = json.loads(frames[start + 3])
        except (ValueError, IndexError):
            return None
        if not isinstance(header, dict) or not isinstance(parent, dict):
            return None
        kind = str(header.get("msg_type", ""))
        content: dict[str, t.Any] = {DROPPED: total}
        if kind.endswith("_reply"):
            content.update(status="error", ename="OutputTooLarge", traceback=[], execution_count=None,
                           evalue=f"a reply of {human(total)} from the kernel was refused by the grader")
        return {"header": header, "parent_header": parent, "metadata": {}, "content": content, "buffers": [],
                "msg_id": header.get("msg_id", ""), "msg_type": kind}


def refused_messages(client: t.Any) -> int:
    """How many times a kernel client's channels lost their connection to an oversized frame, so far."""
    channels = (getattr(client, f"_{name}_channel", None) for name in ("shell", "iopub", "stdin", "control"))
    return sum(channel.refused for channel in channels if isinstance(channel, BoundedChannel))


def limit_client(client: t.Any, limits: OutputLimits) -> None:
    """Bound every socket and channel of a kernel client (call before ``start_channels``).

    Args:
        client: a ``jupyter_client`` asynchronous kernel client with its own ZeroMQ context.
        limits: the bounds; ``message_bytes`` is the largest frame and the largest message accepted.
    """
    client.context.setsockopt(zmq.MAXMSGSIZE, limits.message_bytes)
    client.context.setsockopt(zmq.RCVHWM, QUEUED_MESSAGES)
    bounded = type("BoundedChannel", (BoundedChannel,), {"max_bytes": limits.message_bytes})
    for channel in ("shell", "iopub", "stdin", "control"):
        setattr(client, f"{channel}_channel_class", bounded)
