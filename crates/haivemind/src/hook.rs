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
use crate::remote::Remote;

/// The most of stdin read: a hook's input is a few hundred bytes.
const MAX_HOOK_INPUT: u64 = 64 * 1024;

/// The hook, answered from this machine's data directory.
pub(crate) fn session_start(config: &Config, max_tokens: usize) {
    finish(answer(|project, valid| {
        let store = open_with_model(config)?.0;
        let pack = store.context(&haivemind_store::ContextQuery {
            query: project,
            project: valid,
            agent_id: None,
            max_tokens,
            hide_restricted: false,
        })?;
        Ok((!pack.memories.is_empty()).then_some(pack.text))
    }));
}

/// The hook, answered by a remote server's get_context.
pub(crate) fn session_start_remote(remote: &Remote, max_tokens: usize) {
    finish(answer(|project, valid| {
        let pack = remote.call(
            "get_context",
            json!({"query": project, "project": valid, "max_tokens": max_tokens}),
        )?;
        let listed = pack["memories"].as_array().is_some_and(|m| !m.is_empty());
        Ok(listed.then(|| pack["context"].as_str().unwrap_or("").to_string()))
    }));
}

fn finish(outcome: anyhow::Result<Option<Value>>) {
    match outcome {
        Ok(Some(output)) => println!("{output}"),
        Ok(None) => {}
        Err(error) => tracing::warn!("the session-start hook added no context: {error:#}"),
    }
}

/// Reads the hook's input and asks `pack(query, project)` for the context text (`None`
/// when there is nothing to say).
fn answer(
    pack: impl FnOnce(Option<String>, Option<String>) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Option<Value>> {
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
    // Memories of this project and of none; a directory name that is not a valid project
    // name only steers the ranking.
    let valid = project
        .clone()
        .filter(|p| haivemind_core::memory::check_name("project", p).is_ok());
    let Some(text) = pack(project.clone(), valid)? else {
        return Ok(None);
    };
    let heading = match &project {
        Some(project) => format!(
            "hAIveMind, the team's collective memory, on project {project} (injected at session start; search_memories for more):\n\n"
        ),
        None => "hAIveMind, the team's collective memory (injected at session start; search_memories for more):\n\n".to_string(),
    };
    Ok(Some(json!({
        "hookSpecificOutput": {
            "hookEventName": "SessionStart",
            "additionalContext": format!("{heading}{}", text.trim_end()),
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
