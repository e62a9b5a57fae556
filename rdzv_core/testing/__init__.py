"""The shared conformance suite: the store, backend and store-type contracts as tests.

Needs pytest (``pip install rdzv-core[testing]``); runtime code never imports this package.

- :class:`StoreConformance` — every rule of the store contract (one subclass + ``store_factory``)
- :class:`BackendConformance` — the backend contract over that store
- :class:`StoreTypeConformance` — the ``create_backend`` rules for a registered store type
- :class:`RendezvousScenarios` — the elastic rendezvous end to end, with real node processes
- :class:`MemoryStore` — the in-process reference store the core's own tests run the suite on
- :class:`EventRecorder` — a plugin that records events, for tests
- :func:`requires` — mark a test as needing a :class:`~rdzv_core.Capability`
"""

from ._support import EventRecorder, requires
from .backend_suite import BackendConformance
from .memory import MemoryStore
from .rendezvous_suite import RendezvousScenarios
from .store_suite import StoreConformance
from .storetype_suite import StoreTypeConformance

__all__ = [
    "BackendConformance",
    "EventRecorder",
    "MemoryStore",
    "RendezvousScenarios",
    "StoreConformance",
    "StoreTypeConformance",
    "requires",
]
