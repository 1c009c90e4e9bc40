//! `haivemind agents`, `tasks` and `broadcast`: the coordination records of the local file
//! (which `haivemind serve` keeps in sync with the fleet), in the tools' JSON shapes.

use anyhow::Result;
use haivemind_core::Config;
use haivemind_mcp::tools::{broadcast_json, roster_json, task_json};
use haivemind_store::{NewBroadcast, TaskStatus};
use serde_json::{Value, json};

use crate::node::open;
use crate::output::Printer;

/// `haivemind agents [--all]`.
pub(crate) fn agents(config: &Config, printer: &Printer, all: bool) -> Result<()> {
    let store = open(config)?;
    let roster = store.roster(all, config.agent_ttl_ms())?;
    let mut text = format!(
        "{} agent(s), {} active",
        roster.len(),
        roster.iter().filter(|e| e.active).count()
    );
    for entry in &roster {
        let a = &entry.agent;
        text.push_str(&format!(
            "\n  {:<32} {:<16} {:<8} {:<18} open {:>3}  last seen {}  [{}]",
            a.id,
            a.role,
            if entry.active { "active" } else { "inactive" },
            a.machine_id,
            entry.open_tasks,
            haivemind_core::time_format::ms_to_rfc3339(a.last_seen_ms),
            a.capabilities.join(", ")
        ));
    }
    let agents: Vec<Value> = roster.iter().map(roster_json).collect();
    printer.done(json!({"agents": agents, "total": roster.len()}), &text);
    Ok(())
}

/// `haivemind tasks [ID] [--status S] [--agent A] [--limit N]`.
pub(crate) fn tasks(
    config: &Config,
    printer: &Printer,
    id: Option<String>,
    status: Option<String>,
    agent: Option<String>,
    limit: usize,
) -> Result<()> {
    let store = open(config)?;
    if let Some(id) = id {
        let task = store.task(&id)?;
        let mut text = format!(
            "{}  {}  {}\n  {}\n  assigned to: {}  created by: {} on {}",
            task.id,
            task.status.as_str(),
            task.priority.as_str(),
            task.description,
            task.assigned_to.as_deref().unwrap_or("-"),
            task.created_by.as_deref().unwrap_or("-"),
            task.created_on
        );
        if let Some(result) = &task.result {
            text.push_str(&format!("\n  result: {result}"));
        }
        for event in &task.history {
            text.push_str(&format!(
                "\n  {}  {:<8} {:<12} {:<24} {}{}",
                haivemind_core::time_format::ms_to_rfc3339(event.at_ms),
                event.action,
                event.status,
                event.agent_id.as_deref().unwrap_or("-"),
                if event.applied { "" } else { "(not applied) " },
                event.note.as_deref().unwrap_or("")
            ));
        }
        printer.done(task_json(&task), &text);
        return Ok(());
    }
    let status = status
        .map(|s| TaskStatus::parse("--status", &s))
        .transpose()?;
    let tasks = store.list_tasks(status, agent.as_deref(), limit)?;
    let mut text = format!("{} task(s)", tasks.len());
    for task in &tasks {
        text.push_str(&format!(
            "\n  {}  {:<11} {:<8} {:<28} {}",
            task.id,
            task.status.as_str(),
            task.priority.as_str(),
            task.assigned_to.as_deref().unwrap_or("-"),
            task.description.chars().take(60).collect::<String>()
        ));
    }
    let list: Vec<Value> = tasks.iter().map(task_json).collect();
    printer.done(json!({"tasks": list, "total": tasks.len()}), &text);
    Ok(())
}

/// `haivemind broadcast MESSAGE [--severity S] [--category C]`.
pub(crate) fn broadcast(
    config: &Config,
    printer: &Printer,
    message: String,
    severity: &str,
    category: String,
) -> Result<()> {
    let store = open(config)?;
    let memory = store.broadcast(NewBroadcast {
        message,
        category: Some(category),
        severity: severity.to_string(),
        target_roles: Vec::new(),
        confidentiality: haivemind_core::Confidentiality::Normal,
        agent_id: Some(format!("cli@{}", store.machine_id())),
    })?;
    printer.done(
        broadcast_json(&memory),
        &format!(
            "broadcast {} ({severity}); it reaches the fleet as haivemind serve replicates",
            memory.id
        ),
    );
    Ok(())
}
