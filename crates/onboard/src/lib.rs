//! Agent onboarding: hAIveMind's slash commands, its section of the agent's instructions
//! file (`CLAUDE.md`, `AGENTS.md`) and its MCP registration (`.mcp.json`), installed where
//! the agent tool reads them, kept up to date, and never clobbering the user's own edits.
//!
//! Everything written is recorded in a manifest (path → sha256 of what was written). On
//! the next install a file is:
//! - written when it does not exist;
//! - replaced when its content is still what the manifest says was written (the user did
//!   not touch it) and the shipped content changed;
//! - left alone and reported when the user edited it, unless `force`.
//!
//! `clean` removes only what the manifest lists and the user has not changed. The planning
//! half ([`files_for`]) is pure, so a remote server can hand the same files to an agent to
//! write on its own machine.
#![deny(missing_docs)]

mod hooks;

pub use hooks::{HOOK_ARGUMENTS, planned as hook_file};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The version of the command set; part of the manifest and of the instructions section.
pub const COMMAND_SET_VERSION: u32 = 1;

const BEGIN_MARKER: &str = "<!-- haivemind:begin";
const END_MARKER: &str = "<!-- haivemind:end -->";
const MANIFEST_NAME: &str = "haivemind-manifest.json";

/// The commands, by file name.
const COMMANDS: &[(&str, &str)] = &[
    ("hv-sync.md", include_str!("../commands/hv-sync.md")),
    ("hv-status.md", include_str!("../commands/hv-status.md")),
    ("hv-install.md", include_str!("../commands/hv-install.md")),
    (
        "hv-broadcast.md",
        include_str!("../commands/hv-broadcast.md"),
    ),
    ("hv-query.md", include_str!("../commands/hv-query.md")),
    ("hv-delegate.md", include_str!("../commands/hv-delegate.md")),
    ("hv-tasks.md", include_str!("../commands/hv-tasks.md")),
    ("remember.md", include_str!("../commands/remember.md")),
    ("recall.md", include_str!("../commands/recall.md")),
];

/// Why onboarding failed.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file we must merge into is not valid JSON; it is left as it is.
    #[error("{path}: not valid JSON ({detail}); fix it or move it away, then install again")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The combination asked for does not exist.
    #[error("{0}")]
    Unsupported(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OnboardError + '_ {
    move |source| OnboardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The agent tool whose files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTool {
    /// Claude Code: `.claude/commands`, `CLAUDE.md`, `.mcp.json`.
    Claude,
    /// Cursor: `.cursor/commands`, `AGENTS.md`, `.cursor/mcp.json`.
    Cursor,
    /// Codex: `~/.codex/prompts`, `AGENTS.md`.
    Codex,
}

impl AgentTool {
    /// Reads `claude`, `cursor` or `codex`.
    pub fn parse(text: &str) -> Result<Self, OnboardError> {
        match text {
            "claude" => Ok(AgentTool::Claude),
            "cursor" => Ok(AgentTool::Cursor),
            "codex" => Ok(AgentTool::Codex),
            other => Err(OnboardError::Unsupported(format!(
                "tool: unknown {other:?}; expected claude, cursor or codex"
            ))),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentTool::Claude => "claude",
            AgentTool::Cursor => "cursor",
            AgentTool::Codex => "codex",
        }
    }
}

/// Where the files go: the user's home (every project) or one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Under the home directory.
    Personal,
    /// Under the project directory.
    Project,
}

impl Location {
    /// Reads `personal` or `project`; `auto` is a project when `project_dir` looks like one
    /// (a `.git`, `.claude`, `CLAUDE.md` or `.mcp.json` there), else personal.
    pub fn parse(text: &str, project_dir: &Path) -> Result<Self, OnboardError> {
        match text {
            "personal" => Ok(Location::Personal),
            "project" => Ok(Location::Project),
            "auto" => Ok(
                if [".git", ".claude", "CLAUDE.md", ".mcp.json"]
                    .iter()
                    .any(|marker| project_dir.join(marker).exists())
                {
                    Location::Project
                } else {
                    Location::Personal
                },
            ),
            other => Err(OnboardError::Unsupported(format!(
                "target_location: unknown {other:?}; expected auto, personal or project"
            ))),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Personal => "personal",
            Location::Project => "project",
        }
    }
}

/// What one file is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole file we own (a command).
    Command,
    /// Our marked section of an instructions file.
    Section,
    /// Our entry in an MCP configuration file.
    McpEntry,
    /// Our session-start hook in Claude Code's settings file.
    Hook,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Section => "section",
            Kind::McpEntry => "mcp_entry",
            Kind::Hook => "hook",
        }
    }
}

/// One file to install: its path relative to the base directory (home or project), and
/// our part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFile {
    /// Relative to the base directory, `/`-separated.
    pub path: String,
    /// What it is to us.
    pub kind: Kind,
    /// A command's whole text, the section's text (markers included), or the MCP entry's
    /// JSON.
    pub content: String,
    /// SHA-256 of `content`, hex.
    pub sha256: String,
}

/// Hex SHA-256.
pub fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a tool keeps each kind of file, relative to the base directory.
struct Paths {
    commands: &'static str,
    instructions: Option<&'static str>,
    mcp: Option<&'static str>,
    manifest: &'static str,
}

fn paths(tool: AgentTool, location: Location) -> Result<Paths, OnboardError> {
    use AgentTool::*;
    use Location::*;
    Ok(match (tool, location) {
        (Claude, Project) => Paths {
            commands: ".claude/commands",
            instructions: Some("CLAUDE.md"),
            mcp: Some(".mcp.json"),
            manifest: ".claude",
        },
        (Claude, Personal) => Paths {
            commands: ".claude/commands",
            instructions: Some(".claude/CLAUDE.md"),
            mcp: Some(".claude.json"),
            manifest: ".claude",
        },
        (Cursor, Project) => Paths {
            commands: ".cursor/commands",
            instructions: Some("AGENTS.md"),
            mcp: Some(".cursor/mcp.json"),
            manifest: ".cursor",
        },
        (Cursor, Personal) => Paths {
            commands: ".cursor/commands",
            instructions: None,
            mcp: Some(".cursor/mcp.json"),
            manifest: ".cursor",
        },
        (Codex, Personal) => Paths {
            commands: ".codex/prompts",
            instructions: Some(".codex/AGENTS.md"),
            mcp: None,
            manifest: ".codex",
        },
        (Codex, Project) => {
            return Err(OnboardError::Unsupported(
                "codex reads prompts from ~/.codex/prompts only: install with personal".into(),
            ));
        }
    })
}

/// How the agent reaches the server: this machine's binary over stdio, or a remote URL.
#[derive(Debug, Clone)]
pub enum Connection {
    /// `command mcp` over stdio.
    Stdio {
        /// The `haivemind` binary to run.
        command: String,
    },
    /// Streamable HTTP at this URL (`…/mcp`), with the token from `$HAIVEMIND_TOKEN`.
    Remote {
        /// The server's MCP URL.
        url: String,
    },
}

/// The MCP server entry for `connection`.
pub fn mcp_entry(connection: &Connection) -> Value {
    match connection {
        Connection::Stdio { command } => json!({"command": command, "args": ["mcp"]}),
        Connection::Remote { url } => {
            let url = url.trim_end_matches('/');
            let url = if url.ends_with("/mcp") {
                url.to_string()
            } else {
                format!("{url}/mcp")
            };
            json!({
                "type": "http",
                "url": url,
                "headers": {"Authorization": "Bearer ${HAIVEMIND_TOKEN}"},
            })
        }
    }
}

/// The section of the instructions file.
pub fn instructions_section() -> String {
    format!(
        "{BEGIN_MARKER} v{COMMAND_SET_VERSION} (managed by `haivemind install`; edits here are kept and reported) -->
## hAIveMind: the collective memory

This agent is part of a hAIveMind fleet (MCP server `haivemind`).
- Before a task, search the collective: `/recall <topic>` or `search_memories`.
- When you learn something another agent would want, `/remember <it>` (`store_memory`
  with a category and tags). Secrets are `confidential`, personal data `pii`: they never
  leave this machine.
- Once per session: `register_agent` with your role and capabilities, then `get_my_tasks`
  (`/hv-tasks`); claim before working, complete with a result.
- Hand work on with `/hv-delegate <task>`; tell everyone with `/hv-broadcast <message>`.
- `/hv-status` shows the fleet; `/hv-sync` keeps these commands current.
{END_MARKER}
"
    )
}

/// The files to install for `tool` at `location`: the commands, the instructions section
/// and the MCP entry, with paths relative to the base directory.
pub fn files_for(
    tool: AgentTool,
    location: Location,
    connection: &Connection,
    parts: Parts,
) -> Result<Vec<PlannedFile>, OnboardError> {
    let paths = paths(tool, location)?;
    let mut files = Vec::new();
    let mut add = |path: String, kind: Kind, content: String| {
        files.push(PlannedFile {
            sha256: sha256(&content),
            path,
            kind,
            content,
        });
    };
    if parts.commands {
        for (name, text) in COMMANDS {
            add(
                format!("{}/{name}", paths.commands),
                Kind::Command,
                (*text).to_string(),
            );
        }
    }
    if parts.instructions
        && let Some(file) = paths.instructions
    {
        add(file.to_string(), Kind::Section, instructions_section());
    }
    if parts.mcp
        && let Some(file) = paths.mcp
    {
        add(
            file.to_string(),
            Kind::McpEntry,
            canonical(&mcp_entry(connection)),
        );
    }
    Ok(files)
}

/// Which parts to install.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// The slash commands.
    pub commands: bool,
    /// The instructions section.
    pub instructions: bool,
    /// The MCP registration.
    pub mcp: bool,
}

impl Parts {
    /// Everything.
    pub const ALL: Parts = Parts {
        commands: true,
        instructions: true,
        mcp: true,
    };
}

fn canonical(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The state of one installed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// As shipped now.
    UpToDate,
    /// As we wrote it, but the shipped version changed: the next install replaces it.
    Outdated,
    /// Changed by the user since we wrote it: left alone unless forced.
    UserModified,
    /// Not there.
    Missing,
}

impl FileState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::UpToDate => "up_to_date",
            FileState::Outdated => "outdated",
            FileState::UserModified => "user_modified",
            FileState::Missing => "missing",
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutcome {
    /// Relative path.
    pub path: String,
    /// `written`, `updated`, `unchanged`, `kept_user_modified`, `replaced_user_modified`,
    /// `removed`, `not_ours` (clean left it).
    pub action: &'static str,
}

/// The manifest of what was written, in the base directory.
#[derive(Debug, Default)]
struct Manifest {
    files: BTreeMap<String, (String, Kind)>,
}

impl Manifest {
    fn path(base: &Path, tool: AgentTool, location: Location) -> Result<PathBuf, OnboardError> {
        Ok(base
            .join(paths(tool, location)?.manifest)
            .join(MANIFEST_NAME))
    }

    fn load(path: &Path) -> Result<Self, OnboardError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(path)(e)),
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| OnboardError::BadJson {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let mut files = BTreeMap::new();
        for (file, entry) in value["files"].as_object().into_iter().flatten() {
            let kind = match entry["kind"].as_str() {
                Some("section") => Kind::Section,
                Some("mcp_entry") => Kind::McpEntry,
                Some("hook") => Kind::Hook,
                _ => Kind::Command,
            };
            if let Some(sha) = entry["sha256"].as_str() {
                files.insert(file.clone(), (sha.to_string(), kind));
            }
        }
        Ok(Self { files })
    }

    fn save(&self, path: &Path, tool: AgentTool, location: Location) -> Result<(), OnboardError> {
        if self.files.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
                _ => Ok(()),
            };
        }
        let files: Map<String, Value> = self
            .files
            .iter()
            .map(|(file, (sha, kind))| {
                (file.clone(), json!({"sha256": sha, "kind": kind.as_str()}))
            })
            .collect();
        let value = json!({
            "written_by": format!("haivemind {}", env!("CARGO_PKG_VERSION")),
            "command_set_version": COMMAND_SET_VERSION,
            "tool": tool.as_str(),
            "location": location.as_str(),
            "files": files,
        });
        write_file(path, &canonical(&value))
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), OnboardError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // Write beside, then rename: a crash leaves the old file or the new one, never half.
    let temporary = path.with_extension("haivemind-tmp");
    std::fs::write(&temporary, text).map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

fn read_optional(path: &Path) -> Result<Option<String>, OnboardError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Our section of an instructions file's text: its byte range, markers included.
fn find_section(text: &str) -> Option<(usize, usize)> {
    let start = text.find(BEGIN_MARKER)?;
    let end = text[start..].find(END_MARKER)? + start + END_MARKER.len();
    // The newline after the end marker belongs to the section.
    let end = if text[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Some((start, end))
}

/// Our part of the file at `path` as it is on disk: the command's text, the section, or the
/// MCP entry (canonical JSON).
fn current_part(path: &Path, kind: Kind) -> Result<Option<String>, OnboardError> {
    if kind == Kind::Hook {
        return hooks::current(path);
    }
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    Ok(match kind {
        Kind::Command => Some(text),
        Kind::Section => find_section(&text).map(|(s, e)| text[s..e].to_string()),
        Kind::Hook => None,
        Kind::McpEntry => {
            let value: Value = serde_json::from_str(&text).map_err(|e| OnboardError::BadJson {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
            value
                .get("mcpServers")
                .and_then(|s| s.get("haivemind"))
                .map(canonical)
        }
    })
}

/// Puts our `part` into the file at `path` (whole file, section, or MCP entry), leaving
/// everything else in it as it was.
fn put_part(path: &Path, kind: Kind, part: &str) -> Result<(), OnboardError> {
    let existing = read_optional(path)?;
    let text = match kind {
        Kind::Command => part.to_string(),
        Kind::Hook => hooks::put(path, part)?,
        Kind::Section => match existing {
            None => part.to_string(),
            Some(text) => match find_section(&text) {
                Some((start, end)) => format!("{}{part}{}", &text[..start], &text[end..]),
                None if text.is_empty() => part.to_string(),
                None => {
                    let separator = if text.ends_with("\n\n") {
                        ""
                    } else if text.ends_with('\n') {
                        "\n"
                    } else {
                        "\n\n"
                    };
                    format!("{text}{separator}{part}")
                }
            },
        },
        Kind::McpEntry => {
            let mut value: Value = match existing {
                None => json!({}),
                Some(text) if text.trim().is_empty() => json!({}),
                Some(text) => serde_json::from_str(&text).map_err(|e| OnboardError::BadJson {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?,
            };
            let entry: Value = serde_json::from_str(part).unwrap_or(Value::Null);
            let Some(object) = value.as_object_mut() else {
                return Err(OnboardError::BadJson {
                    path: path.to_path_buf(),
                    detail: "the top level is not an object".into(),
                });
            };
            let servers = object.entry("mcpServers").or_insert_with(|| json!({}));
            let Some(servers) = servers.as_object_mut() else {
                return Err(OnboardError::BadJson {
                    path: path.to_path_buf(),
                    detail: "mcpServers is not an object".into(),
                });
            };
            servers.insert("haivemind".into(), entry);
            canonical(&value) + "\n"
        }
    };
    write_file(path, &text)
}

/// Takes our part out of the file at `path`; removes the file when nothing else is left.
fn remove_part(path: &Path, kind: Kind) -> Result<(), OnboardError> {
    let Some(text) = read_optional(path)? else {
        return Ok(());
    };
    let rest = match kind {
        Kind::Command => String::new(),
        Kind::Hook => hooks::remove(path, &text)?,
        Kind::Section => match find_section(&text) {
            Some((start, end)) => {
                let before = text[..start].trim_end_matches('\n');
                let after = &text[end..];
                if before.is_empty() {
                    after.trim_start_matches('\n').to_string()
                } else if after.trim().is_empty() {
                    format!("{before}\n")
                } else {
                    format!("{before}\n\n{}", after.trim_start_matches('\n'))
                }
            }
            None => text,
        },
        Kind::McpEntry => {
            let mut value: Value =
                serde_json::from_str(&text).map_err(|e| OnboardError::BadJson {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
            if let Some(servers) = value.get_mut("mcpServers").and_then(Value::as_object_mut) {
                servers.remove("haivemind");
            }
            let empty = value.as_object().is_some_and(|o| {
                o.len() == 1 && o["mcpServers"].as_object().is_some_and(Map::is_empty)
            });
            if empty {
                String::new()
            } else {
                canonical(&value) + "\n"
            }
        }
    };
    if rest.trim().is_empty() {
        std::fs::remove_file(path).map_err(io(path))
    } else {
        write_file(path, &rest)
    }
}

fn state_of(current: Option<&str>, shipped: &str, written: Option<&str>) -> FileState {
    match current {
        None => FileState::Missing,
        Some(current) if current == shipped => FileState::UpToDate,
        Some(current) if written == Some(sha256(current).as_str()) => FileState::Outdated,
        Some(_) => FileState::UserModified,
    }
}

/// The state of each of `files` under `base`.
pub fn status(
    base: &Path,
    tool: AgentTool,
    location: Location,
    files: &[PlannedFile],
) -> Result<Vec<(String, FileState)>, OnboardError> {
    let manifest = Manifest::load(&Manifest::path(base, tool, location)?)?;
    files
        .iter()
        .map(|file| {
            let current = current_part(&base.join(&file.path), file.kind)?;
            let written = manifest.files.get(&file.path).map(|(sha, _)| sha.as_str());
            Ok((
                file.path.clone(),
                state_of(current.as_deref(), &file.content, written),
            ))
        })
        .collect()
}

/// The state of each file from hashes an agent reports (for a remote server, which cannot
/// see the agent's disk): `reported` maps path → sha256 of our part as it is there, and
/// `written` path → sha256 of what was last written (the agent's manifest), when known.
pub fn status_from_hashes(
    files: &[PlannedFile],
    reported: &BTreeMap<String, String>,
    written: &BTreeMap<String, String>,
) -> Vec<(String, FileState)> {
    files
        .iter()
        .map(|file| {
            let state = match reported.get(&file.path) {
                None => FileState::Missing,
                Some(sha) if *sha == file.sha256 => FileState::UpToDate,
                Some(sha) if written.get(&file.path) == Some(sha) => FileState::Outdated,
                Some(_) => FileState::UserModified,
            };
            (file.path.clone(), state)
        })
        .collect()
}

/// Installs `files` under `base`, recording them in the manifest. Files the user changed
/// are left alone (and reported) unless `force`.
pub fn install(
    base: &Path,
    tool: AgentTool,
    location: Location,
    files: &[PlannedFile],
    force: bool,
) -> Result<Vec<FileOutcome>, OnboardError> {
    let manifest_path = Manifest::path(base, tool, location)?;
    let mut manifest = Manifest::load(&manifest_path)?;
    let mut outcomes = Vec::new();
    for file in files {
        let path = base.join(&file.path);
        let current = current_part(&path, file.kind)?;
        let written = manifest.files.get(&file.path).map(|(sha, _)| sha.clone());
        let action = match state_of(current.as_deref(), &file.content, written.as_deref()) {
            FileState::UpToDate => "unchanged",
            FileState::Missing => {
                put_part(&path, file.kind, &file.content)?;
                "written"
            }
            FileState::Outdated => {
                put_part(&path, file.kind, &file.content)?;
                "updated"
            }
            FileState::UserModified if force => {
                put_part(&path, file.kind, &file.content)?;
                "replaced_user_modified"
            }
            FileState::UserModified => "kept_user_modified",
        };
        if action != "kept_user_modified" {
            manifest
                .files
                .insert(file.path.clone(), (file.sha256.clone(), file.kind));
        }
        outcomes.push(FileOutcome {
            path: file.path.clone(),
            action,
        });
    }
    manifest.save(&manifest_path, tool, location)?;
    Ok(outcomes)
}

/// Removes what the manifest says was written and the user has not changed since; keeps
/// (and reports) the rest.
pub fn clean(
    base: &Path,
    tool: AgentTool,
    location: Location,
) -> Result<Vec<FileOutcome>, OnboardError> {
    let manifest_path = Manifest::path(base, tool, location)?;
    let mut manifest = Manifest::load(&manifest_path)?;
    let mut outcomes = Vec::new();
    for (file, (sha, kind)) in std::mem::take(&mut manifest.files) {
        let path = base.join(&file);
        let action = match current_part(&path, kind)? {
            None => "already_gone",
            Some(current) if sha256(&current) == sha => {
                remove_part(&path, kind)?;
                "removed"
            }
            Some(_) => {
                manifest.files.insert(file.clone(), (sha, kind));
                "kept_user_modified"
            }
        };
        outcomes.push(FileOutcome { path: file, action });
    }
    manifest.save(&manifest_path, tool, location)?;
    Ok(outcomes)
}

/// The base directory of `location`: the home directory or the project directory.
pub fn base_dir(location: Location, home: &Path, project: &Path) -> PathBuf {
    match location {
        Location::Personal => home.to_path_buf(),
        Location::Project => project.to_path_buf(),
    }
}

/// The shipped command set: every command's file name and sha256 (the versioned
/// manifest of what `install` writes).
pub fn shipped_manifest() -> Value {
    let commands: Map<String, Value> = COMMANDS
        .iter()
        .map(|(name, text)| ((*name).to_string(), json!(sha256(text))))
        .collect();
    json!({
        "command_set_version": COMMAND_SET_VERSION,
        "commands": commands,
        "instructions_section": sha256(&instructions_section()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_claude_code_frontmatter_naming_our_tools() {
        for (name, text) in COMMANDS {
            let front = text
                .strip_prefix("---\n")
                .and_then(|t| t.split_once("\n---\n"))
                .map(|(front, _)| front)
                .unwrap_or_else(|| panic!("{name} has no frontmatter"));
            assert!(front.contains("description: "), "{name}");
            let tools = front
                .lines()
                .find_map(|l| l.strip_prefix("allowed-tools: "))
                .unwrap_or_else(|| panic!("{name} has no allowed-tools"));
            assert!(
                tools.split(", ").all(|t| t.starts_with("mcp__haivemind__")),
                "{name}: {tools}"
            );
        }
    }

    #[test]
    fn a_section_is_replaced_in_place_and_removed_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("CLAUDE.md");
        std::fs::write(&path, "# Mine\n\nkeep this\n").unwrap();
        let section = instructions_section();
        put_part(&path, Kind::Section, &section).unwrap();
        put_part(&path, Kind::Section, &section).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(BEGIN_MARKER).count(), 1);
        assert!(text.starts_with("# Mine\n\nkeep this\n\n"));
        remove_part(&path, Kind::Section).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# Mine\n\nkeep this\n"
        );
    }
}
