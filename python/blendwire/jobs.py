"""What code running in a blendwire job can call: progress reports for the job's client.

A client that sends a request with `"progress": true` receives `{"status": "progress", ...}`
messages before the answer: what `progress()` reported, and what the job printed, coalesced by
the core (at most ~20 messages a second) and sent from its I/O thread, so reporting costs the job
next to nothing. Without a listening client `progress()` does nothing.
"""

from . import _core

__all__ = ["progress"]


def progress(fraction: float | None = None, message: str | None = None) -> bool:
    """Report how far the running job is: `fraction` from 0 to 1 (None: unknown) and/or a short
    `message`. Returns True if the job's client receives it, False if nobody listens (no job runs,
    or its client did not ask for progress). Raises ValueError for a fraction
    outside 0..1.

        for i, obj in enumerate(objs):
            blendwire.progress(i / len(objs), f"baking {obj.name}")
    """
    if fraction is not None:
        fraction = float(fraction)
    if message is not None:
        message = str(message)
    return _core.report_progress(fraction, message)
