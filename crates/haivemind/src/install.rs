//! `haivemind install [personal|project|clean] [--force] [--remote URL] [--tool T]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use haivemind_onboard::{AgentTool, Connection, FileOutcome, Location, Parts};
use serde_json::{Value, json};

use crate::output::Printer;

pub(crate) fn run(
    printer: &Printer,
    location: Option<String>,
    force: bool,
    remote: Option<String>,
    tool: &str,
    serving: Option<String>,
) -> Result<()> {
    let tool = AgentTool::parse(tool)?;
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let project = std::env::current_dir().context("cannot read the current directory")?;
    let asked = location.unwrap_or_else(|| "auto".into());
    if asked == "clean" {
        let mut cleaned = Vec::new();
        let mut text = String::new();
        for location in [Location::Project, Location::Personal] {
            // Codex has no project location; nothing to clean there.
            let base = haivemind_onboard::base_dir(location, &home, &project);
            let Ok(outcomes) = haivemind_onboard::clean(&base, tool, location) else {
                continue;
            };
            if outcomes.is_empty() {
                continue;
            }
            text.push_str(&describe(location, &base, &outcomes));
            cleaned.push(report(location, &base, &outcomes));
        }
        if cleaned.is_empty() {
            text = "nothing to clean: no hAIveMind manifest here or in the home directory".into();
        }
        printer.done(json!({"cleaned": cleaned}), text.trim_end());
        return Ok(());
    }
    let location = Location::parse(&asked, &project)?;
    let binary = std::env::current_exe()
        .context("cannot find this binary")?
        .display()
        .to_string();
    let connection = match &remote {
        Some(url) => Connection::Remote { url: url.clone() },
        None => Connection::Stdio {
            command: binary.clone(),
        },
    };
    let mut files = haivemind_onboard::files_for(tool, location, &connection, Parts::ALL)?;
    // Claude Code also gets a session-start hook that injects the project's context pack.
    files.extend(haivemind_onboard::hook_file(
        tool,
        &binary,
        remote.as_deref(),
    ));
    let base = haivemind_onboard::base_dir(location, &home, &project);
    let outcomes = haivemind_onboard::install(&base, tool, location, &files, force)?;
    let mut text = describe(location, &base, &outcomes);
    if outcomes.iter().any(|o| o.action == "kept_user_modified") {
        text.push_str("files you edited were kept; `haivemind install --force` replaces them\n");
    }
    if remote.is_none()
        && let Some(url) = &serving
    {
        text.push_str(&format!(
            "registered this binary over stdio (its own process, the same data directory). `haivemind serve` is running at {url}: to use it instead, set HAIVEMIND_TOKEN to the token it printed (or `haivemind token create --role agent`) and run `haivemind install --remote {url}`\n"
        ));
    }
    if tool == AgentTool::Codex {
        text.push_str(
            "codex: add the server to ~/.codex/config.toml yourself:\n  [mcp_servers.haivemind]\n  command = \"haivemind\"\n  args = [\"mcp\"]\n",
        );
    }
    printer.done(report(location, &base, &outcomes), text.trim_end());
    Ok(())
}

fn report(location: Location, base: &std::path::Path, outcomes: &[FileOutcome]) -> Value {
    json!({
        "location": location.as_str(),
        "base": base.display().to_string(),
        "files": outcomes.iter().map(|o| json!({"path": o.path, "action": o.action})).collect::<Vec<_>>(),
    })
}

fn describe(location: Location, base: &std::path::Path, outcomes: &[FileOutcome]) -> String {
    let mut text = format!("{} ({}):\n", location.as_str(), base.display());
    for outcome in outcomes {
        text.push_str(&format!("  {:<24} {}\n", outcome.action, outcome.path));
    }
    text
}
