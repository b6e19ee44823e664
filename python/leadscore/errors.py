"""The exceptions of the leadscore package.

Each carries the message the server or the command line gives for the same fault, naming the
field, file, row or column at fault; ``field`` names the request field when there is one.
"""

from __future__ import annotations


class LeadscoreError(Exception):
    """Base class of every error the package raises (and, itself, a failure that is not the
    caller's: ONNX Runtime failing while it runs a model)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RequestError(LeadscoreError, ValueError):
    """An entity the server would refuse with a 400: the server's message, and ``field``
    naming the input at fault (``profile.country``, ``events[3].ts``) when known."""


class BundleError(LeadscoreError):
    """A bundle that cannot be loaded or answer (missing or damaged files, no ONNX Runtime, a
    thresholds file that does not fit it, no held-out predictions for a capacity question)."""


class DataError(LeadscoreError):
    """A dataset spec or data the command line refuses (``leadscore-train features``)."""
