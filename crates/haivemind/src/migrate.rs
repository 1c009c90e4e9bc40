//! `haivemind migrate --to URL | --from URL`: moves a whole store between this node's
//! SQLite file and a hub's PostgreSQL database, table by table in batches, into a target
//! that must hold nothing, and proves the copy by equal digests of every table.

use anyhow::{Context, Result, bail};
use haivemind_core::Config;
use haivemind_core::audit::AuditEvent;
use haivemind_store::Store;
use haivemind_store::tables::{Cell, TABLES};
use serde_json::{Map, Value, json};

use crate::commands::progress_bar;
use crate::node::{open_audit, open_hub_store, open_sqlite};
use crate::output::Printer;

/// Rows written per transaction: big enough to be quick, small enough to show progress.
const BATCH_ROWS: usize = 500;

fn describe(store: &Store) -> String {
    match store.postgres() {
        Some(database) => format!("the PostgreSQL database {}", database.target()),
        None => format!("the SQLite file {}", store.path().display()),
    }
}

pub fn run(
    config: &Config,
    printer: &Printer,
    to: Option<String>,
    from: Option<String>,
) -> Result<()> {
    let (url, into_postgres) = match (to, from) {
        (Some(url), None) => (url, true),
        (None, Some(url)) => (url, false),
        _ => bail!("give exactly one of --to and --from"),
    };
    let url = Some(url.as_str()).filter(|u| !u.is_empty());
    if url.is_none() && config.storage.postgres.url.is_none() {
        bail!(
            "no database to migrate {}: give its URL, or set storage.postgres.url or HAIVEMIND_DATABASE_URL",
            if into_postgres { "to" } else { "from" }
        );
    }
    let hub = open_hub_store(config, url)?;
    let node = open_sqlite(config)?;
    let (source, target) = if into_postgres {
        (&node, &hub)
    } else {
        (&hub, &node)
    };
    let database = hub.postgres().context("the hub store is on PostgreSQL")?;
    if !target.holds_nothing()? {
        bail!(
            "{} is not empty: a store is only moved into an empty one (nothing there is overwritten or merged; to merge stores, let them replicate)",
            describe(target)
        );
    }

    let mut counts = Map::new();
    let total: u64 = TABLES
        .iter()
        .map(|table| source.count_rows(table))
        .sum::<Result<u64, _>>()?;
    let bar = progress_bar(total, "copying rows");
    for table in TABLES {
        let mut batch: Vec<Vec<Cell>> = Vec::with_capacity(BATCH_ROWS);
        let mut copied = 0u64;
        source
            .read_rows::<anyhow::Error>(table, |row| {
                batch.push(row);
                if batch.len() >= BATCH_ROWS {
                    target.write_rows(table, &batch)?;
                    copied += batch.len() as u64;
                    bar.inc(batch.len() as u64);
                    batch.clear();
                }
                Ok(())
            })
            .with_context(|| format!("copying {}", table.name))?;
        if !batch.is_empty() {
            target
                .write_rows(table, &batch)
                .with_context(|| format!("copying {}", table.name))?;
            copied += batch.len() as u64;
            bar.inc(batch.len() as u64);
        }
        counts.insert(table.name.into(), json!(copied));
    }
    bar.finish_and_clear();

    let source_digest = source.table_digest()?;
    let target_digest = target.table_digest()?;
    if source_digest != target_digest {
        bail!(
            "the copy in {} differs from its source (digest {target_digest} against {source_digest}); do not use it",
            describe(target)
        );
    }
    if let Some(audit) = open_audit(config) {
        audit.record(
            AuditEvent::new("store_migrated")
                .with(
                    "direction",
                    if into_postgres {
                        "to_postgres"
                    } else {
                        "from_postgres"
                    },
                )
                .with("database", database.target().to_string())
                .with("token_id", "local")
                .with("transport", "cli"),
        );
    }
    let rows: u64 = counts.values().filter_map(Value::as_u64).sum();
    printer.done(
        json!({
            "from": describe(source),
            "to": describe(target),
            "rows": counts,
            "digest": source_digest,
            "vectors": database.vector_ranking().describe(),
        }),
        &format!(
            "copied {rows} rows from {} to {}; both hold the same rows (digest {})",
            describe(source),
            describe(target),
            &source_digest[..16]
        ),
    );
    Ok(())
}
