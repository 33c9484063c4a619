"""What both OTLP receivers hold: their config section, the ingest they feed, who may send, and
the requests they are answering (so that their drains wait the same way)."""

from __future__ import annotations

from typing import Generic, TypeVar

from ingestd.auth import Authenticator
from ingestd.config import AuthConfig
from ingestd.ingest import Ingest
from ingestd.receiver.inflight import InFlight

SectionT = TypeVar("SectionT")


class ReceiverBase(Generic[SectionT]):
    """The state the gRPC and HTTP receivers share; each adds its transport's own."""

    def __init__(
        self,
        config: SectionT,
        ingest: Ingest,
        auth: Authenticator | None = None,
        *,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        # Several workers share the port (workers: N); one process alone binds it exclusively.
        self.reuse_port = reuse_port
        self._ingest = ingest
        # Without auth every request belongs to the default tenant "".
        self._auth = auth or Authenticator(AuthConfig())
        self._closing = False
        self._in_flight = InFlight()
        self.port: int | None = None
        self._init_transport()

    def _init_transport(self) -> None:
        """The transport's own state, set up once the shared part is."""

    def _status(self, *, listening: bool, requests: dict[str, int]) -> dict[str, object]:
        """For /status: whether it serves, requests in flight, requests by the answer sent."""
        return {
            "port": self.port,
            "listening": listening,
            "closing": self._closing,
            "in_flight": self._in_flight.count,
            "requests": requests,
        }
