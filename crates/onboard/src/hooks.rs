//! Claude Code hooks: at session start, the context pack of the project the session opens
//! in (`haivemind context --hook`) is injected into the agent's context, so the memory
//! arrives without the agent remembering to search.
//!
//! Our part of `.claude/settings.json` (project) or `~/.claude/settings.json` (personal) is
//! one matcher group under `hooks.SessionStart`, recognised by its command. Everything else
//! in the file (the user's own hooks, permissions, other settings) is left as it was; a file
//! that is not valid JSON is never rewritten.

use std::path::Path;

use serde_json::{Value, json};

use crate::{AgentTool, Kind, OnboardError, PlannedFile, canonical, read_optional, sha256};

/// What our hook's command ends with: how our group is told from the user's.
pub const HOOK_ARGUMENTS: &str = "context --hook";

/// The settings file Claude Code reads hooks from, relative to the base directory.
const SETTINGS: &str = ".claude/settings.json";

/// The hook to install for `tool` (at either location: `.claude/settings.json` under the
/// project or the home directory), running the binary `command`; only Claude Code has
/// hooks.
/// With `remote`, the hook asks that server (`--remote URL`, token from
/// `$HAIVEMIND_TOKEN`) instead of this machine's data directory.
pub fn planned(tool: AgentTool, command: &str, remote: Option<&str>) -> Option<PlannedFile> {
    if tool != AgentTool::Claude {
        return None;
    }
    let content = canonical(&group(command, remote));
    Some(PlannedFile {
        path: SETTINGS.into(),
        kind: Kind::Hook,
        sha256: sha256(&content),
        content,
    })
}

/// `text` as one word for the shell that runs hook commands.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@=,".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn group(command: &str, remote: Option<&str>) -> Value {
    let mut quoted = shell_word(command);
    if let Some(url) = remote {
        quoted = format!("{quoted} --remote {}", shell_word(url));
    }
    json!({
        "matcher": "startup|resume|clear|compact",
        "hooks": [{
            "type": "command",
            "command": format!("{quoted} {HOOK_ARGUMENTS}"),
            "timeout": 20,
        }],
    })
}

fn is_ours(group: &Value) -> bool {
    group["hooks"].as_array().is_some_and(|hooks| {
        hooks.iter().any(|hook| {
            hook["command"]
                .as_str()
                .is_some_and(|c| c.trim_end().ends_with(HOOK_ARGUMENTS))
        })
    })
}

fn parse(path: &Path, text: &str) -> Result<Value, OnboardError> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| OnboardError::BadJson {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(OnboardError::BadJson {
            path: path.to_path_buf(),
            detail: "the top level is not an object".into(),
        });
    }
    Ok(value)
}

/// Our group as it is on disk (canonical JSON), if there is one.
pub(crate) fn current(path: &Path) -> Result<Option<String>, OnboardError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let value = parse(path, &text)?;
    Ok(value["hooks"]["SessionStart"]
        .as_array()
        .and_then(|groups| groups.iter().find(|g| is_ours(g)))
        .map(canonical))
}

/// Puts our group in, replacing an older one of ours, keeping every other group.
pub(crate) fn put(path: &Path, part: &str) -> Result<String, OnboardError> {
    let mut value = parse(path, &read_optional(path)?.unwrap_or_default())?;
    let ours: Value = serde_json::from_str(part).unwrap_or(Value::Null);
    let not_object = |what: &str| OnboardError::BadJson {
        path: path.to_path_buf(),
        detail: format!("{what} is not an object"),
    };
    let hooks = value
        .as_object_mut()
        .ok_or_else(|| not_object("the top level"))?
        .entry("hooks")
        .or_insert_with(|| json!({}));
    let session_start = hooks
        .as_object_mut()
        .ok_or_else(|| not_object("hooks"))?
        .entry("SessionStart")
        .or_insert_with(|| json!([]));
    let groups = session_start.as_array_mut().ok_or(OnboardError::BadJson {
        path: path.to_path_buf(),
        detail: "hooks.SessionStart is not a list".into(),
    })?;
    groups.retain(|g| !is_ours(g));
    groups.push(ours);
    Ok(canonical(&value) + "\n")
}

/// Takes our group out; an emptied `SessionStart` or `hooks` goes too. Returns what is
/// left of the file (empty when nothing is).
pub(crate) fn remove(path: &Path, text: &str) -> Result<String, OnboardError> {
    let mut value = parse(path, text)?;
    if let Some(hooks) = value.get_mut("hooks").and_then(Value::as_object_mut) {
        if let Some(groups) = hooks.get_mut("SessionStart").and_then(Value::as_array_mut) {
            groups.retain(|g| !is_ours(g));
            if groups.is_empty() {
                hooks.remove("SessionStart");
            }
        }
        if hooks.is_empty()
            && let Some(object) = value.as_object_mut()
        {
            object.remove("hooks");
        }
    }
    Ok(if value.as_object().is_some_and(|o| o.is_empty()) {
        String::new()
    } else {
        canonical(&value) + "\n"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_group_joins_the_users_hooks_and_leaves_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let users = json!({
            "permissions": {"allow": ["Bash(ls)"]},
            "hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "echo hi"}]}],
                      "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]},
        });
        std::fs::write(&path, users.to_string()).unwrap();
        let part = planned(AgentTool::Claude, "/opt/my tools/haivemind", None)
            .unwrap()
            .content;
        let written = put(&path, &part).unwrap();
        std::fs::write(&path, &written).unwrap();
        let value: Value = serde_json::from_str(&written).unwrap();
        let groups = value["hooks"]["SessionStart"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[1]["hooks"][0]["command"],
            "'/opt/my tools/haivemind' context --hook"
        );
        assert_eq!(value["permissions"], users["permissions"]);
        assert_eq!(current(&path).unwrap().as_deref(), Some(part.as_str()));
        // Installing again replaces ours rather than adding a second.
        let again: Value = serde_json::from_str(&put(&path, &part).unwrap()).unwrap();
        assert_eq!(again["hooks"]["SessionStart"].as_array().unwrap().len(), 2);
        let rest: Value = serde_json::from_str(&remove(&path, &written).unwrap()).unwrap();
        assert_eq!(rest, users, "removing ours restores the user's file");
        assert_eq!(
            remove(&path, &put(&dir.path().join("none"), &part).unwrap()).unwrap(),
            ""
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            put(&path, &part),
            Err(OnboardError::BadJson { .. })
        ));
        assert!(planned(AgentTool::Cursor, "haivemind", None).is_none());
        let remote = planned(AgentTool::Claude, "hv", Some("https://hub:8900/mcp")).unwrap();
        assert!(
            remote
                .content
                .contains("hv --remote https://hub:8900/mcp context --hook")
        );
    }
}
