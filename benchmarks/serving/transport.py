"""How the CT travels to the server."""

from __future__ import annotations

from enum import Enum
from typing import Any


class Transport(Enum):
    """How the CT travels to the server."""

    GRPC = "grpc"
    SHARED_MEMORY = "grpc+shm"
    GZIP = "grpc+gzip"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`vfq.client.VfqClient` for this transport."""
        return {
            "shared_memory": self is Transport.SHARED_MEMORY,
            "compression": "gzip" if self is Transport.GZIP else None,
        }


#: The transport of every sweep level in results files that do not name one (shared memory only).
SWEEP_TRANSPORT_BEFORE = Transport.SHARED_MEMORY.value
