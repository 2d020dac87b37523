"""The tool's user-facing data error, shared by reading, indexing and preprocessing."""

from __future__ import annotations


class DataError(ValueError):
    """A sample or dataset that cannot be used; the message reads "<file>: <problem>"."""
