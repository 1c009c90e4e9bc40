"""Broadcasts reach the official MCP Python SDK (mcp 2.3.0) by each protocol's own mechanism.

Usage:
    python mcp_broadcast_client.py --url http://127.0.0.1:PORT --token TOKEN

Against a running `haivemind serve` (started by crates/haivemind/tests/http_serve.rs):
  * a 2026-07-28 client (mode "auto") opens `subscriptions/listen` for
    haivemind://broadcasts (and a resource that cannot be subscribed to, which the server
    leaves out of the acknowledged filter);
  * a 2025-11-25 client (mode "legacy") sends `resources/subscribe` for the same URI (an
    unknown URI is refused);
  * a third client calls broadcast_discovery;
  * the listen stream yields ResourceUpdated(haivemind://broadcasts), reading the resource
    shows the message, and the legacy session gets `notifications/resources/updated`.
One line per check; exits non-zero on the first broken expectation or after a timeout.
"""

import argparse
import sys
import uuid

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

URI = "haivemind://broadcasts"
TIMEOUT = 20.0


def check(message):
    print(f"ok   {message}", flush=True)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def connect(base, http, mode, **kwargs):
    return Client(streamable_http_client(base + "/mcp", http_client=http), mode=mode,
                  read_timeout_seconds=TIMEOUT, **kwargs)


async def main(args):
    base = args.url.rstrip("/")
    marker = "broadcast-" + uuid.uuid4().hex
    legacy_updates = []

    async def on_message(message):
        method = getattr(message, "method", None)
        if method == "notifications/resources/updated":
            legacy_updates.append(message.params.uri)
        elif method == "notifications/message":
            legacy_updates.append(("log", message.params.logger))

    headers = {"Authorization": f"Bearer {args.token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(TIMEOUT, read=None)) as http:
        async with connect(base, http, "auto") as modern, \
                connect(base, http, "legacy", message_handler=on_message) as legacy, \
                connect(base, http, "legacy") as sender:
            expect(modern.protocol_version == "2026-07-28", f"auto negotiated {modern.protocol_version}")
            resources = {r.uri for r in (await modern.list_resources()).resources}
            expect(URI in resources, f"{URI} is listed: {resources}")

            await legacy.subscribe_resource(URI)
            try:
                await legacy.subscribe_resource("haivemind://instructions")
                raise AssertionError("subscribing to a resource that never changes is refused")
            except MCPError:
                pass
            check(f"legacy ({legacy.protocol_version}): resources/subscribe {URI}; other URIs refused")

            async with modern.listen(resource_subscriptions=[URI, "haivemind://instructions"]) as sub:
                honored = list(sub.honored.resource_subscriptions or [])
                expect(honored == [URI], f"the acknowledged filter holds only {URI}: {honored}")
                check("2026-07-28: subscriptions/listen acknowledged for haivemind://broadcasts only")

                sent = await sender.call_tool("broadcast_discovery", {
                    "message": f"cache7 is being replaced tonight ({marker})", "severity": "warning"})
                expect(not sent.is_error, f"broadcast_discovery: {sent}")

                with anyio.fail_after(TIMEOUT):
                    async for event in sub:
                        if getattr(event, "uri", None) == URI:
                            break
                check("the listen stream announced the broadcast (notifications/resources/updated)")

            read = await modern.read_resource(URI)
            text = "".join(getattr(c, "text", "") for c in read.contents)
            expect(marker in text, f"the resource shows the new broadcast: {text[:300]}")
            check("reading haivemind://broadcasts shows it")

            with anyio.fail_after(TIMEOUT):
                while URI not in legacy_updates:
                    await anyio.sleep(0.1)
            expect(("log", "haivemind.broadcast") in legacy_updates, f"and logged it: {legacy_updates}")
            check("the subscribed legacy session was told too (resources/updated and the log message)")
    print("ok all broadcast checks", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    arguments = parser.parse_args()
    try:
        anyio.run(main, arguments)
    except BaseException as error:  # noqa: BLE001 - the test prints what broke
        print(f"FAILED: {type(error).__name__}: {error!r}", flush=True)
        sys.exit(1)
