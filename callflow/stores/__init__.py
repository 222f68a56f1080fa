"""Where durable calls are kept: one small interface, one module per database.

``open_store(url)`` gives the store for a URL: ``memory`` (none: calls live in
the process), ``sqlite:///PATH`` or ``postgresql://…``.
"""

from ._base import (
    SCHEMA_VERSION,
    Begin,
    CallState,
    CallSummary,
    Entry,
    Fenced,
    SchemaTooNew,
    Store,
    StoreError,
    StoreUnavailable,
    open_store,
)

__all__ = (
    "SCHEMA_VERSION",
    "Begin",
    "CallState",
    "CallSummary",
    "Entry",
    "Fenced",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
)
