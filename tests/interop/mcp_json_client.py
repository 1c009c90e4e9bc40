"""Starts the server a generated `.mcp.json` registers, the way an agent tool would, and
drives it with the official MCP Python SDK.

Usage: python mcp_json_client.py PROJECT_DIR
The environment (HAIVEMIND_DATA_DIR, HAIVEMIND_CONFIG, ...) is passed to the server.
Exits non-zero with a message on the first broken expectation.
"""

import json
import os
import sys

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


async def main(project):
    with open(os.path.join(project, ".mcp.json")) as f:
        entry = json.load(f)["mcpServers"]["haivemind"]
    params = StdioServerParameters(
        command=entry["command"],
        args=entry.get("args", []),
        env={**os.environ, **entry.get("env", {})},
        cwd=project,
    )
    async with Client(params, mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        for name in ("store_memory", "install_agent_commands", "check_agent_sync_status",
                     "register_agent"):
            expect(name in tools, f"tools/list lacks {name}")
        stored = await client.call_tool("store_memory", {"content": "installed through .mcp.json"})
        expect(not stored.is_error, f"store_memory failed: {stored}")
        status = await client.call_tool("check_agent_sync_status", {"target_location": "project"})
        expect(not status.is_error, f"check_agent_sync_status failed: {status}")
        summary = status.structured_content["summary"]
        expect(summary["up_to_date"] == 10 and summary["missing"] == 0,
               f"the installed files are not all up to date: {summary}")
    print("ok .mcp.json server")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
