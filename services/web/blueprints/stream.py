"""Server-Sent Events: open pages follow cameras, events, the armed state and the broker connection."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Blueprint, Response, stream_with_context
from flask.typing import ResponseReturnValue

from services.web.blueprints.access import owner_machine
from services.web.blueprints.common import event_json, relay
from services.web.const import SSE_KEEPALIVE_S
from services.web.event_model import StoredEvent

if TYPE_CHECKING:
    from services.web.relay import WebRelay

blueprint = Blueprint("stream", __name__)
blueprint.before_request(owner_machine)


@blueprint.get("/api/stream")
def stream() -> ResponseReturnValue:
    # In the request's context all along: events are shown with URLs, and only a request can build them.
    return Response(
        stream_with_context(sse_messages(relay())),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def sse_messages(relay: WebRelay) -> Iterator[str]:
    listener = relay.broadcaster.subscribe()
    try:
        # The first message brings the page up to date, and makes the server send the headers now.
        yield sse("status", relay.status())
        while not relay.hub.closed:
            try:
                kind, data = listener.get(timeout=SSE_KEEPALIVE_S)
            except queue.Empty:
                yield ": keep-alive\n\n"
                continue
            if relay.hub.closed:
                return  # woken by the relay's stop
            yield sse(kind, data)
    finally:
        relay.broadcaster.unsubscribe(listener)


def sse(kind: str, data: object) -> str:
    shown = event_json(data) if isinstance(data, StoredEvent) else data
    return f"event: {kind}\ndata: {json.dumps(shown, separators=(',', ':'))}\n\n"
