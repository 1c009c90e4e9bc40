"""Drives the dashboard of a running `haivemind serve` in headless Chromium (selenium).

Usage:
    python dashboard_browser.py --url http://127.0.0.1:PORT --admin-token A --agent-token T
                                --readonly-token R [--screenshots DIR]

The server is started by the Rust test (crates/haivemind/tests/dashboard.rs), not here.
Memories are stored over MCP with the official Python SDK, as an agent would, and the page
must show them. One line is printed per check; the first broken expectation exits non-zero.
With --screenshots, a PNG of each view is written there (docs/screenshots in the repository,
by `scripts/screenshots`).
"""

import argparse
import json
import os
import sys
import time
import urllib.request
import uuid

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 15  # seconds for anything the page does


def check(message):
    print(f"ok {message}", flush=True)


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


# ---- the server, as an agent and a script would use it ------------------------------------

def mcp_call(url, token, tool, arguments):
    """One tool call over streamable HTTP with the official SDK; returns structuredContent."""

    async def run():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            transport = streamable_http_client(url + "/mcp", http_client=http)
            async with Client(transport, mode="legacy", read_timeout_seconds=30) as client:
                result = await client.call_tool(tool, arguments)
                expect(not result.is_error, f"{tool} failed: {result.structured_content}")
                return result.structured_content

    return anyio.run(run)


def rest(url, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + "/api/v1" + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def seed(url, admin):
    """What a fleet's morning looks like: an incident, tasks, an agent, state and drift."""
    mcp_call(url, admin, "register_agent", {"role": "sentinel_node", "capabilities": ["monitoring", "tls"],
                                              "description": "watches the web tier", "agent_id": "sentinel@web-1"})
    rest(url, admin, "POST", "/incidents", {"title": "cache-1 out of memory", "description": "Redis evicted session keys",
                                            "severity": "high", "affected_systems": ["cache-1"]})
    rest(url, admin, "POST", "/tasks", {"task_description": "Rotate the TLS certificates of the web tier",
                                        "required_capabilities": ["tls"], "priority": "high"})
    rest(url, admin, "POST", "/tasks", {"task_description": "Raise Redis maxmemory to 8gb", "required_capabilities": []})
    rest(url, admin, "POST", "/infrastructure", {"machine_id": "web-1", "state_type": "services",
                                                 "state_data": {"nginx": "running", "redis": "stopped"}})
    rest(url, admin, "POST", "/configs", {"config_name": "nginx.conf", "config_type": "nginx",
                                          "config_content": "worker_processes 4;\nkeepalive_timeout 65;\n",
                                          "target_machines": ["web-1"]})
    rest(url, admin, "POST", "/configs", {"config_name": "nginx.conf", "config_type": "nginx",
                                          "config_content": "worker_processes 8;\nkeepalive_timeout 65;\n",
                                          "target_machines": ["web-2"]})
    rest(url, admin, "POST", "/runbooks", {"title": "Restart Redis safely", "system": "cache-1",
                                           "procedure": "1. Drain the node\n2. systemctl restart redis\n3. Check INFO memory"})


# ---- the browser --------------------------------------------------------------------------

def browser(width=1024, height=720):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("HAIVEMIND_CHROMIUM", "/usr/bin/chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=os.environ.get("HAIVEMIND_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def wait(driver, condition, what):
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        fail(f"timed out waiting for {what}; status line: {status(driver)!r}; results: {result_count(driver)!r}")


def result_count(driver):
    try:
        return driver.find_element(By.ID, "result-count").text
    except Exception:  # noqa: BLE001 - only for the failure message
        return ""


def status(driver):
    try:
        return driver.find_element(By.ID, "status").text
    except Exception:  # noqa: BLE001 - only for the failure message
        return "?"


def visible(driver, selector):
    elements = driver.find_elements(By.CSS_SELECTOR, selector)
    return elements and elements[0].is_displayed()


def sign_in(driver, url, token):
    driver.get(url + "/")
    field = wait(driver, lambda d: d.find_element(By.NAME, "token"), "the sign-in form")
    field.send_keys(token)
    field.send_keys(Keys.ENTER)
    wait(driver, lambda d: d.find_element(By.ID, "whoami").text, "sign-in")


def go(driver, view):
    driver.execute_script("location.hash = arguments[0]", view)
    wait(driver, lambda d: visible(d, f"#view-{view}"), f"the {view} view")


def search(driver, words):
    go(driver, "memories")
    box = driver.find_element(By.NAME, "q")
    box.clear()
    box.send_keys(words)
    box.send_keys(Keys.ENTER)


def memory_item(driver, container, memory_id):
    return driver.find_elements(By.CSS_SELECTOR, f'{container} li[data-memory-id="{memory_id}"]')


def item_text(driver, container, memory_id, what):
    """The text of a listed memory, read again if the list was redrawn between finding and reading it."""

    def attempt(d):
        items = memory_item(d, container, memory_id)
        if not items:
            return False
        try:
            return items[0].text or False
        except StaleElementReferenceException:
            return False

    return wait(driver, attempt, what)


def click_fresh(elements):
    """Clicks the first of `elements`; False (so a wait tries again) if there is none or it was redrawn."""
    if not elements:
        return False
    try:
        elements[0].click()
        return True
    except StaleElementReferenceException:
        return False


def press(driver, container, memory_id, what, key=None):
    """Clicks (or sends `key` to) a listed memory, again if the list was redrawn meanwhile."""

    def attempt(d):
        items = memory_item(d, container, memory_id)
        if not items:
            return False
        try:
            if key:
                items[0].send_keys(key)
            else:
                items[0].click()
            return True
        except StaleElementReferenceException:
            return False

    wait(driver, attempt, what)


def screenshot(driver, directory, name, focus=None):
    if directory:
        time.sleep(0.5)
        driver.execute_script("document.getElementById('status').textContent = ''; document.activeElement.blur();"
                              "const f = arguments[0] && document.querySelector(arguments[0]);"
                              "if (f) f.scrollIntoView({block: 'center'}); else window.scrollTo(0, 0);", focus)
        driver.save_screenshot(os.path.join(directory, f"{name}.png"))


def no_script_ran(driver):
    return driver.execute_script("return window.__pwned === undefined")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--agent-token", required=True)
    parser.add_argument("--readonly-token", required=True)
    parser.add_argument("--screenshots")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    seed(url, args.admin_token)
    marker = uuid.uuid4().hex[:10]

    driver = browser()
    try:
        sign_in(driver, url, args.agent_token)
        expect("agent" in driver.find_element(By.ID, "whoami").text, "whoami names the role")
        rights = driver.find_element(By.ID, "rights").text
        expect("role agent" in rights and "may not" in rights and "administer" in rights,
               f"the page says what the role may do: {rights!r}")
        stored = driver.execute_script(
            "return [sessionStorage.getItem('haivemind.token'), localStorage.length, document.cookie, location.href]")
        expect(stored[0] == args.agent_token, "the token is kept in sessionStorage")
        expect(stored[1] == 0 and stored[2] == "", "nothing in localStorage or cookies")
        expect(args.agent_token not in stored[3], "the token is not in the URL")
        check("sign in: role shown, token only in sessionStorage")

        headers = driver.execute_script(
            "return fetch('/', {cache: 'no-store'}).then(r => Object.fromEntries(r.headers.entries()))")
        csp = headers.get("content-security-policy", "")
        expect("script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp,
               f"strict CSP: {csp!r}")
        expect("access-control-allow-origin" not in headers, "no CORS header")
        check("the page is served with a strict CSP and no CORS")

        # Live: a memory stored over MCP appears without a reload.
        wait(driver, lambda d: d.find_element(By.ID, "live-state").text == "live", "the live event socket")
        driver.execute_script("window.__sameDocument = true")
        live = mcp_call(url, args.agent_token, "store_memory",
                        {"content": f"Live check {marker}: nginx on web-1 needs worker_connections 4096",
                         "category": "infrastructure", "tags": ["live"]})
        wait(driver, lambda d: memory_item(d, "#recent", live["id"]), "the memory stored over MCP to appear live")
        expect(driver.execute_script("return window.__sameDocument === true"), "the page did not reload")
        check("a memory stored over MCP appears on the overview live")

        # Search, open, edit, and see the new version in its history.
        search(driver, f"{marker} worker_connections")
        press(driver, "#results", live["id"], "the search result")
        wait(driver, lambda d: d.find_element(By.ID, "detail-content").text.startswith(f"Live check {marker}"),
             "the detail panel")
        check("search finds it and the detail panel shows it")
        driver.find_element(By.ID, "edit").click()
        editor = driver.find_element(By.ID, "edit-content")
        editor.clear()
        editor.send_keys(f"Live check {marker}: nginx on web-1 needs worker_connections 8192")
        driver.find_element(By.ID, "save").click()
        wait(driver, lambda d: visible(d, "#confirm"), "the confirmation")
        driver.find_element(By.ID, "confirm-yes").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, '#history li[data-version="2"] .diff-add'),
             "version 2 in the history")
        added = driver.find_element(By.CSS_SELECTOR, '#history li[data-version="2"] .diff-add').text
        removed = driver.find_element(By.CSS_SELECTOR, '#history li[data-version="2"] .diff-del').text
        expect("8192" in added and "4096" in removed, f"the diff shows the change: -{removed!r} +{added!r}")
        after = rest(url, args.agent_token, "GET", f"/memories/{live['id']}")
        expect(after["version"] == 2 and "8192" in after["content"], f"the edit was stored: {after}")
        check("edit with confirmation; the history shows the new version as a diff")

        # Soft delete and recover, each confirmed; only an admin sees "delete for good".
        expect(not visible(driver, "#hard-delete"), "an agent sees no hard delete")
        driver.find_element(By.ID, "delete").click()
        wait(driver, lambda d: visible(d, "#confirm"), "the delete confirmation")
        driver.find_element(By.ID, "confirm-no").click()
        time.sleep(0.3)
        expect(rest(url, args.agent_token, "GET", f"/memories/{live['id']}")["version"] == 2,
               "cancelling the confirmation deletes nothing")
        driver.find_element(By.ID, "delete").click()
        wait(driver, lambda d: visible(d, "#confirm"), "the delete confirmation")
        driver.find_element(By.ID, "confirm-yes").click()
        wait(driver, lambda d: visible(d, "#recover"), "the recover button of a deleted memory")
        driver.find_element(By.ID, "show-deleted").click()
        wait(driver, lambda d: memory_item(d, "#results", live["id"]), "the memory among the deleted")
        driver.find_element(By.ID, "recover").click()
        wait(driver, lambda d: visible(d, "#confirm"), "the recover confirmation")
        driver.find_element(By.ID, "confirm-yes").click()
        wait(driver, lambda d: visible(d, "#edit") and not visible(d, "#recover"), "the recovered memory")
        expect(not rest(url, args.agent_token, "GET", f"/memories/{live['id']}")["deleted"], "recovered")
        check("soft delete and recover, each after a confirmation; no hard delete for an agent")

        # Keyboard: a result opens with Enter.
        search(driver, f"{marker} worker_connections")
        wait(driver, lambda d: memory_item(d, "#results", live["id"]), "the search result again")
        driver.execute_script("document.querySelector('#detail').hidden = true")
        press(driver, "#results", live["id"], "the search result by keyboard", Keys.ENTER)
        wait(driver, lambda d: visible(d, "#detail"), "the detail panel opened by keyboard")
        check("a result opens from the keyboard")

        # Memory text is text: markup in it is shown, never run.
        hostile = f"<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> {marker}"
        evil = mcp_call(url, args.agent_token, "store_memory", {"content": hostile, "category": "security"})
        go(driver, "overview")
        shown = item_text(driver, "#recent", evil["id"], "the hostile memory")
        expect("<img src=x onerror=" in shown and "<script>" in shown, f"markup shown as text: {shown!r}")
        expect(not driver.find_elements(By.CSS_SELECTOR, "#recent img, #recent script"), "no element made from it")
        search(driver, marker)
        press(driver, "#results", evil["id"], "the hostile memory in results")
        wait(driver, lambda d: "<script>" in d.find_element(By.ID, "detail-content").text, "the hostile detail")
        time.sleep(0.5)
        expect(no_script_ran(driver), "the memory's script never ran")
        check("markup in a memory is shown as text and nothing in it runs")

        # Confidential memories: the agent sees them, readonly never does.
        secret = mcp_call(url, args.agent_token, "store_memory",
                          {"content": f"Confidential {marker}: the vault unseal key holder is Dana",
                           "confidentiality_level": "confidential"})
        search(driver, f"Confidential {marker} vault")
        wait(driver, lambda d: memory_item(d, "#results", secret["id"]), "the confidential memory for the agent")
        driver.find_element(By.ID, "signout").click()
        wait(driver, lambda d: visible(d, "#view-signin"), "the sign-in view after signing out")
        expect(driver.execute_script("return sessionStorage.getItem('haivemind.token')") is None, "sign-out forgets the token")
        check("sign-out forgets the token")

        sign_in(driver, url, args.readonly_token)
        expect("readonly" in driver.find_element(By.ID, "whoami").text, "readonly signed in")
        search(driver, f"Confidential {marker} vault")
        wait(driver, lambda d: d.find_element(By.ID, "result-count").text, "the readonly search")
        time.sleep(0.3)
        expect(not memory_item(driver, "#results", secret["id"]), "readonly does not see the confidential memory")
        expect(secret["id"] not in driver.page_source, "the confidential id is nowhere in the page")
        search(driver, f"{marker} worker_connections")
        press(driver, "#results", live["id"], "a normal memory for readonly")
        wait(driver, lambda d: visible(d, "#detail"), "readonly's detail panel")
        for control in ("#edit", "#delete", "#hard-delete", "#recover", "#delegate-form", "#sync-now"):
            expect(not visible(driver, control), f"readonly sees no {control}")
        expect(not visible(driver, 'nav a[data-view="admin"]'), "readonly sees no admin view")
        check("readonly sees no confidential memory and no edit, delete or delegate controls")
        driver.find_element(By.ID, "signout").click()

        # An admin revokes a token; that token's page is signed out on its next call.
        sign_in(driver, url, args.admin_token)
        go(driver, "admin")
        driver.find_element(By.CSS_SELECTOR, '#token-form input[name="name"]').send_keys(f"laptop-{marker}")
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        secret_token = wait(driver, lambda d: d.find_element(By.ID, "new-token-secret").text, "the new token, shown once")
        expect(secret_token.startswith("hv_"), "a token was made")
        other = browser()
        try:
            sign_in(other, url, secret_token)
            revoke = f'//tr[td[2][text()="laptop-{marker}"]]//button[contains(@class, "revoke")]'
            wait(driver, lambda d: click_fresh(d.find_elements(By.XPATH, revoke)), "the new token's revoke button")
            wait(driver, lambda d: visible(d, "#confirm"), "the revoke confirmation")
            driver.find_element(By.ID, "confirm-yes").click()
            wait(driver, lambda d: "Revoked" in status(d), "the revocation")
            time.sleep(1.5)  # servers refuse a revoked token within a second
            # Its next call (or its event socket, whichever comes first) signs it out.
            other.execute_script("location.hash = '#memories'")
            wait(other, lambda d: visible(d, "#view-signin"), "the revoked page to be signed out")
            expect("signed out" in status(other), f"the page says why: {status(other)!r}")
            expect(other.execute_script("return sessionStorage.getItem('haivemind.token')") is None,
                   "the revoked token is forgotten")
        finally:
            other.quit()
        audit = wait(driver, lambda d: (go(d, "overview"), go(d, "admin"),
                                        d.find_element(By.ID, "audit").text)[2], "the audit log")
        expect("token_revoked" in audit, "the revocation is in the audit log")
        check("an admin revokes a token and its page is signed out on its next call")

        # Every control is labelled.
        unlabelled = driver.execute_script("""
            return [...document.querySelectorAll('input, select, textarea')]
              .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.name || e.id);""")
        expect(not unlabelled, f"controls without a label: {unlabelled}")
        check("every control has a label")

        # Screenshots of each view, with the admin's data.
        for view in ("overview", "memories", "agents", "devops", "sync", "admin"):
            go(driver, view)
            if view == "memories":
                # The memory this script stored, by id: the list on screen may still be an
                # earlier search's until this one's answer arrives.
                search(driver, f"nginx {marker} worker_connections")
                press(driver, "#results", live["id"], "a result for the screenshot")
                wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#history li"), "history for the screenshot")
            if view == "devops":
                wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#config-name option"), "configurations")
                driver.find_element(By.CSS_SELECTOR, "#drift-form button").click()
                wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#drift .side-by-side"), "the drift diff")
                side = driver.find_element(By.CSS_SELECTOR, "#drift .side-by-side").text
                expect("worker_processes 4;" in side and "worker_processes 8;" in side, f"side-by-side drift: {side!r}")
            if view == "agents":
                wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#task-board .task"), "the task board")
                expect(driver.find_elements(By.CSS_SELECTOR, '#roster tr[data-agent-id="sentinel@web-1"]'), "the roster")
            if view == "sync":
                wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-latency svg rect"), "the latency chart")
            time.sleep(0.3)
            screenshot(driver, args.screenshots, view, {"devops": "#drift"}.get(view))
        check("every view renders (incidents, drift side by side, task board, roster, charts)")

        # A phone-width screen: nothing wider than the screen.
        driver.set_window_size(390, 844)
        for view in ("overview", "memories", "agents", "devops", "sync", "admin"):
            go(driver, view)
            time.sleep(0.3)
            overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            expect(overflow <= 1, f"the {view} view is {overflow}px wider than a phone's screen")
        go(driver, "overview")
        screenshot(driver, args.screenshots, "phone")
        check("every view fits a phone-width screen")

        # Refused requests (401, 403, 410) are answers the page handles; a script error or a
        # CSP violation ("security") is not.
        errors = [entry for entry in driver.get_log("browser")
                  if entry["level"] == "SEVERE" and entry.get("source") != "network"]
        expect(not errors, f"the browser console has script errors or CSP violations: {errors}")
        check("no script errors or CSP violations in the browser console")
    finally:
        driver.quit()
    print("ok all dashboard checks", flush=True)


if __name__ == "__main__":
    main()
