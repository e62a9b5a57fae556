"""The shared conformance suite: the store, backend and store-type contracts as tests.

Needs pytest (``pip install rdzv-core[testing]``); runtime code never imports this package.
:data:`SUITE_VERSION` goes up whenever a suite test is added or made stricter: pin
``rdzv-core[testing]`` in your plugin's test requirements to the minor version you last
passed, and raise the pin when you have run the newer suite.

- :class:`StoreConformance` — every rule of the store contract (one subclass + ``store_factory``)
- :class:`BackendConformance` — the backend contract over that store
- :class:`StoreTypeConformance` — the ``create_backend`` rules for a registered store type
- :class:`RendezvousScenarios` — the elastic rendezvous end to end, with real node processes
- :class:`FailoverScenarios` — optional: the store and a rendezvous across the death of a
  replicated engine's leader (for store types on such an engine)
- :class:`RankOrderSuite` — the rank order contract, for a plugin's ``rank_order=`` choices
- :class:`MemoryStore` — the in-process reference store the core's own tests run the suite on
- :class:`EventRecorder` — a plugin that records events, for tests
- :func:`requires` — mark a test as needing a :class:`~rdzv_core.Capability`
"""

try:
    import pytest
except ImportError as e:  # pragma: no cover - exercised in a venv without pytest
    raise ImportError(
        "rdzv_core.testing is the conformance suite and needs pytest: "
        "pip install 'rdzv-core[testing]'"
    ) from e

#: The version of the suite's tests (see the module docstring).
SUITE_VERSION = "5"

# Show the values behind a failed check in the suite's own asserts, as in test files.
pytest.register_assert_rewrite(
    "rdzv_core.testing._support",
    "rdzv_core.testing.backend_suite",
    "rdzv_core.testing.failover_suite",
    "rdzv_core.testing.rank_order_suite",
    "rdzv_core.testing.rendezvous_suite",
    "rdzv_core.testing.store_suite",
    "rdzv_core.testing.storetype_suite",
)

from ._support import EventRecorder, requires  # noqa: E402
from .backend_suite import BackendConformance  # noqa: E402
from .failover_suite import FailoverScenarios  # noqa: E402
from .memory import MemoryStore  # noqa: E402
from .rank_order_suite import RankOrderSuite  # noqa: E402
from .rendezvous_suite import RendezvousScenarios  # noqa: E402
from .store_suite import StoreConformance  # noqa: E402
from .storetype_suite import StoreTypeConformance  # noqa: E402

__all__ = [
    "SUITE_VERSION",
    "BackendConformance",
    "EventRecorder",
    "FailoverScenarios",
    "MemoryStore",
    "RankOrderSuite",
    "RendezvousScenarios",
    "StoreConformance",
    "StoreTypeConformance",
    "requires",
]
