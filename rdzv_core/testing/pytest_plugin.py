"""The pytest plugin of the conformance suite (entry point ``pytest11: rdzv``).

It only adds a summary at the end of a run: which capabilities the suite could not test,
and how many tests each left out. Importing it is cheap; it never imports the suite.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

_SKIP = re.compile(r"rdzv suite: needs capability '([a-z-]+)' \(not declared by ([^)]*)\)")
#: Must match ``_support.UNPICKLABLE_PREFIX`` (not imported: this module never imports the suite).
_UNPICKLABLE = "rdzv suite: left untested: the store factory is not picklable "
#: Capabilities no test on one machine can prove; always listed when declared nowhere
#: else tested.
_UNTESTABLE = {"cross-host": "needs two hosts: prove it with your own multi-host test"}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unpicklable: dict[str, str] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else "")
        match = _SKIP.search(reason)
        if match:
            skipped[match.group(1)][match.group(2)] += 1
        elif _UNPICKLABLE in reason:
            unpicklable[report.nodeid] = reason.split(_UNPICKLABLE, 1)[1]
    ran_suite = any(
        "rdzv_core/testing" in str(getattr(r, "location", ("",))[0])
        for reports in terminalreporter.stats.values()
        for r in reports
        if hasattr(r, "nodeid")
    )
    if not skipped and not unpicklable and not ran_suite:
        return
    from . import SUITE_VERSION

    write = terminalreporter.write_line
    terminalreporter.section(f"rdzv conformance suite {SUITE_VERSION}: left untested")
    if not skipped:
        write("every capability-gated test ran")
    if unpicklable:
        write(
            f"cross-process: {len(unpicklable)} tests, because the store factory is not "
            f"picklable {next(iter(unpicklable.values()))}"
        )
    for capability in sorted(skipped):
        owners = ", ".join(f"{owner} ({n})" for owner, n in sorted(skipped[capability].items()))
        write(f"{capability}: not declared by {owners}")
    for capability, why in _UNTESTABLE.items():
        write(f"{capability}: {why}")
