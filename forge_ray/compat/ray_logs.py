"""Where the output of Ray's worker processes goes on the driver (:mod:`forge_ray.console`)."""

from __future__ import annotations

from collections.abc import Callable

CHECKED = {"ray": "2.60"}


def route_worker_output(handler: Callable[[dict], None]) -> None:
    """Hand every batch of worker output (``{"lines", "pid", "actor_name", "task_name",
    "is_err", …}``) to ``handler`` instead of printing it on this process's terminal. Ray
    prints it through a handler it registers at ``ray.init(log_to_driver=True)``; there is no
    public switch between "print" and "drop", and ``log_to_driver=False`` loses the lines."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("forge_worker_output")
    dispatcher.add_handler("forge_worker_output", handler)
