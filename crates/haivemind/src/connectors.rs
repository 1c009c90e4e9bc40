//! `haivemind import confluence SPACE` and `haivemind import jira PROJECT`, with progress.

use anyhow::Result;
use haivemind_connectors::{ImportReport, Source};
use haivemind_core::Config;

use crate::node::open_with_model;
use crate::output::Printer;

#[allow(clippy::too_many_arguments)]
pub(crate) fn import(
    config: &Config,
    printer: &Printer,
    system: &str,
    key: &str,
    title: Option<&str>,
    jql: Option<&str>,
    issue_types: &[String],
    limit: Option<usize>,
) -> Result<()> {
    let store = open_with_model(config)?.0;
    let system: &'static str = if system == "confluence" {
        "confluence"
    } else {
        "jira"
    };
    let source = Source::from_config(&config.connectors, system)?;
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} importing {prefix}: {msg} ({elapsed})")
    {
        bar.set_style(style);
    }
    bar.set_prefix(format!("{system} {key}"));
    let mut progress = |report: &ImportReport| {
        bar.set_message(format!(
            "{} fetched, {} new, {} updated, {} unchanged",
            report.fetched, report.created, report.updated, report.unchanged
        ));
        bar.tick();
    };
    let report = if system == "confluence" {
        haivemind_connectors::import_confluence(
            &store,
            &source,
            key,
            title,
            limit,
            None,
            &mut progress,
        )
    } else {
        haivemind_connectors::import_jira(
            &store,
            &source,
            key,
            jql,
            issue_types,
            limit,
            None,
            &mut progress,
        )
    };
    bar.finish_and_clear();
    let report = report?;
    if report.created > 0 && store.embedder_model().is_some() {
        store.embed_missing(|_| {})?;
    }
    let mut value = report.to_json();
    value["source"] = serde_json::json!(format!("{system}:{key}"));
    printer.done(
        value,
        &format!(
            "{system} {key}: {} fetched in {} page(s): {} new, {} updated, {} unchanged",
            report.fetched, report.pages, report.created, report.updated, report.unchanged
        ),
    );
    Ok(())
}
