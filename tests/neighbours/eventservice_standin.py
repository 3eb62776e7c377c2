"""A stand-in for TicketBottle's EventService: a real gRPC server speaking the contract's
messages, whose answers a test sets per event and whose calls it counts."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from shared.proto import event_pb2, event_pb2_grpc


@dataclass
class Answer:
    allow_wait_room: bool = True
    status: int = event_pb2.EVENT_STATUS_PUBLISHED
    start: str = ""
    end: str = ""
    found: bool = True


class StandIn(event_pb2_grpc.EventServiceServicer):
    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.delay = 0.0
        self.released = threading.Event()  # set at the end: a slow answer stops waiting
        self._lock = threading.Lock()

    def _answer(self, method: str, event_id: str, context: Any) -> Answer:
        with self._lock:
            self.calls[(method, event_id)] += 1
        if self.delay:
            self.released.wait(self.delay)
        answer = self.answers.get(event_id)
        if answer is None or not answer.found:
            context.abort(grpc.StatusCode.NOT_FOUND, f"event {event_id} not found")
        assert answer is not None
        return answer

    def _config(self, event_id: str, a: Answer) -> event_pb2.EventConfig:
        return event_pb2.EventConfig(
            id=event_id,
            ticket_sale_start_date=a.start,
            ticket_sale_end_date=a.end,
            max_attendees=5000,
            allow_wait_room=a.allow_wait_room,
        )

    def GetConfig(self, request: Any, context: Any) -> Any:
        a = self._answer("GetConfig", request.event_id, context)
        return event_pb2.GetEventConfigResponse(event_config=self._config(request.event_id, a))

    def FindOne(self, request: Any, context: Any) -> Any:
        a = self._answer("FindOne", request.id, context)
        event = event_pb2.Event(
            id=request.id, name="a show", config=self._config(request.id, a), status=a.status
        )
        return event_pb2.FindOneEventResponse(event=event)

    def count(self, method: str, event_id: str) -> int:
        with self._lock:
            return self.calls[(method, event_id)]


class StandInServer:
    def __init__(self) -> None:
        self.servicer = StandIn()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        event_pb2_grpc.add_EventServiceServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> StandIn:
        self.server.start()
        return self.servicer

    def __exit__(self, *exc: object) -> None:
        self.servicer.released.set()
        self.server.stop(0).wait(5)
