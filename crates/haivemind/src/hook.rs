//! `haivemind context --hook`: the Claude Code SessionStart hook `haivemind install`
//! registers. It reads the hook's JSON from stdin, names the project after the git
//! repository the session opens in, and answers with the context pack as the hook's
//! `additionalContext`, which Claude Code adds to the agent's context.
//!
//! A hook must never stand in the way of a session: whatever goes wrong is logged to
//! stderr (which Claude Code shows only in its debug log) and the hook exits 0 silently.

use std::io::Read;
use std::path::{Path, PathBuf};

use haivemind_core::Config;
use serde_json::{Value, json};

use crate::node::open_with_model;

/// The most of stdin read: a hook's input is a few hundred bytes.
const MAX_HOOK_INPUT: u64 = 64 * 1024;

pub(crate) fn session_start(config: &Config, max_tokens: usize) {
    match answer(config, max_tokens) {
        Ok(Some(output)) => println!("{output}"),
        Ok(None) => {}
        Err(error) => tracing::warn!("the session-start hook added no context: {error:#}"),
    }
}

fn answer(config: &Config, max_tokens: usize) -> anyhow::Result<Option<Value>> {
    let mut input = String::new();
    std::io::stdin()
        .take(MAX_HOOK_INPUT)
        .read_to_string(&mut input)?;
    let hook: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
    let cwd = hook["cwd"]
        .as_str()
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok());
    let project = cwd.as_deref().and_then(project_of);
    let store = open_with_model(config)?.0;
    // Memories of this project and of none; a directory name that is not a valid project
    // name only steers the ranking.
    let valid = project
        .clone()
        .filter(|p| haivemind_core::memory::check_name("project", p).is_ok());
    let pack = store.context(&haivemind_store::ContextQuery {
        query: project.clone(),
        project: valid,
        agent_id: None,
        max_tokens,
        hide_restricted: false,
    })?;
    if pack.memories.is_empty() && pack.text.trim().is_empty() {
        return Ok(None);
    }
    let heading = match &project {
        Some(project) => format!(
            "hAIveMind, the team's collective memory, on project {project} (injected at session start; search_memories for more):\n\n"
        ),
        None => "hAIveMind, the team's collective memory (injected at session start; search_memories for more):\n\n".to_string(),
    };
    Ok(Some(json!({
        "hookSpecificOutput": {
            "hookEventName": "SessionStart",
            "additionalContext": format!("{heading}{}", pack.text.trim_end()),
        }
    })))
}

/// The project a directory belongs to: the name of the enclosing git repository, else the
/// directory's own name.
fn project_of(dir: &Path) -> Option<String> {
    let root = dir
        .ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(dir);
    root.file_name()
        .map(|n| n.to_string_lossy().chars().take(128).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_is_the_enclosing_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("payments-api");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(repo.join("src/db")).unwrap();
        assert_eq!(
            project_of(&repo.join("src/db")).as_deref(),
            Some("payments-api")
        );
        let loose = dir.path().join("notes");
        std::fs::create_dir_all(&loose).unwrap();
        assert_eq!(project_of(&loose).as_deref(), Some("notes"));
    }
}
