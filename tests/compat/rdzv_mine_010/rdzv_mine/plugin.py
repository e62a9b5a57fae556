from datetime import timedelta

from rdzv_core import Capability, StoreType, hookimpl, parse_read_timeout


def create_store(params):
    from rdzv_mine.store import MyStore  # heavy imports stay in here

    timeout = parse_read_timeout(params, 60)  # "read_timeout" already validated
    return MyStore(params.endpoint, timeout=timedelta(seconds=timeout))


@hookimpl
def rdzv_store_type():
    return StoreType(
        "mine",
        "My store, in one line.",
        create_store,
        default_read_timeout=60,
        capabilities={Capability.CROSS_PROCESS, Capability.DELETE},
    )
