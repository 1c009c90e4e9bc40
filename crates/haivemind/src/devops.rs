//! `haivemind incidents` and `haivemind drift NAME`.

use anyhow::Result;
use haivemind_core::Config;
use haivemind_store::IncidentQuery;
use serde_json::{Value, json};

use crate::node::open;
use crate::output::Printer;

/// `haivemind incidents [--status S] [--severity S] [--system X] [--limit N]`.
pub(crate) fn incidents(
    config: &Config,
    printer: &Printer,
    status: Option<String>,
    severity: Option<String>,
    system: Option<String>,
    limit: usize,
) -> Result<()> {
    let store = open(config)?;
    let incidents = store.list_incidents(&IncidentQuery {
        status,
        severity,
        system,
        since_ms: None,
        limit,
    })?;
    let mut text = format!("{} incident(s)", incidents.len());
    let mut list = Vec::new();
    for memory in &incidents {
        let meta = &memory.metadata["incident"];
        let systems: Vec<&str> = meta["affected_systems"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        text.push_str(&format!(
            "\n  {}  {:<8} {:<13} {}  [{}]  {}",
            memory.id,
            meta["severity"].as_str().unwrap_or("?"),
            meta["status"].as_str().unwrap_or("?"),
            haivemind_core::time_format::ms_to_rfc3339(memory.created_at_ms),
            systems.join(", "),
            meta["title"].as_str().unwrap_or("")
        ));
        let mut value = haivemind_core::memory::json::to_json(memory);
        value["incident_id"] = json!(memory.id.to_string());
        value["incident"] = meta.clone();
        list.push(value);
    }
    printer.done(json!({"incidents": list, "total": incidents.len()}), &text);
    Ok(())
}

/// `haivemind drift NAME`.
pub(crate) fn drift(config: &Config, printer: &Printer, name: &str) -> Result<()> {
    let store = open(config)?;
    let drift = store.config_drift(name)?;
    let newest = &drift.newest.metadata["config"];
    let mut text = format!(
        "{name}: newest version {} ({})",
        newest["version"],
        newest["sha256"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(12)
            .collect::<String>()
    );
    for machine in &drift.machines {
        text.push_str(&format!(
            "\n  {:<24} v{:<4} {}",
            machine.machine_id,
            machine.version,
            if machine.drifted {
                "DRIFTED"
            } else {
                "in sync"
            }
        ));
        if let Some(diff) = &machine.diff {
            for line in diff.lines() {
                text.push_str(&format!("\n    {line}"));
            }
        }
    }
    let machines: Vec<Value> = drift
        .machines
        .iter()
        .map(|m| json!({"machine_id": m.machine_id, "version": m.version, "sha256": m.sha256, "drifted": m.drifted, "diff": m.diff}))
        .collect();
    printer.done(
        json!({"config_name": name, "newest_version": newest["version"], "machines": machines}),
        &text,
    );
    Ok(())
}
