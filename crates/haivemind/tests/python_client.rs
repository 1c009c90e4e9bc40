//! Interop with a client no one here wrote: the official MCP Python SDK drives
//! `haivemind mcp` in both of its connect modes.
//!
//! The SDK is installed into `target/interop-venv` from `tests/interop/requirements.txt`
//! the first time (pip reaches PyPI), or taken from `$HAIVEMIND_TEST_PYTHON` when set.

mod common;

use std::process::Command;

use common::python::{python, workspace_root};
use common::{Scratch, binary};

fn drive(mode: &str) {
    let scratch = Scratch::new();
    let data_dir = scratch.data_dir();
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("config.json"), "{}").unwrap();
    let output = Command::new(python())
        .arg(workspace_root().join("tests/interop/mcp_client.py"))
        .arg(binary())
        .arg(mode)
        .arg(&data_dir)
        .env("HAIVEMIND_MODEL_DIR", common::model_dir())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the official Python client failed in {mode} mode:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with(&format!("ok {mode}")), "{stdout}");
}

#[test]
fn official_python_client_in_legacy_mode() {
    drive("legacy");
}

#[test]
fn official_python_client_in_auto_mode_probes_discover_first() {
    drive("auto");
}

/// Runs `tests/interop/mcp_http_client.py` against a real `haivemind serve`: streamable
/// HTTP in both connect modes, legacy SSE, a readonly token, and a wrong one.
fn drive_http(tls: bool) {
    use common::http::Served;
    let scratch = Scratch::new();
    let mut cafile = None;
    if tls {
        let (cert, key, _) = common::http::throwaway_certificate(scratch.dir.path());
        scratch.write_config(
            &serde_json::json!({"security": {"tls": {"cert_file": cert, "key_file": key}}})
                .to_string(),
        );
        cafile = Some(cert);
    }
    let token = |role: &str| scratch.create_token(role, None);
    let (agent, readonly) = (token("agent"), token("readonly"));
    let server = Served::start(scratch.command());
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/interop/mcp_http_client.py"))
        .args(["--url", &server.url, "--token", &agent])
        .args(["--readonly-token", &readonly]);
    if let Some(cafile) = &cafile {
        command.arg("--cafile").arg(cafile);
    }
    let output = command.output().expect("run the Python HTTP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the official Python client failed over {}:\n{stdout}\n{}",
        server.url,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok all HTTP interop checks"), "{stdout}");
}

#[test]
fn official_python_client_over_http_both_modes_and_sse() {
    drive_http(false);
}

#[test]
fn official_python_client_over_https_with_a_throwaway_certificate() {
    drive_http(true);
}

#[test]
fn the_mcp_json_that_install_writes_starts_a_working_server_for_the_official_client() {
    let scratch = Scratch::new();
    let project = scratch.dir.path().join("project");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    let mut install = scratch.command();
    install.current_dir(&project);
    let installed = common::run_json(install, &["install"]);
    assert_eq!(installed["location"], "project", "{installed}");
    let output = Command::new(python())
        .arg(workspace_root().join("tests/interop/mcp_json_client.py"))
        .arg(&project)
        .env("HOME", scratch.dir.path())
        .env("HAIVEMIND_DATA_DIR", scratch.data_dir())
        .env("HAIVEMIND_CONFIG", scratch.config_path())
        .env("HAIVEMIND_MACHINE_ID", "mcp-json")
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the server .mcp.json registers did not work:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok .mcp.json server"), "{stdout}");
}

/// Broadcasts reach a 2026-07-28 client through `subscriptions/listen` on
/// haivemind://broadcasts and a 2025-11-25 session through `resources/subscribe`, each the
/// mechanism its protocol version provides (tests/interop/mcp_broadcast_client.py).
#[test]
fn broadcasts_reach_the_official_client_by_each_protocols_own_mechanism() {
    use common::http::Served;
    let scratch = Scratch::new();
    let token = scratch.create_token("agent", None);
    let server = Served::start(scratch.command());
    let output = Command::new(python())
        .arg(workspace_root().join("tests/interop/mcp_broadcast_client.py"))
        .args(["--url", &server.url, "--token", &token])
        .output()
        .expect("run the Python broadcast client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ok all broadcast checks"),
        "broadcasts did not arrive:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop();
}
