"""Server-Sent Events, as the WHATWG HTML standard parses them (the parts an alert
stream uses): ``id``, ``event``, ``data`` (lines joined), ``retry``; comments ignored.

Kept apart from the client so the parsing is tested on its own, byte stream in,
events out, whatever transport brought the lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "parse_sse"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    #: The stream's last event id when this event was dispatched ("" if none yet).
    id: str
    #: A ``retry:`` the stream sent (milliseconds), if any, since the previous event.
    retry: int | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events from the stream's lines (without their line endings).

    A blank line dispatches the event being built; an event with no ``data`` is not
    dispatched (keep-alives are comments, ``: ...``). The last ``id`` carries over to
    later events, as the standard says, so it is what to send back as ``Last-Event-ID``.
    An event cut off by the end of the stream (no blank line after it) is dropped: the
    server sends it again after a reconnection.
    """
    last_id, event = "", ""
    data: list[str] = []
    retry: int | None = None
    for line in lines:
        if line == "":
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id, retry)
                retry = None
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
