"""The Ray Jobs API client every submitter shares (``forge submit``, the UI, MCP, an RL stage
that hands its loop to OpenRLHF): one place that finds the address and Ray's auth token."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from forge_ray.spec.typed import Problem, SpecError


@dataclass(frozen=True)
class RayJobs:
    """A connected ``JobSubmissionClient`` and the dashboard address it talks to."""

    client: Any  # ray.job_submission.JobSubmissionClient
    address: str


def auth_headers() -> dict[str, str]:
    """Bearer token for Ray's token authentication (the one the runner turns token mode on for)."""
    from forge_ray.runner import ray_auth_token

    token = ray_auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def connect(address: str | None) -> RayJobs:
    """The cluster at ``address`` (or ``$RAY_ADDRESS``); a missing address is a spec error that
    says how to give one."""
    from ray.job_submission import JobSubmissionClient

    from forge_ray.compat.ray_jobs import resolved_address

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SpecError([Problem("--address", "no Ray cluster address",
                                 "pass --address http://HEAD:8265 or set RAY_ADDRESS")])
    client = JobSubmissionClient(address, headers=auth_headers())
    return RayJobs(client=client, address=resolved_address(client))
