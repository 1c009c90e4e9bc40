//! Onboarding tools: install and keep current hAIveMind's commands, instructions section and
//! MCP registration for the calling agent (`haivemind-onboard` does the work).
//!
//! Over stdio the server runs on the agent's machine, in its project directory, so the
//! tools act like `haivemind install` there. Over HTTP the server is somewhere else: the
//! tools never write on the server's disk; they answer with the files (relative paths,
//! contents, sha256) for the agent to write on its own machine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use haivemind_core::security::Role;
use haivemind_onboard::{
    AgentTool, Connection, FileState, Location, OnboardError, Parts, PlannedFile,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolContext, ToolEntry, schema_of};
use crate::arguments::parse;
use crate::error::ToolError;

pub(super) const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "install_agent_commands",
        description: "Install hAIveMind for this agent: the hv-* slash commands (plus remember and recall), a marked \
                      hAIveMind section in CLAUDE.md and the server's entry in .mcp.json. Files the user edited are \
                      kept and reported unless force=true; clean=true removes only what was installed and is \
                      unchanged. Over HTTP nothing is written on the server: the answer lists the files to write.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<InstallArgs>,
        handler: install_agent_commands,
    },
    ToolEntry {
        name: "sync_agent_commands",
        description: "Bring the hv-* slash commands up to date (user-edited ones are kept unless force=true).",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<SyncArgs>,
        handler: sync_agent_commands,
    },
    ToolEntry {
        name: "sync_agent_config",
        description: "Bring the hAIveMind section of CLAUDE.md (AGENTS.md for Cursor and Codex) up to date; the \
                      user's own text is never touched.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<SyncArgs>,
        handler: sync_agent_config,
    },
    ToolEntry {
        name: "check_agent_sync_status",
        description: "Per installed file: up_to_date, outdated (the next sync replaces it), user_modified (kept) or \
                      missing. Over HTTP, pass the files' sha256 as the agent sees them.",
        read_only: true,
        destructive: false,
        idempotent: true,
        least_role: Role::Readonly,
        schema: schema_of::<StatusArgs>,
        handler: check_agent_sync_status,
    },
    ToolEntry {
        name: "trigger_auto_sync",
        description: "Update whatever hAIveMind files are outdated (commands and instructions), keeping the user's \
                      edits: what /hv-sync runs.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<SyncArgs>,
        handler: trigger_auto_sync,
    },
];

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InstallArgs {
    /// auto (default: the project when this is one, else personal), personal (the home
    /// directory) or project.
    #[serde(default)]
    target_location: Option<String>,
    /// Replace files the user edited.
    #[serde(default)]
    force: bool,
    /// Remove what was installed instead (only files the user has not changed).
    #[serde(default)]
    clean: bool,
    /// claude (default), cursor or codex.
    #[serde(default)]
    tool: Option<String>,
    /// Register this remote server (its /mcp URL) in .mcp.json instead of a local stdio
    /// server.
    #[serde(default)]
    remote_url: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SyncArgs {
    /// auto (default), personal or project.
    #[serde(default)]
    target_location: Option<String>,
    /// Replace files the user edited.
    #[serde(default)]
    force: bool,
    /// claude (default), cursor or codex.
    #[serde(default)]
    tool: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportedFile {
    /// The file's path, relative to the project (or home) directory.
    path: String,
    /// SHA-256 of hAIveMind's part of it as it is now (the whole command file, the section
    /// between the markers, or the haivemind entry of mcpServers).
    sha256: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    /// auto (default), personal or project.
    #[serde(default)]
    target_location: Option<String>,
    /// claude (default), cursor or codex.
    #[serde(default)]
    tool: Option<String>,
    /// Over HTTP: the files as the agent sees them.
    #[serde(default)]
    files: Vec<ReportedFile>,
    /// Over HTTP: what was last written (the agent's manifest), to tell outdated from
    /// user-modified.
    #[serde(default)]
    written: Vec<ReportedFile>,
}

fn onboard_error(error: OnboardError) -> ToolError {
    match error {
        OnboardError::Unsupported(rule) => ToolError::InvalidArguments {
            field: rule
                .split_once(':')
                .map_or("target_location", |(f, _)| f)
                .to_string(),
            rule,
        },
        other => ToolError::InvalidArguments {
            field: "target_location".into(),
            rule: other.to_string(),
        },
    }
}

/// Whether this server runs on the agent's machine (stdio).
fn local(cx: &ToolContext) -> bool {
    cx.server.transport == "stdio"
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn project() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

struct Target {
    tool: AgentTool,
    location: Location,
    base: PathBuf,
}

fn target(
    cx: &ToolContext,
    location: Option<&str>,
    tool: Option<&str>,
) -> Result<Target, ToolError> {
    let tool = AgentTool::parse(tool.unwrap_or("claude")).map_err(onboard_error)?;
    let asked = location.unwrap_or("auto");
    // A remote server cannot look at the agent's directory: auto means the project there.
    let location = if !local(cx) && asked == "auto" {
        Location::Project
    } else {
        Location::parse(asked, &project()).map_err(onboard_error)?
    };
    Ok(Target {
        tool,
        location,
        base: haivemind_onboard::base_dir(location, &home(), &project()),
    })
}

fn connection(cx: &ToolContext, remote_url: Option<String>) -> Connection {
    match remote_url.or_else(|| (!local(cx)).then(|| cx.server.mcp_url.clone()).flatten()) {
        Some(url) => Connection::Remote { url },
        None => Connection::Stdio {
            command: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "haivemind".into()),
        },
    }
}

/// Installs (stdio) or hands over (HTTP) `parts`.
fn apply(
    cx: &ToolContext,
    target: &Target,
    parts: Parts,
    force: bool,
    remote_url: Option<String>,
) -> Result<Value, ToolError> {
    let files = haivemind_onboard::files_for(
        target.tool,
        target.location,
        &connection(cx, remote_url),
        parts,
    )
    .map_err(onboard_error)?;
    if !local(cx) {
        return Ok(handover(target, &files));
    }
    let outcomes =
        haivemind_onboard::install(&target.base, target.tool, target.location, &files, force)
            .map_err(onboard_error)?;
    let kept: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.action == "kept_user_modified")
        .map(|o| o.path.as_str())
        .collect();
    Ok(json!({
        "tool": target.tool.as_str(),
        "location": target.location.as_str(),
        "base": target.base.display().to_string(),
        "written_here": true,
        "files": outcomes.iter().map(|o| json!({"path": o.path, "action": o.action})).collect::<Vec<_>>(),
        "kept_user_modified": kept,
        "hint": if kept.is_empty() { Value::Null } else { json!("these files were edited by the user and kept; force=true replaces them") },
    }))
}

/// What a remote server answers: the files for the agent to write itself.
fn handover(target: &Target, files: &[PlannedFile]) -> Value {
    json!({
        "tool": target.tool.as_str(),
        "location": target.location.as_str(),
        "base": match target.location { Location::Personal => "~", Location::Project => "." },
        "written_here": false,
        "note": "this server runs on another machine and wrote nothing: write each file at its path under base \
                 (kind command: the whole file; section: replace the part between the haivemind markers or \
                 append it; mcp_entry: set mcpServers.haivemind to this JSON), then call check_agent_sync_status \
                 with the sha256 of each as written",
        "files": files.iter().map(|f| json!({
            "path": f.path, "kind": match f.kind {
                haivemind_onboard::Kind::Command => "command",
                haivemind_onboard::Kind::Section => "section",
                haivemind_onboard::Kind::McpEntry => "mcp_entry",
                // Remote plans carry no hook: it would run a binary the agent's machine
                // may not have.
                haivemind_onboard::Kind::Hook => "hook",
            },
            "content": f.content, "sha256": f.sha256,
        })).collect::<Vec<_>>(),
        "command_set": haivemind_onboard::shipped_manifest(),
    })
}

fn install_agent_commands(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: InstallArgs = parse(arguments)?;
    let target = target(cx, args.target_location.as_deref(), args.tool.as_deref())?;
    if args.clean {
        if !local(cx) {
            let files = haivemind_onboard::files_for(
                target.tool,
                target.location,
                &connection(cx, args.remote_url),
                Parts::ALL,
            )
            .map_err(onboard_error)?;
            let mut value = handover(&target, &files);
            value["note"] = json!(
                "this server runs on another machine: remove each of these files (or the haivemind section / entry) only if its sha256 still matches"
            );
            return Ok(value);
        }
        let outcomes = haivemind_onboard::clean(&target.base, target.tool, target.location)
            .map_err(onboard_error)?;
        return Ok(json!({
            "tool": target.tool.as_str(),
            "location": target.location.as_str(),
            "base": target.base.display().to_string(),
            "files": outcomes.iter().map(|o| json!({"path": o.path, "action": o.action})).collect::<Vec<_>>(),
        }));
    }
    apply(cx, &target, Parts::ALL, args.force, args.remote_url)
}

fn sync_parts(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
    parts: Parts,
    force_allowed: bool,
) -> Result<Value, ToolError> {
    let args: SyncArgs = parse(arguments)?;
    let target = target(cx, args.target_location.as_deref(), args.tool.as_deref())?;
    apply(cx, &target, parts, args.force && force_allowed, None)
}

fn sync_agent_commands(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    sync_parts(
        cx,
        arguments,
        Parts {
            commands: true,
            instructions: false,
            mcp: false,
        },
        true,
    )
}

fn sync_agent_config(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    sync_parts(
        cx,
        arguments,
        Parts {
            commands: false,
            instructions: true,
            mcp: false,
        },
        true,
    )
}

fn trigger_auto_sync(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    sync_parts(
        cx,
        arguments,
        Parts {
            commands: true,
            instructions: true,
            mcp: false,
        },
        false,
    )
}

fn check_agent_sync_status(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: StatusArgs = parse(arguments)?;
    let target = target(cx, args.target_location.as_deref(), args.tool.as_deref())?;
    let files = haivemind_onboard::files_for(
        target.tool,
        target.location,
        &connection(cx, None),
        Parts {
            commands: true,
            instructions: true,
            mcp: false,
        },
    )
    .map_err(onboard_error)?;
    let states = if local(cx) {
        haivemind_onboard::status(&target.base, target.tool, target.location, &files)
            .map_err(onboard_error)?
    } else {
        let to_map = |list: &[ReportedFile]| -> BTreeMap<String, String> {
            list.iter()
                .map(|f| (f.path.clone(), f.sha256.clone()))
                .collect()
        };
        haivemind_onboard::status_from_hashes(&files, &to_map(&args.files), &to_map(&args.written))
    };
    let mut summary = BTreeMap::new();
    for state in [
        FileState::UpToDate,
        FileState::Outdated,
        FileState::UserModified,
        FileState::Missing,
    ] {
        summary.insert(
            state.as_str(),
            states.iter().filter(|(_, s)| *s == state).count(),
        );
    }
    Ok(json!({
        "tool": target.tool.as_str(),
        "location": target.location.as_str(),
        "checked_here": local(cx),
        "files": states.iter().map(|(path, state)| json!({"path": path, "state": state.as_str()})).collect::<Vec<_>>(),
        "summary": summary,
        "command_set_version": haivemind_onboard::COMMAND_SET_VERSION,
    }))
}
