"""Drives `haivemind mcp` with the official MCP Python SDK, as an agent would.

Usage: python mcp_client.py HAIVEMIND_BINARY MODE DATA_DIR
MODE is "legacy" (initialize handshake) or "auto" (server/discover first).
Exits non-zero with a message on the first broken expectation.
"""

import os
import sys

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


async def tool_error(client, name, arguments):
    result = await client.call_tool(name, arguments)
    expect(result.is_error, f"{name} {arguments} should fail, got {result}")
    return result.structured_content["error"]


async def ok(client, name, arguments):
    result = await client.call_tool(name, arguments)
    expect(not result.is_error, f"{name} {arguments} failed: {result}")
    return result.structured_content


async def main(binary, mode, data_dir):
    params = StdioServerParameters(
        command=binary,
        args=["mcp"],
        env={"HAIVEMIND_DATA_DIR": data_dir, "HAIVEMIND_MACHINE_ID": "python-" + mode,
             "HAIVEMIND_CONFIG": data_dir + "/config.json",
             "HAIVEMIND_MODEL_DIR": os.environ["HAIVEMIND_MODEL_DIR"]},
    )
    async with Client(params, mode=mode) as client:
        version = client.protocol_version
        if mode == "auto":
            expect(version == "2026-07-28", f"auto mode negotiated {version}, expected 2026-07-28")
        else:
            expect(version in ("2025-03-26", "2025-06-18", "2025-11-25"), f"legacy negotiated {version}")

        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        for name in ("store_memory", "retrieve_memory", "search_memories", "update_memory",
                     "delete_memory", "recover_deleted_memory", "get_recent_memories"):
            expect(name in tools, f"tools/list lacks {name}")
        expect(tools["search_memories"].annotations.read_only_hint is True, "search is read-only")
        expect(tools["delete_memory"].annotations.destructive_hint is True, "delete is destructive")

        metadata = {"nested": {"list": [1, 2.5, True, None, "x"]}, "ticket": "OPS-42"}
        stored = await ok(client, "store_memory", {
            "content": f"Elasticsearch on elastic3 ran out of JVM heap ({mode})",
            "category": "incidents", "tags": ["elasticsearch", "elastic3"], "metadata": metadata,
        })
        memory_id = stored["id"]
        expect(stored["metadata"] == metadata, f"metadata changed: {stored['metadata']}")
        # The SDK's own name ("mcp"), sent at initialize or in each 2026-07-28 request's
        # _meta, is the author, never a placeholder of the server library; the roster too.
        expect(stored["agent_id"] == "mcp", f"the client's name becomes the agent id: {stored['agent_id']}")
        registered = await ok(client, "register_agent", {"role": "worker_drone", "capabilities": ["interop"]})
        expect(registered["agent_id"].startswith("mcp@"), f"the roster names the client: {registered}")

        result = await client.call_tool("retrieve_memory", {"memory_id": memory_id})
        expect(result.structured_content == stored, "retrieve returns what store returned")
        expect(result.content[0].text and "elastic3" in result.content[0].text, "text content carries the JSON")

        found = await ok(client, "search_memories", {"query": "elastic3 heap", "category": "incidents"})
        expect(found["total"] >= 1 and found["memories"][0]["id"] == memory_id, f"search missed: {found}")
        expect(found["search_mode"] == "hybrid", f"search is hybrid with the model: {found}")

        # By meaning: not one word of the query is in the memory.
        await ok(client, "store_memory", {"content": "postgres replication lag on db3 during the nightly vacuum"})
        by_meaning = await ok(client, "search_memories", {"query": "java memory exhausted on the search node"})
        expect(by_meaning["memories"][0]["id"] == memory_id, f"hybrid search missed the paraphrase: {by_meaning}")

        updated = await ok(client, "update_memory", {"memory_id": memory_id, "content": "ES heap raised to 16g"})
        expect(updated["version"] == 2, "update bumps the version")

        deleted = await ok(client, "delete_memory", {"memory_id": memory_id, "reason": "interop"})
        expect(deleted["recoverable"] is True, "soft delete is recoverable")
        gone = await ok(client, "search_memories", {"query": "heap 16g"})
        expect(all(m["id"] != memory_id for m in gone["memories"]), "deleted memories are not found")
        recovered = await ok(client, "recover_deleted_memory", {"memory_id": memory_id})
        expect(recovered["deleted"] is False, "recover restores")

        error = await tool_error(client, "store_memory", {"content": ""})
        expect(error["field"] == "content" and "must not be empty" in error["message"], error)
        error = await tool_error(client, "store_memory", {"content": "x", "category": "nope"})
        expect(error["field"] == "category" and "expected one of" in error["message"], error)
        error = await tool_error(client, "store_memory", {"content": "x", "scope": "public"})
        expect(error["field"] == "scope", error)
        error = await tool_error(client, "retrieve_memory", {"memory_id": "not-a-uuid"})
        expect(error["field"] == "memory_id" and "UUID" in error["message"], error)
        error = await tool_error(client, "store_memory", {"content": "x" * 70000})
        expect(error["field"] == "content" and "65536" in error["message"], error)
        error = await tool_error(client, "search_memories", {"query": "x", "limit": "ten"})
        expect(error["field"] == "limit", error)

        try:
            await client.call_tool("no_such_tool", {})
            raise AssertionError("an unknown tool must be an error")
        except MCPError as e:
            expect("no_such_tool" in str(e), f"unknown tool error should name it: {e}")

        resources = await client.list_resources()
        uris = {str(r.uri) for r in resources.resources}
        expect("haivemind://instructions" in uris and "haivemind://machine-context" in uris, uris)
        text = (await client.read_resource("haivemind://instructions")).contents[0].text
        expect("search_memories" in text, "instructions mention the tools")

        # Still serving after every refusal.
        await ok(client, "get_memory_stats", {})
    print(f"ok {mode} {version}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
