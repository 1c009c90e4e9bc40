//! `haivemind install` and the onboarding tools in a temporary HOME and project: what is
//! written, that re-running changes nothing, that the user's edits survive (and `--force`
//! replaces them), that `clean` removes only what was installed, each sync state, and that
//! over HTTP the server hands files over instead of writing on its own disk.

mod common;

use std::path::{Path, PathBuf};

use common::Scratch;
use serde_json::{Value, json};

const COMMANDS: &[&str] = &[
    "hv-sync.md",
    "hv-status.md",
    "hv-install.md",
    "hv-broadcast.md",
    "hv-query.md",
    "hv-delegate.md",
    "hv-tasks.md",
    "remember.md",
    "recall.md",
];

fn project_of(scratch: &Scratch) -> PathBuf {
    let project = scratch.dir.path().join("project");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    project
}

fn install(scratch: &Scratch, project: &Path, args: &[&str]) -> Value {
    let mut command = scratch.command();
    command.current_dir(project);
    let mut all = vec!["install"];
    all.extend_from_slice(args);
    common::run_json(command, &all)
}

fn actions(report: &Value) -> Vec<(String, String)> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn action_of(report: &Value, path: &str) -> String {
    actions(report)
        .into_iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("{path} not in {report}"))
        .1
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[test]
fn install_reinstall_user_edits_force_personal_other_tools_and_clean() {
    let scratch = Scratch::new();
    let project = project_of(&scratch);
    let home = scratch.dir.path();
    std::fs::write(project.join("CLAUDE.md"), "# My project\n\nUse tabs.\n").unwrap();
    std::fs::write(
        project.join(".mcp.json"),
        r#"{"mcpServers": {"github": {"command": "gh-mcp"}}}"#,
    )
    .unwrap();

    let first = install(&scratch, &project, &[]);
    assert_eq!(first["location"], "project");
    assert!(
        actions(&first).iter().all(|(_, a)| a == "written"),
        "{first}"
    );
    for name in COMMANDS {
        let text = read(project.join(".claude/commands").join(name));
        assert!(text.starts_with("---\ndescription: "), "{name}");
        assert!(text.contains("allowed-tools: mcp__haivemind__"), "{name}");
    }
    let claude = read(project.join("CLAUDE.md"));
    assert!(
        claude.starts_with("# My project\n\nUse tabs.\n"),
        "{claude}"
    );
    assert_eq!(claude.matches("<!-- haivemind:begin").count(), 1);
    let mcp: Value = serde_json::from_str(&read(project.join(".mcp.json"))).unwrap();
    assert_eq!(mcp["mcpServers"]["github"]["command"], "gh-mcp");
    assert_eq!(mcp["mcpServers"]["haivemind"]["args"], json!(["mcp"]));
    assert_eq!(
        mcp["mcpServers"]["haivemind"]["command"],
        common::binary().display().to_string()
    );
    assert!(project.join(".claude/haivemind-manifest.json").is_file());

    // Again: nothing changes.
    let snapshot = |p: &Path| {
        let mut all = vec![read(p.join("CLAUDE.md")), read(p.join(".mcp.json"))];
        all.extend(
            COMMANDS
                .iter()
                .map(|n| read(p.join(".claude/commands").join(n))),
        );
        all
    };
    let before = snapshot(&project);
    let again = install(&scratch, &project, &[]);
    assert!(
        actions(&again).iter().all(|(_, a)| a == "unchanged"),
        "{again}"
    );
    assert_eq!(snapshot(&project), before);

    // A command the user edited survives, and is reported; --force replaces it.
    let edited = project.join(".claude/commands/hv-sync.md");
    std::fs::write(&edited, "my own sync steps\n").unwrap();
    let kept = install(&scratch, &project, &[]);
    assert_eq!(
        action_of(&kept, ".claude/commands/hv-sync.md"),
        "kept_user_modified"
    );
    assert_eq!(read(&edited), "my own sync steps\n");
    let forced = install(&scratch, &project, &["--force"]);
    assert_eq!(
        action_of(&forced, ".claude/commands/hv-sync.md"),
        "replaced_user_modified"
    );
    // The snapshot holds CLAUDE.md, .mcp.json, then the commands: hv-sync.md first.
    assert_eq!(read(&edited), before[2]);

    // Personal: the home directory.
    let personal = install(&scratch, &project, &["personal"]);
    assert_eq!(personal["location"], "personal");
    assert!(home.join(".claude/commands/hv-tasks.md").is_file());
    assert!(read(home.join(".claude/CLAUDE.md")).contains("<!-- haivemind:begin"));
    let user_config: Value = serde_json::from_str(&read(home.join(".claude.json"))).unwrap();
    assert!(user_config["mcpServers"]["haivemind"].is_object());

    // Cursor and Codex.
    install(&scratch, &project, &["project", "--tool", "cursor"]);
    assert!(project.join(".cursor/commands/hv-delegate.md").is_file());
    assert!(read(project.join("AGENTS.md")).contains("<!-- haivemind:begin"));
    install(&scratch, &project, &["personal", "--tool", "codex"]);
    assert!(home.join(".codex/prompts/recall.md").is_file());
    let mut command = scratch.command();
    command.current_dir(&project);
    let refused = command
        .args(["install", "project", "--tool", "codex"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("~/.codex/prompts"));

    // Clean: only what was installed and is unchanged goes.
    std::fs::write(project.join(".claude/commands/mine.md"), "my command\n").unwrap();
    std::fs::write(
        project.join(".claude/commands/hv-query.md"),
        "tuned by me\n",
    )
    .unwrap();
    let cleaned = install(&scratch, &project, &["clean"]);
    let project_report = &cleaned["cleaned"][0];
    assert_eq!(project_report["location"], "project");
    assert_eq!(
        action_of(project_report, ".claude/commands/hv-query.md"),
        "kept_user_modified"
    );
    assert_eq!(
        action_of(project_report, ".claude/commands/hv-sync.md"),
        "removed"
    );
    assert!(!project.join(".claude/commands/hv-sync.md").exists());
    assert_eq!(
        read(project.join(".claude/commands/mine.md")),
        "my command\n"
    );
    assert_eq!(
        read(project.join(".claude/commands/hv-query.md")),
        "tuned by me\n"
    );
    assert_eq!(
        read(project.join("CLAUDE.md")),
        "# My project\n\nUse tabs.\n"
    );
    let mcp: Value = serde_json::from_str(&read(project.join(".mcp.json"))).unwrap();
    assert!(mcp["mcpServers"].get("haivemind").is_none());
    assert_eq!(mcp["mcpServers"]["github"]["command"], "gh-mcp");
    assert!(!home.join(".claude/commands/hv-tasks.md").exists());
    assert!(
        !home.join(".claude.json").exists(),
        "it only held our entry"
    );
}

#[test]
fn the_tools_over_stdio_report_every_state_and_sync_keeps_user_edits() {
    let scratch = Scratch::new();
    let project = project_of(&scratch);
    let mut command = scratch.command();
    command.current_dir(&project);
    let mut mcp = common::McpProcess::start(command);
    let installed = mcp.ok(
        "install_agent_commands",
        json!({"target_location": "project"}),
    );
    assert_eq!(installed["written_here"], true);
    let status = |mcp: &mut common::McpProcess| -> Vec<(String, String)> {
        let answer = mcp.ok(
            "check_agent_sync_status",
            json!({"target_location": "project"}),
        );
        actions(&json!({"files": answer["files"].as_array().unwrap().iter()
            .map(|f| json!({"path": f["path"], "action": f["state"]})).collect::<Vec<_>>()}))
    };
    assert!(status(&mut mcp).iter().all(|(_, s)| s == "up_to_date"));

    let commands = project.join(".claude/commands");
    std::fs::write(commands.join("hv-sync.md"), "mine now\n").unwrap();
    std::fs::remove_file(commands.join("hv-tasks.md")).unwrap();
    // An older shipped version, as written by an earlier install.
    let old = "---\ndescription: old\n---\nold text\n";
    std::fs::write(commands.join("hv-status.md"), old).unwrap();
    let manifest_path = project.join(".claude/haivemind-manifest.json");
    let mut manifest: Value = serde_json::from_str(&read(&manifest_path)).unwrap();
    manifest["files"][".claude/commands/hv-status.md"]["sha256"] =
        json!(haivemind_onboard::sha256(old));
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let states = status(&mut mcp);
    let state = |path: &str| states.iter().find(|(p, _)| p == path).unwrap().1.clone();
    assert_eq!(state(".claude/commands/hv-sync.md"), "user_modified");
    assert_eq!(state(".claude/commands/hv-tasks.md"), "missing");
    assert_eq!(state(".claude/commands/hv-status.md"), "outdated");
    assert_eq!(state(".claude/commands/recall.md"), "up_to_date");
    assert_eq!(state("CLAUDE.md"), "up_to_date");

    let synced = mcp.ok("trigger_auto_sync", json!({"target_location": "project"}));
    assert_eq!(
        action_of(&synced, ".claude/commands/hv-status.md"),
        "updated"
    );
    assert_eq!(
        action_of(&synced, ".claude/commands/hv-tasks.md"),
        "written"
    );
    assert_eq!(
        action_of(&synced, ".claude/commands/hv-sync.md"),
        "kept_user_modified"
    );
    assert_eq!(read(commands.join("hv-sync.md")), "mine now\n");
    let error = mcp.tool_error(
        "install_agent_commands",
        json!({"target_location": "garage"}),
    );
    assert_eq!(error["field"], "target_location");
    mcp.finish();
}

#[test]
fn over_http_the_tools_hand_files_over_and_write_nothing_on_the_server() {
    let scratch = Scratch::new();
    let token = scratch.create_token("agent", None);
    let server = common::http::Served::start(scratch.command());
    let session = server.initialize(&token);
    let result = server.tool(
        &token,
        &session,
        2,
        "install_agent_commands",
        json!({"target_location": "project"}),
    );
    assert_eq!(result["isError"], false, "{result}");
    let answer = &result["structuredContent"];
    assert_eq!(answer["written_here"], false);
    let files = answer["files"].as_array().unwrap();
    assert_eq!(files.len(), COMMANDS.len() + 2);
    let sync = files
        .iter()
        .find(|f| f["path"] == ".claude/commands/hv-sync.md")
        .unwrap();
    assert_eq!(
        sync["sha256"].as_str().unwrap(),
        haivemind_onboard::sha256(sync["content"].as_str().unwrap())
    );
    let entry = files.iter().find(|f| f["kind"] == "mcp_entry").unwrap();
    let entry: Value = serde_json::from_str(entry["content"].as_str().unwrap()).unwrap();
    assert_eq!(entry["type"], "http");
    assert!(entry["url"].as_str().unwrap().ends_with("/mcp"));
    assert_eq!(
        entry["headers"]["Authorization"],
        "Bearer ${HAIVEMIND_TOKEN}"
    );
    // The server's HOME and working directory are the scratch directory: untouched.
    for path in [".claude", "CLAUDE.md", ".mcp.json", ".claude.json"] {
        assert!(
            !scratch.dir.path().join(path).exists(),
            "{path} was written"
        );
    }
    // Status from the hashes the agent reports.
    let reported = json!([{"path": ".claude/commands/hv-sync.md", "sha256": sync["sha256"]},
                          {"path": ".claude/commands/recall.md", "sha256": "0000"}]);
    let status = server.tool(
        &token,
        &session,
        3,
        "check_agent_sync_status",
        json!({"files": reported}),
    );
    let states = status["structuredContent"]["files"]
        .as_array()
        .unwrap()
        .clone();
    let state = |path: &str| {
        states.iter().find(|f| f["path"] == path).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(".claude/commands/hv-sync.md"), "up_to_date");
    assert_eq!(state(".claude/commands/recall.md"), "user_modified");
    assert_eq!(state(".claude/commands/hv-tasks.md"), "missing");
}

/// `install` registers a Claude Code SessionStart hook beside the user's own, recorded in
/// the manifest; the registered command, run the way Claude Code runs it (a shell, the
/// hook's JSON on stdin), answers with the project's context pack; `clean` takes out only
/// our hook.
#[test]
fn the_session_start_hook_injects_the_projects_context_and_leaves_the_users_hooks() {
    let scratch = Scratch::new();
    let project = scratch.dir.path().join("payments-api");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::create_dir_all(project.join(".claude")).unwrap();
    let users = json!({
        "permissions": {"allow": ["Bash(cargo test)"]},
        "hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "echo mine"}]}]},
    });
    let settings_path = project.join(".claude/settings.json");
    std::fs::write(&settings_path, users.to_string()).unwrap();

    let report = install(&scratch, &project, &[]);
    assert_eq!(action_of(&report, ".claude/settings.json"), "written");
    let settings: Value = serde_json::from_str(&read(&settings_path)).unwrap();
    assert_eq!(settings["permissions"], users["permissions"]);
    let groups = settings["hooks"]["SessionStart"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{settings}");
    let command = groups[1]["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(command.ends_with(" context --hook"), "{command}");
    let manifest: Value =
        serde_json::from_str(&read(project.join(".claude/haivemind-manifest.json"))).unwrap();
    assert_eq!(manifest["files"][".claude/settings.json"]["kind"], "hook");
    // Installing again leaves one hook of ours.
    let again = install(&scratch, &project, &[]);
    assert_eq!(action_of(&again, ".claude/settings.json"), "unchanged");

    let mut store = scratch.command();
    let stored = store
        .args(["store", "--project", "payments-api", "--category", "infrastructure"])
        .arg("payments-api retries Stripe webhooks three times; the dead letters land in pg table webhook_failures")
        .output()
        .unwrap();
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    // Run through sh, in the scratch environment, as Claude Code runs hook commands.
    let mut shell = std::process::Command::new("sh");
    shell
        .args(["-c", &command])
        .current_dir(&project)
        .env_clear()
        .envs(
            scratch
                .command()
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k, v))),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = shell.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            json!({"session_id": "s1", "hook_event_name": "SessionStart", "source": "startup",
                   "cwd": project.join("src").display().to_string()})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(
        answer["hookSpecificOutput"]["hookEventName"],
        "SessionStart"
    );
    let context = answer["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(context.contains("project payments-api"), "{context}");
    assert!(context.contains("webhook_failures"), "{context}");

    // Garbage on stdin or a broken data directory never fails the session.
    let mut broken = std::process::Command::new("sh");
    broken
        .args(["-c", &command])
        .env_clear()
        .env("HOME", scratch.dir.path())
        .env("HAIVEMIND_DATA_DIR", "/proc/no-such-dir")
        .stdin(std::process::Stdio::null());
    let output = broken.output().unwrap();
    assert!(output.status.success());
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let cleaned = install(&scratch, &project, &["clean"]);
    assert!(cleaned.to_string().contains("settings.json"), "{cleaned}");
    let settings: Value = serde_json::from_str(&read(&settings_path)).unwrap();
    assert_eq!(settings, users, "clean leaves exactly the user's settings");
}
