"""The ``mcp`` package's ``MCPServer`` internals used by :mod:`forge_ray.mcp_server`."""

from __future__ import annotations

CHECKED = {"mcp": "2.3"}


def set_parameter_schema(server, tool: str, parameter: str, schema: dict) -> None:
    """Replace the JSON Schema the server derived for one parameter of a registered tool: a spec
    argument is typed ``dict`` in Python, and an agent needs the whole spec schema to write one.
    ``add_tool`` takes no input schema in mcp 2.3, so the registered tool is reached through
    the server's tool manager."""
    server._tool_manager.get_tool(tool).parameters["properties"][parameter] = schema
