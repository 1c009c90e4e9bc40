//! Connector tools: import Confluence pages and Jira issues as memories
//! (`haivemind-connectors` does the work; docs/CONNECTORS.md).

use haivemind_connectors::{ConnectorError, ImportReport, Source};
use haivemind_core::security::Role;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolContext, ToolEntry, schema_of};
use crate::arguments::parse;
use crate::error::ToolError;

pub(super) const TOOLS: &[ToolEntry] = &[
    ToolEntry {
        name: "fetch_from_confluence",
        description: "Import the pages of a Confluence space (or one page by title) as memories, following every \
                      page of results: readable text, one memory per page (category from \
                      connectors.confluence.space_category_mapping, default runbooks), page id, version, title and \
                      URL in metadata. Re-importing changes nothing; a newer version replaces the text.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<ConfluenceArgs>,
        handler: fetch_from_confluence,
    },
    ToolEntry {
        name: "fetch_from_jira",
        description: "Import a Jira project's issues (narrowed by jql and issue_types) as memories: Bug and Incident \
                      issues to incidents, others to project, with key, type, status and updated in metadata. Works \
                      with Jira Data Center and Jira Cloud.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<JiraArgs>,
        handler: fetch_from_jira,
    },
    ToolEntry {
        name: "sync_external_knowledge",
        description: "Sync every configured Confluence space and Jira project (or only the given sources: \
                      confluence, jira, confluence:SPACE, jira:PROJECT), fetching only what changed since each one's \
                      last complete run.",
        read_only: false,
        destructive: false,
        idempotent: true,
        least_role: Role::Agent,
        schema: schema_of::<SyncArgs>,
        handler: sync_external_knowledge,
    },
];

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConfluenceArgs {
    /// The space key, like OPS.
    space_key: String,
    /// Only the page with this title.
    #[serde(default)]
    page_title: Option<String>,
    /// At most this many pages.
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct JiraArgs {
    /// The project key, like OPS.
    project_key: String,
    /// More JQL, ANDed with the project.
    #[serde(default)]
    jql: Option<String>,
    /// Only these issue types, like ["Bug", "Incident"].
    #[serde(default)]
    issue_types: Vec<String>,
    /// At most this many issues (default 50).
    #[serde(default = "default_jira_limit")]
    limit: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SyncArgs {
    /// confluence, jira, confluence:SPACE or jira:PROJECT; default every configured one.
    #[serde(default)]
    sources: Vec<String>,
}

fn default_jira_limit() -> u32 {
    50
}

/// A connector failure as a tool error an agent can act on.
pub(crate) fn connector_error(error: ConnectorError) -> ToolError {
    let code = match &error {
        ConnectorError::NotConfigured(_) => "not_configured",
        ConnectorError::Authentication { .. } => "authentication",
        ConnectorError::Failed { .. } => "upstream_failed",
        ConnectorError::Malformed { .. } => "upstream_malformed",
        ConnectorError::Store(_) => {
            let ConnectorError::Store(store) = error else {
                unreachable!()
            };
            return ToolError::Store(store);
        }
    };
    ToolError::External {
        code,
        message: error.to_string(),
    }
}

fn report(system: &str, key: &str, report: &ImportReport) -> Value {
    let mut value = report.to_json();
    value["source"] = json!(format!("{system}:{key}"));
    value
}

fn fetch_from_confluence(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: ConfluenceArgs = parse(arguments)?;
    let source =
        Source::from_config(&cx.server.connectors, "confluence").map_err(connector_error)?;
    let imported = haivemind_connectors::import_confluence(
        &cx.store,
        &source,
        &args.space_key,
        args.page_title.as_deref(),
        args.limit.map(|l| l as usize),
        None,
        &mut |_| {},
    )
    .map_err(connector_error)?;
    Ok(report("confluence", &args.space_key, &imported))
}

fn fetch_from_jira(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: JiraArgs = parse(arguments)?;
    let source = Source::from_config(&cx.server.connectors, "jira").map_err(connector_error)?;
    let imported = haivemind_connectors::import_jira(
        &cx.store,
        &source,
        &args.project_key,
        args.jql.as_deref(),
        &args.issue_types,
        Some(args.limit as usize),
        None,
        &mut |_| {},
    )
    .map_err(connector_error)?;
    Ok(report("jira", &args.project_key, &imported))
}

fn sync_external_knowledge(
    cx: &ToolContext,
    arguments: Option<Map<String, Value>>,
) -> Result<Value, ToolError> {
    let args: SyncArgs = parse(arguments)?;
    let results = haivemind_connectors::sync_all(
        &cx.store,
        &cx.server.connectors,
        &args.sources,
        &mut |_, _| {},
    );
    if results.is_empty() {
        return Err(ToolError::External {
            code: "not_configured",
            message: "no sources to sync: list them in connectors.confluence.spaces and connectors.jira.projects".into(),
        });
    }
    let sources: Vec<Value> = results
        .into_iter()
        .map(|(name, outcome)| match outcome {
            Ok(imported) => {
                let mut value = imported.to_json();
                value["source"] = json!(name);
                value["ok"] = json!(true);
                value
            }
            Err(error) => json!({"source": name, "ok": false, "error": error.to_string()}),
        })
        .collect();
    Ok(json!({"sources": sources, "total": sources.len()}))
}
