//! The dashboard in a real browser: Debian's headless Chromium, driven by selenium through
//! chromium-driver, against a real `haivemind serve`, while the official MCP Python SDK
//! stores memories as an agent would (tests/interop/dashboard_browser.py says what is
//! checked). `scripts/test` installs chromium and chromium-driver when they are missing.
//!
//! With `HAIVEMIND_SCREENSHOTS=DIR` the script also saves a PNG of each view there
//! (`scripts/screenshots` refreshes docs/screenshots this way).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Scratch;
use common::http::Served;
use common::python::{python, workspace_root};

fn browser_parts() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("HAIVEMIND_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let driver = std::env::var_os("HAIVEMIND_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    assert!(
        chromium.exists() && driver.exists(),
        "the dashboard's browser tests need Debian's chromium and chromium-driver \
         ({} and {}); ./scripts/test installs them, or set HAIVEMIND_CHROMIUM and \
         HAIVEMIND_CHROMEDRIVER",
        chromium.display(),
        driver.display()
    );
    (chromium, driver)
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let (chromium, driver) = browser_parts();
    let scratch = Scratch::new();
    let admin = scratch.create_token("admin", Some("admin"));
    let agent = scratch.create_token("agent", Some("agent-laptop"));
    let readonly = scratch.create_token("readonly", Some("viewer"));
    let server = Served::start(scratch.command_with_model());
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/interop/dashboard_browser.py"))
        .args(["--url", &server.url])
        .args(["--admin-token", &admin, "--agent-token", &agent])
        .args(["--readonly-token", &readonly])
        .env("HAIVEMIND_CHROMIUM", chromium)
        .env("HAIVEMIND_CHROMEDRIVER", driver);
    if let Some(directory) = std::env::var_os("HAIVEMIND_SCREENSHOTS") {
        command.arg("--screenshots").arg(directory);
    }
    let output = command.output().expect("run the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ok all dashboard checks"),
        "the dashboard failed in the browser:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop();
}
