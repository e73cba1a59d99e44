"""Ray Jobs: the dashboard address a submission client resolved."""

from __future__ import annotations

CHECKED = {"ray": "2.60"}


def resolved_address(client) -> str:
    """The HTTP address ``JobSubmissionClient`` talks to after resolving ``auto``, a GCS
    address or ``ray://`` (``JobSubmissionClient`` keeps it only as ``_address``)."""
    return client._address
