"""Signs the official MCP Python SDK (mcp 2.3.0) in to a running `haivemind serve` by OAuth.

Usage:
    python mcp_oauth_client.py --url http://127.0.0.1:PORT --agent-token T
                               --readonly-token R --admin-token A --approver-name NAME

The server is started by the Rust test (crates/haivemind/tests/oauth.rs). The "person" at
the consent page is played here: the SDK's redirect handler fetches the page, reads its
form (hidden inputs and the field `token`), types the agent token in and posts it back; the
redirect's `code` and `state` go to the SDK's callback handler. Everything else is the SDK's
own OAuth client provider (`mcp.client.auth.OAuthClientProvider`): discovery from the 401's
`resource_metadata`, RFC 8414 metadata, dynamic registration, PKCE S256, the token exchange,
and (forced here) a refresh.

Then, by hand with raw HTTP, what the SDK never does: a wrong verifier, a code used twice, a
refresh token used twice (which revokes the grant), a foreign resource, the token presented
under another Host, a readonly approver, deny, a redirect URI not registered, and revoking
the approving token. One line per check; exits non-zero on the first broken expectation.
"""

import argparse
import base64
import hashlib
import secrets
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlparse

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

TIMEOUT = 20.0
REDIRECT = "http://127.0.0.1:47123/callback"
current = {"step": "start"}


def check(message):
    print(f"ok   {message}", flush=True)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


class FormReader(HTMLParser):
    """The consent page's form: its action, hidden inputs, and the names of other inputs."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.hidden = {}
        self.fields = []
        self.labels = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.action = attrs.get("action")
        elif tag == "input":
            if attrs.get("type") == "hidden":
                self.hidden[attrs["name"]] = attrs.get("value", "")
            else:
                self.fields.append(attrs.get("name"))
        elif tag == "label":
            self.labels.append(attrs.get("for"))
        elif tag == "script":
            self.scripts += 1


class Person:
    """Plays the person at the consent page for the SDK's redirect and callback handlers."""

    def __init__(self, base, token):
        self.base = base
        self.token = token
        self.result = None
        self.pages = 0

    async def redirect_handler(self, authorization_url):
        async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
            page = await http.get(authorization_url)
            expect(page.status_code == 200, f"consent page: {page.status_code} {page.text[:300]}")
            form = FormReader()
            form.feed(page.text)
            expect(form.action == "/authorize", f"the form posts back to /authorize: {form.action}")
            expect("token" in form.fields and "token" in form.labels, "a labelled field named token")
            expect(form.scripts == 0, "the consent page runs no script")
            for name in ("client_id", "redirect_uri", "code_challenge", "state"):
                expect(name in form.hidden, f"the request's {name} travels as a hidden input")
            csp = page.headers.get("content-security-policy", "")
            expect("form-action 'self' http://127.0.0.1:47123" in csp, f"CSP allows the redirect: {csp}")
            expect("frame-ancestors 'none'" in csp, f"the consent page cannot be framed: {csp}")
            self.pages += 1
            answer = await http.post(
                self.base + form.action,
                data={**form.hidden, "token": self.token, "decision": "approve"},
                headers={"Origin": self.base},
            )
            expect(answer.status_code == 303, f"approval redirects: {answer.status_code} {answer.text[:300]}")
            location = answer.headers["location"]
            expect(location.startswith(REDIRECT + "?"), f"to the registered redirect URI: {location}")
            query = parse_qs(urlparse(location).query)
            self.result = AuthorizationCodeResult(code=query["code"][0], state=query["state"][0])

    async def callback_handler(self):
        return self.result


class Memory:
    """The SDK's TokenStorage, in memory."""

    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull):
        self.client = client_info


def provider(base, token, storage, name="hAIveMind OAuth interop <b>test</b>"):
    person = Person(base, token)
    return person, OAuthClientProvider(
        server_url=base + "/mcp",
        client_metadata=OAuthClientMetadata(
            client_name=name,
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=person.redirect_handler,
        callback_handler=person.callback_handler,
    )


async def sdk_session(base, auth, mode, marker):
    async with httpx2.AsyncClient(auth=auth, timeout=TIMEOUT) as http:
        async with Client(streamable_http_client(base + "/mcp", http_client=http), mode=mode,
                          read_timeout_seconds=TIMEOUT) as client:
            stored = await client.call_tool("store_memory", {"content": f"oauth interop {marker}",
                                                             "category": "global"})
            expect(not stored.is_error, f"store_memory over OAuth ({mode}): {stored}")
            return client.protocol_version, stored.structured_content


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


async def manual_code(http, base, token, client_id, challenge, extra=None, decision="approve"):
    """Approves by hand; returns the redirect's query."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "st8",
              "resource": base + "/mcp", **(extra or {})}
    page = await http.get(base + "/authorize?" + urlencode(params))
    form = FormReader()
    form.feed(page.text)
    answer = await http.post(base + "/authorize",
                             data={**form.hidden, "token": token, "decision": decision})
    expect(answer.status_code == 303, f"manual approval: {answer.status_code} {answer.text[:300]}")
    return parse_qs(urlparse(answer.headers["location"]).query)


async def exchange(http, base, client_id, code, verifier, resource=None):
    data = {"grant_type": "authorization_code", "code": code, "client_id": client_id,
            "redirect_uri": REDIRECT, "code_verifier": verifier}
    if resource:
        data["resource"] = resource
    return await http.post(base + "/token", data=data)


async def mcp_status(http, base, token, host=None):
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    response = await http.post(base + "/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}})
    return response


async def until_refused(http, base, token):
    """Servers re-read tokens at most once a second: a revocation shows within that."""
    for _ in range(30):
        response = await mcp_status(http, base, token)
        if response.status_code == 401:
            break
        await anyio.sleep(0.2)
    return response


async def main(args):
    base = args.url.rstrip("/")
    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        # Discovery, as any client meets it.
        refused = await http.post(base + "/mcp", json={})
        challenge = refused.headers.get("www-authenticate", "")
        expect(refused.status_code == 401, f"no token: {refused.status_code}")
        expect(f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"' in challenge,
               f"the 401 names the resource metadata: {challenge}")
        prm = (await http.get(base + "/.well-known/oauth-protected-resource/mcp")).json()
        expect(prm["resource"] == base + "/mcp" and prm["authorization_servers"] == [base], f"{prm}")
        asm = (await http.get(base + "/.well-known/oauth-authorization-server")).json()
        expect("S256" in asm["code_challenge_methods_supported"], f"{asm}")
        expect(asm["issuer"] == base and asm["registration_endpoint"] == base + "/register", f"{asm}")
        check("401 -> resource metadata (RFC 9728) -> authorization server metadata (RFC 8414, S256)")

    # The SDK's own provider, end to end, in both connect modes.
    storage = Memory()
    person, auth = provider(base, args.agent_token, storage)
    version, stored = await sdk_session(base, auth, "auto", "auto")
    expect(person.pages == 1, "the person saw the consent page once")
    expect(storage.tokens and storage.tokens.refresh_token, "the SDK holds a refresh token")
    expect(storage.tokens.scope == "agent", f"granted the approver's role: {storage.tokens.scope}")
    check(f"SDK OAuthClientProvider: register, consent, PKCE, token; store_memory over {version}")
    version, _ = await sdk_session(base, auth, "legacy", "legacy")
    check(f"the same grant works in legacy mode ({version}) without asking again: pages={person.pages}")

    # Force a refresh: the SDK refreshes an expired token by itself, and rotation gives it a
    # new refresh token.
    old_refresh = storage.tokens.refresh_token
    auth.context.token_expiry_time = 1
    await sdk_session(base, auth, "auto", "refreshed")
    expect(storage.tokens.refresh_token != old_refresh, "the refresh token rotated")
    expect(person.pages == 1, "a refresh asks no person")
    check("the SDK refreshed an expired access token; the refresh token rotated")

    async with httpx2.AsyncClient(timeout=TIMEOUT) as http:
        client_id = storage.client.client_id
        # Presenting the used refresh token again: it leaked, so the whole grant goes.
        reuse = await http.post(base + "/token", data={"grant_type": "refresh_token",
                                                       "refresh_token": old_refresh, "client_id": client_id})
        expect(reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", f"reuse: {reuse.text}")
        after = await until_refused(http, base, storage.tokens.access_token)
        expect(after.status_code == 401, f"after reuse the grant's access token is dead: {after.status_code}")
        check("a refresh token used twice is refused and revokes its grant")

        # A fresh grant by hand for the negative cases.
        verifier, challenge = pkce()
        query = await manual_code(http, base, args.agent_token, client_id, challenge)
        expect(query["state"] == ["st8"], f"state comes back: {query}")
        code = query["code"][0]
        wrong = await exchange(http, base, client_id, code, pkce()[0])
        expect(wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant", f"wrong verifier: {wrong.text}")
        again = await exchange(http, base, client_id, code, verifier)
        expect(again.status_code == 400, f"a code is single-use, even after a failed try: {again.text}")
        check("a wrong PKCE verifier is refused and the code is spent")

        verifier, challenge = pkce()
        code = (await manual_code(http, base, args.agent_token, client_id, challenge,
                                  extra={"scope": "admin"}))["code"][0]
        granted = await exchange(http, base, client_id, code, verifier, resource=base + "/mcp")
        expect(granted.status_code == 200, f"exchange: {granted.text}")
        body = granted.json()
        expect(body["scope"] == "agent", f"asking admin with an agent token gets agent: {body}")
        expect(granted.headers.get("cache-control") == "no-store", "token answers are not cached")
        access = body["access_token"]
        replay = await exchange(http, base, client_id, code, verifier)
        expect(replay.status_code == 400, f"a used code is refused: {replay.text}")
        check("scope is capped at the approver's role; a used code is refused")

        ok_here = await mcp_status(http, base, access)
        expect(ok_here.status_code == 200, f"the access token works: {ok_here.status_code} {ok_here.text[:200]}")
        port = urlparse(base).port
        elsewhere = await mcp_status(http, base, access, host=f"localhost:{port}")
        expect(elsewhere.status_code == 401 and "wrong_audience" in elsewhere.text,
               f"a token bound to {base}/mcp is refused under another Host: {elsewhere.status_code} {elsewhere.text}")
        check("the access token is bound to its resource (RFC 8707 audience)")

        foreign = await http.get(base + "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
            "resource": "http://evil.example/mcp"}))
        expect(foreign.status_code == 303 and "error=invalid_target" in foreign.headers["location"],
               f"a foreign resource: {foreign.status_code} {foreign.headers.get('location')}")
        plain = await http.get(base + "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
            "code_challenge": "x" * 43, "code_challenge_method": "plain"}))
        expect(plain.status_code == 303 and "error=invalid_request" in plain.headers["location"],
               "PKCE plain is refused")
        stranger = await http.get(base + "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": "http://evil.example/cb",
            "code_challenge": challenge, "code_challenge_method": "S256"}))
        expect(stranger.status_code == 400 and "location" not in stranger.headers,
               f"an unregistered redirect URI is shown an error, never redirected to: {stranger.status_code}")
        loopback_port = await http.get(base + "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id,
            "redirect_uri": "http://127.0.0.1:50999/callback",
            "code_challenge": challenge, "code_challenge_method": "S256"}))
        expect(loopback_port.status_code == 200, "a loopback redirect URI may use another port (RFC 8252)")
        denied = await manual_code(http, base, args.agent_token, client_id, challenge, decision="deny")
        expect(denied.get("error") == ["access_denied"] and denied.get("state") == ["st8"], f"deny: {denied}")
        bad_token = await http.post(base + "/authorize", data={
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
            "code_challenge": challenge, "code_challenge_method": "S256", "token": "hv_nope",
            "decision": "approve"})
        expect(bad_token.status_code == 401 and "not valid" in bad_token.text, "a wrong token re-shows the page")
        expect(access not in bad_token.text, "the page never shows secrets")
        registration = await http.post(base + "/register", json={"redirect_uris": ["http://evil.example/cb"]})
        expect(registration.status_code == 400 and registration.json()["error"] == "invalid_redirect_uri",
               f"plain http off loopback is refused: {registration.text}")
        check("foreign resource, PKCE plain, unregistered or foreign redirect URIs, deny and a wrong token are refused")

        # A readonly approver grants readonly, whatever the client asks.
        verifier, challenge = pkce()
        code = (await manual_code(http, base, args.readonly_token, client_id, challenge,
                                  extra={"scope": "agent admin"}))["code"][0]
        readonly = (await exchange(http, base, client_id, code, verifier)).json()
        expect(readonly["scope"] == "readonly", f"{readonly}")
        call = await http.post(base + "/api/v1/memories", headers={"Authorization": f"Bearer {readonly['access_token']}",
                                                                  "Host": urlparse(base).netloc},
                               json={"content": "should not be stored"})
        expect(call.status_code == 403, f"a readonly grant cannot write: {call.status_code} {call.text}")
        check("a readonly approver's grant is readonly")

        # Revoking the approving token revokes what it approved.
        tokens = (await http.get(base + "/api/v1/tokens",
                                 headers={"Authorization": f"Bearer {args.admin_token}"})).json()
        listed = tokens.get("tokens", tokens)
        approver = next(t for t in listed if t["name"] == args.approver_name)
        revoked = await http.delete(base + f"/api/v1/tokens/{approver['id']}",
                                    headers={"Authorization": f"Bearer {args.admin_token}"})
        expect(revoked.status_code == 200, f"revoke: {revoked.status_code} {revoked.text}")
        gone = await until_refused(http, base, access)
        expect(gone.status_code == 401, f"the grant died with its approver: {gone.status_code}")
        refresh = await http.post(base + "/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                         "refresh_token": body["refresh_token"]})
        expect(refresh.status_code == 400, f"and cannot be refreshed: {refresh.text}")
        check("revoking the approving token revokes its grants, access and refresh")
    print("ok all OAuth checks", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--agent-token", required=True)
    parser.add_argument("--readonly-token", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--approver-name", required=True)
    arguments = parser.parse_args()
    try:
        anyio.run(main, arguments)
    except BaseException as error:  # noqa: BLE001 - the test prints what broke
        print(f"FAILED: {type(error).__name__}: {error}", flush=True)
        sys.exit(1)
