"""Drives a running `haivemind serve` over HTTP with the official MCP Python SDK (mcp 2.3.0).

Usage:
    python mcp_http_client.py --url http://127.0.0.1:PORT --token TOKEN
                              [--readonly-token RTOKEN] [--cafile PATH]
                              [--expect-auto-version 2026-07-28|any]

The server is started by the Rust test, not here. With --cafile the URL is https and the
server's self-signed certificate (or its CA) is in that PEM file.

Checks, one line printed per check:
  * Streamable HTTP at URL/mcp with `Authorization: Bearer TOKEN`, in both `Client` connect
    modes ("auto": server/discover at 2026-07-28 first; "legacy": initialize + session):
    tools/list, store_memory, retrieve_memory by id, search_memories with semantic=false.
  * Legacy HTTP+SSE at URL/sse (endpoint event -> POST /messages?session_id=...):
    store_memory and retrieve_memory.
  * With --readonly-token: search works, store_memory is a tool error mentioning "readonly".
  * A wrong bearer token is refused (raw HTTP 401, and the SDK raises instead of hanging).
Exits non-zero with a message on the first broken expectation or timeout.

How the SDK is driven (verified against the installed mcp 2.3.0 source):
  * `mcp.Client(server=<str>)` builds `streamable_http_client(url)` with no way to pass headers
    or TLS settings (mcp/client/client.py, Client.__post_init__). `Client` also accepts any
    `Transport` (an async context manager yielding (read, write) streams), so we hand it
    `mcp.client.streamable_http.streamable_http_client(url, http_client=...)` with our own
    `httpx2.AsyncClient(headers=..., verify=ssl_context)`. The SDK uses `httpx2` (not httpx);
    a caller-provided client is not closed by the SDK, so we own its lifecycle.
  * SSE: `mcp.client.sse.sse_client(url, headers=..., httpx_client_factory=...)` is also a
    `Transport`, so the high-level `Client(..., mode="legacy")` drives it too. The factory
    (protocol `mcp.shared._httpx_utils.McpHttpClientFactory`: headers, timeout, auth) is where
    TLS trust goes for SSE.
  * TLS trust: `httpx2.AsyncClient(verify=ssl.SSLContext)` (httpx2/_config.py
    create_ssl_context passes an SSLContext through unchanged). SSL_CERT_FILE would also work
    (httpcore2/_ssl.py default_ssl_context honours it when trust_env), but the explicit
    context is used so nothing depends on the environment.
"""

import argparse
import json
import ssl
import sys
import uuid

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

STEP_TIMEOUT = 20.0  # seconds for any single request (Client.read_timeout_seconds)
PHASE_TIMEOUT = 90.0  # seconds for one whole connection/phase
REQUIRED_TOOLS = ("store_memory", "search_memories", "retrieve_memory")

current = {"step": "start"}


def check(message):
    print(f"ok   {message}", flush=True)


def step(name):
    current["step"] = name


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def leaf_exceptions(exc):
    """Flatten ExceptionGroups (anyio task groups in the transports may wrap errors)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_exceptions(inner)
    else:
        yield exc


def describe(exc):
    return "; ".join(f"{type(e).__name__}: {' '.join(str(e).split())}" for e in leaf_exceptions(exc))


def tool_text(result):
    return "\n".join(getattr(item, "text", "") or "" for item in result.content)


async def ok(client, name, arguments):
    step(f"call {name}")
    result = await client.call_tool(name, arguments)
    expect(not result.is_error, f"{name} {arguments} failed: {tool_text(result)} {result.structured_content}")
    expect(result.structured_content is not None, f"{name} returned no structuredContent: {result}")
    return result


class Target:
    def __init__(self, args):
        self.base = args.url.rstrip("/")
        self.ssl_context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
        if self.base.startswith("https://") and self.ssl_context is None:
            print("note: https URL without --cafile; using the system trust store", flush=True)

    @property
    def verify(self):
        return self.ssl_context if self.ssl_context is not None else True

    def http_client(self, token):
        """An httpx2 client for the streamable HTTP transport (mcp.client.streamable_http)."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx2.AsyncClient(
            headers=headers,
            verify=self.verify,
            timeout=httpx2.Timeout(STEP_TIMEOUT, read=STEP_TIMEOUT * 3),
        )

    def sse_factory(self):
        """An `McpHttpClientFactory` for `sse_client`: it passes headers/timeout/auth; we add TLS."""

        def factory(headers=None, timeout=None, auth=None):
            kwargs = {"verify": self.verify}
            if headers is not None:
                kwargs["headers"] = headers
            if timeout is not None:
                kwargs["timeout"] = timeout
            if auth is not None:
                kwargs["auth"] = auth
            return httpx2.AsyncClient(**kwargs)

        return factory

    def streamable(self, http):
        return streamable_http_client(self.base + "/mcp", http_client=http)

    def sse(self, token):
        return sse_client(
            self.base + "/sse",
            headers={"Authorization": f"Bearer {token}"},
            timeout=STEP_TIMEOUT,
            sse_read_timeout=STEP_TIMEOUT * 3,
            httpx_client_factory=self.sse_factory(),
        )


async def store_and_retrieve(client, label, token, search=True):
    content = f"hAIveMind HTTP interop via {label}: redis on cache7 evicted keys, marker {token}"
    stored = (await ok(client, "store_memory", {"content": content, "category": "infrastructure",
                                               "tags": ["interop", label]})).structured_content
    memory_id = stored.get("id")
    expect(memory_id, f"store_memory returned no id: {stored}")
    expect(stored.get("content") == content, f"stored content differs: {stored}")
    # The SDK names itself "mcp" (DEFAULT_CLIENT_INFO) at initialize and, on 2026-07-28, in
    # each request's _meta; either way that name, not a placeholder, is the author.
    expect(stored.get("agent_id") == "mcp", f"the client's name becomes the agent id: {stored}")
    check(f"{label}: store_memory -> {memory_id}")

    result = await ok(client, "retrieve_memory", {"memory_id": memory_id})
    expect(result.structured_content.get("id") == memory_id, f"retrieve returned another memory: {result}")
    expect(result.structured_content == stored, f"retrieve differs from what store returned: {result}")
    text = tool_text(result)
    try:
        parsed = json.loads(text)
    except ValueError:
        raise AssertionError(f"retrieve_memory text content is not JSON: {text[:200]!r}")
    expect(parsed == result.structured_content, "retrieve_memory text and structuredContent differ")
    check(f"{label}: retrieve_memory by id (structuredContent == text JSON)")

    if search:
        found = (await ok(client, "search_memories", {"query": token, "semantic": False})).structured_content
        ids = [m.get("id") for m in found.get("memories", [])]
        expect(memory_id in ids, f"search_memories (semantic=false) missed {memory_id}: {found}")
        check(f"{label}: search_memories semantic=false finds it")
    return memory_id


async def list_tools(client, label):
    step("tools/list")
    names = {tool.name for tool in (await client.list_tools()).tools}
    missing = [name for name in REQUIRED_TOOLS if name not in names]
    expect(not missing, f"tools/list lacks {missing}; has {sorted(names)}")
    check(f"{label}: tools/list has {', '.join(REQUIRED_TOOLS)} ({len(names)} tools)")


async def streamable_phase(target, mode, token, expect_auto_version):
    label = f"streamable-http/{mode}"
    step(f"{label} connect")
    async with target.http_client(token) as http:
        async with Client(target.streamable(http), mode=mode, read_timeout_seconds=STEP_TIMEOUT) as client:
            version = client.protocol_version
            if mode == "auto" and expect_auto_version != "any":
                expect(version == expect_auto_version,
                       f"auto mode negotiated {version}, expected {expect_auto_version}")
            if mode == "legacy":
                expect(version in HANDSHAKE_PROTOCOL_VERSIONS, f"legacy negotiated {version}")
            check(f"{label}: connected, protocol {version}")
            await list_tools(client, label)
            await store_and_retrieve(client, label, "httpmark" + uuid.uuid4().hex)


async def sse_phase(target, token):
    label = "sse/legacy"
    step(f"{label} connect")
    async with Client(target.sse(token), mode="legacy", read_timeout_seconds=STEP_TIMEOUT) as client:
        version = client.protocol_version
        check(f"{label}: connected to /sse, protocol {version}")
        await list_tools(client, label)
        await store_and_retrieve(client, label, "ssemark" + uuid.uuid4().hex, search=False)


async def readonly_phase(target, mode, token):
    label = f"readonly/{mode}"
    step(f"{label} connect")
    async with target.http_client(token) as http:
        async with Client(target.streamable(http), mode=mode, read_timeout_seconds=STEP_TIMEOUT) as client:
            check(f"{label}: connected, protocol {client.protocol_version}")
            await list_tools(client, label)
            found = (await ok(client, "search_memories",
                              {"query": "httpmark cache7", "semantic": False})).structured_content
            expect("memories" in found, f"search result has no memories: {found}")
            check(f"{label}: search_memories works ({len(found['memories'])} hits)")

            step(f"{label} store_memory refused")
            try:
                result = await client.call_tool("store_memory", {"content": "must not be stored (readonly)"})
            except MCPError as e:
                raise AssertionError(f"readonly store_memory should be a tool error (isError), got JSON-RPC error {e}")
            expect(result.is_error, f"readonly token could store_memory: {result.structured_content}")
            said = (tool_text(result) + " " + json.dumps(result.structured_content)).lower()
            normalized = said.replace("-", "").replace("_", "").replace(" ", "")
            expect("readonly" in normalized, f"readonly refusal does not mention readonly: {said[:300]}")
            check(f"{label}: store_memory is a tool error mentioning readonly")


async def raw_refusals(target, token):
    """Plain HTTP: wrong and missing tokens get 401 on /mcp and /sse (no SDK involved)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "interop-raw", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    for name, header in (("wrong token", {"Authorization": "Bearer wrong"}), ("no token", {})):
        async with target.http_client(None) as http:
            step(f"raw POST /mcp with {name}")
            response = await http.post(target.base + "/mcp", json=body, headers={**accept, **header})
            expect(response.status_code == 401, f"POST /mcp with {name}: HTTP {response.status_code}, expected 401")
            step(f"raw GET /sse with {name}")
            async with http.stream("GET", target.base + "/sse",
                                   headers={"Accept": "text/event-stream", **header}) as response:
                expect(response.status_code == 401,
                       f"GET /sse with {name}: HTTP {response.status_code}, expected 401")
        check(f"raw HTTP: {name} -> 401 on /mcp and /sse")
    # The right token is accepted by the same raw request (guards against a server that 401s everything).
    async with target.http_client(token) as http:
        step("raw POST /mcp with the right token")
        response = await http.post(target.base + "/mcp", json=body, headers=accept)
        expect(response.status_code == 200, f"POST /mcp with the token: HTTP {response.status_code}")
        session_id = response.headers.get("mcp-session-id")
        if session_id:  # don't leave the raw session behind
            await http.delete(target.base + "/mcp", headers={"mcp-session-id": session_id})
    check("raw HTTP: right token -> 200 on /mcp")


async def expect_sdk_refusal(label, connect):
    step(f"{label} with wrong token")
    try:
        with anyio.fail_after(STEP_TIMEOUT):
            await connect()
    except TimeoutError:
        raise AssertionError(f"{label}: connecting with a wrong token hung for {STEP_TIMEOUT}s instead of failing")
    except Exception as e:  # noqa: BLE001 - any refusal is fine, but not a request timeout
        leaves = list(leaf_exceptions(e))
        timed_out = any(isinstance(x, MCPError) and x.code == REQUEST_TIMEOUT for x in leaves)
        expect(not timed_out, f"{label}: wrong token timed out instead of being refused: {describe(e)}")
        check(f"{label}: wrong token refused ({describe(e)[:120]})")
        return
    raise AssertionError(f"{label}: connecting with `Bearer wrong` succeeded")


async def wrong_token_phase(target):
    for mode in ("auto", "legacy"):
        async def connect(mode=mode):
            async with target.http_client("wrong") as http:
                async with Client(target.streamable(http), mode=mode, read_timeout_seconds=STEP_TIMEOUT) as client:
                    await client.list_tools()

        await expect_sdk_refusal(f"streamable-http/{mode}", connect)

    async def connect_sse():
        async with Client(target.sse("wrong"), mode="legacy", read_timeout_seconds=STEP_TIMEOUT) as client:
            await client.list_tools()

    await expect_sdk_refusal("sse/legacy", connect_sse)


async def main(args):
    target = Target(args)
    phases = [("raw refusals", lambda: raw_refusals(target, args.token))]
    for mode in ("auto", "legacy"):
        phases.append((f"streamable {mode}", lambda mode=mode: streamable_phase(
            target, mode, args.token, args.expect_auto_version)))
    phases.append(("sse", lambda: sse_phase(target, args.token)))
    if args.readonly_token:
        for mode in ("auto", "legacy"):
            phases.append((f"readonly {mode}", lambda mode=mode: readonly_phase(target, mode, args.readonly_token)))
    phases.append(("wrong token", lambda: wrong_token_phase(target)))

    for name, run in phases:
        try:
            with anyio.fail_after(PHASE_TIMEOUT):
                await run()
        except TimeoutError:
            raise AssertionError(f"phase {name!r} timed out after {PHASE_TIMEOUT}s at step {current['step']!r}")
    print(f"ok all HTTP interop checks against {target.base}", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="MCP Python SDK interop checks against `haivemind serve` over HTTP")
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8900 (no /mcp)")
    parser.add_argument("--token", required=True, help="read-write bearer token")
    parser.add_argument("--readonly-token", help="read-only bearer token; enables the readonly checks")
    parser.add_argument("--cafile", help="PEM file to trust for an https URL (self-signed cert or its CA)")
    parser.add_argument("--expect-auto-version", default="2026-07-28",
                        help="protocol version mode='auto' must negotiate over /mcp, or 'any' (default 2026-07-28)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    try:
        anyio.run(main, arguments)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - report anything clearly, exit 1
        # The SDK's transports run anyio task groups, so a failed expectation raised inside
        # `async with Client(...)` may arrive wrapped in an ExceptionGroup: unwrap it.
        leaves = list(leaf_exceptions(error))
        if leaves and all(isinstance(e, AssertionError) for e in leaves):
            detail = "; ".join(str(e) for e in leaves)
        else:
            detail = f"unexpected {describe(error)}"
        print(f"FAIL [{current['step']}] {detail}", file=sys.stderr, flush=True)
        sys.exit(1)
