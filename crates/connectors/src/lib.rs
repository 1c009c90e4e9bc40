//! Connectors: Confluence pages and Jira issues imported as searchable memories, every page
//! of results, as plain text, incrementally, with clear errors (docs/CONNECTORS.md).
//!
//! - Confluence: `/rest/api/content` (`spaceKey`, `expand=body.storage,version`), following
//!   `_links.next` to the end; incremental runs use `/rest/api/content/search` with CQL
//!   `lastmodified >=`.
//! - Jira Data Center: `/rest/api/2/search` (`startAt` / `maxResults` / `total`).
//! - Jira Cloud: `/rest/api/3/search/jql` (`nextPageToken` / `isLast`), descriptions in
//!   Atlassian Document Format.
//!
//! Credentials come from `connectors.*.credentials` or `HAIVEMIND_CONFLUENCE_TOKEN` /
//! `HAIVEMIND_JIRA_TOKEN`, and go nowhere but the `Authorization` header: not into
//! memories, errors or logs. 401/403 is an authentication error; 429 waits for
//! `Retry-After` and goes on; 5xx is retried a few times with backoff, then reported with how
//! far the import got.
#![deny(missing_docs)]

pub mod files;
pub mod http;
pub mod text;

use std::time::Duration;

use base64::Engine;
use haivemind_core::time_format::{ms_to_rfc3339, now_ms};
use haivemind_store::{ExternalDoc, ExternalOutcome, Store, StoreError};
use serde_json::{Map, Value, json};

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connector is not configured (no URL).
    #[error("{0}")]
    NotConfigured(String),
    /// The server refused the credentials.
    #[error(
        "{system} refused the credentials (HTTP {status}): check connectors.{system}.credentials or {variable}"
    )]
    Authentication {
        /// `confluence` or `jira`.
        system: &'static str,
        /// 401 or 403.
        status: u16,
        /// The environment variable that can hold the token.
        variable: &'static str,
    },
    /// The server failed, or could not be reached, after retries.
    #[error(
        "{system}: {detail} (after importing {imported} record(s); running it again resumes safely)"
    )]
    Failed {
        /// `confluence` or `jira`.
        system: &'static str,
        /// What went wrong.
        detail: String,
        /// Records imported before it stopped.
        imported: usize,
    },
    /// The answer was not what the API documents.
    #[error(
        "{system}: unexpected answer from {endpoint}: {detail} (after importing {imported} record(s))"
    )]
    Malformed {
        /// `confluence` or `jira`.
        system: &'static str,
        /// Which endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
        /// Records imported before it stopped.
        imported: usize,
    },
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How to authenticate.
#[derive(Clone)]
enum Auth {
    None,
    Basic(String),
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Basic(_) => "basic (hidden)",
            Auth::Bearer(_) => "bearer (hidden)",
        })
    }
}

/// One configured system.
#[derive(Debug, Clone)]
pub struct Source {
    system: &'static str,
    url: String,
    auth: Auth,
    settings: Map<String, Value>,
    retry_pause: Duration,
}

impl Source {
    /// `connectors.<system>` of `config` (`confluence` or `jira`), with the token from
    /// `HAIVEMIND_<SYSTEM>_TOKEN` when set.
    pub fn from_config(
        config: &Map<String, Value>,
        system: &'static str,
    ) -> Result<Self, ConnectorError> {
        let settings = config
            .get(system)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let url = settings
            .get("url")
            .and_then(Value::as_str)
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| {
                ConnectorError::NotConfigured(format!(
                    "connectors.{system}.url is not set (an http:// or https:// base URL)"
                ))
            })?;
        let credentials = settings.get("credentials").cloned().unwrap_or(Value::Null);
        let username = credentials["username"].as_str().map(str::to_string);
        let variable = token_variable(system);
        let token = std::env::var(variable)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| credentials["token"].as_str().map(str::to_string));
        let auth = match (username, token) {
            (Some(user), Some(token)) => Auth::Basic(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}")),
            ),
            (None, Some(token)) => Auth::Bearer(token),
            _ => Auth::None,
        };
        let retry_pause = Duration::from_millis(
            settings
                .get("retry_pause_ms")
                .and_then(Value::as_u64)
                .unwrap_or(500),
        );
        Ok(Self {
            system,
            url,
            auth,
            settings,
            retry_pause,
        })
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        match &self.auth {
            Auth::None => Vec::new(),
            Auth::Basic(encoded) => vec![("Authorization", format!("Basic {encoded}"))],
            Auth::Bearer(token) => vec![("Authorization", format!("Bearer {token}"))],
        }
    }

    /// GETs `url` as JSON: waits out 429s, retries 5xx and network errors with backoff,
    /// and turns 401/403 into an authentication error.
    fn get_json(&self, url: &str, imported: usize) -> Result<Value, ConnectorError> {
        let endpoint = url
            .strip_prefix(&self.url)
            .unwrap_or(url)
            .split('?')
            .next()
            .unwrap_or("")
            .to_string();
        let mut failures = 0u32;
        let mut waits = 0u32;
        loop {
            let outcome = http::get(url, &self.headers(), Duration::from_secs(60));
            let retry = |failures: &mut u32, detail: String| -> Result<(), ConnectorError> {
                *failures += 1;
                if *failures > 3 {
                    return Err(ConnectorError::Failed {
                        system: self.system,
                        detail,
                        imported,
                    });
                }
                tracing::warn!(system = self.system, %detail, attempt = *failures, "retrying");
                std::thread::sleep(self.retry_pause * 2u32.pow(*failures - 1));
                Ok(())
            };
            let response = match outcome {
                Ok(response) => response,
                Err(error) => {
                    retry(&mut failures, error)?;
                    continue;
                }
            };
            match response.status {
                200 => {
                    return serde_json::from_slice(&response.body).map_err(|e| {
                        ConnectorError::Malformed {
                            system: self.system,
                            endpoint,
                            detail: format!("not JSON ({e})"),
                            imported,
                        }
                    });
                }
                401 | 403 => {
                    return Err(ConnectorError::Authentication {
                        system: self.system,
                        status: response.status,
                        variable: token_variable(self.system),
                    });
                }
                429 => {
                    waits += 1;
                    if waits > 20 {
                        return Err(ConnectorError::Failed {
                            system: self.system,
                            detail: "still rate-limited (429) after 20 waits".into(),
                            imported,
                        });
                    }
                    let seconds = response
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(5)
                        .min(60);
                    tracing::info!(
                        system = self.system,
                        seconds,
                        "rate-limited; waiting as Retry-After says"
                    );
                    std::thread::sleep(Duration::from_secs(seconds));
                }
                status if status >= 500 => {
                    retry(&mut failures, format!("{endpoint} answered HTTP {status}"))?;
                }
                status => {
                    return Err(ConnectorError::Failed {
                        system: self.system,
                        detail: format!(
                            "{endpoint} answered HTTP {status}: {}",
                            String::from_utf8_lossy(&response.body)
                                .chars()
                                .take(200)
                                .collect::<String>()
                        ),
                        imported,
                    });
                }
            }
        }
    }

    fn malformed(&self, endpoint: &str, detail: &str, imported: usize) -> ConnectorError {
        ConnectorError::Malformed {
            system: self.system,
            endpoint: endpoint.to_string(),
            detail: detail.to_string(),
            imported,
        }
    }
}

fn token_variable(system: &str) -> &'static str {
    if system == "confluence" {
        "HAIVEMIND_CONFLUENCE_TOKEN"
    } else {
        "HAIVEMIND_JIRA_TOKEN"
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Records fetched.
    pub fetched: usize,
    /// New memories.
    pub created: usize,
    /// Memories whose text a newer version replaced.
    pub updated: usize,
    /// Records already there at their version.
    pub unchanged: usize,
    /// Pages of results requested.
    pub pages: usize,
}

impl ImportReport {
    fn add(&mut self, outcome: ExternalOutcome) {
        self.fetched += 1;
        match outcome {
            ExternalOutcome::Created => self.created += 1,
            ExternalOutcome::Updated => self.updated += 1,
            ExternalOutcome::Unchanged => self.unchanged += 1,
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({"fetched": self.fetched, "created": self.created, "updated": self.updated,
               "unchanged": self.unchanged, "pages": self.pages})
    }
}

/// "2026-11-27 06:46" from epoch milliseconds (UTC), for CQL and JQL.
fn query_time(ms: i64, separator: char) -> String {
    let text = ms_to_rfc3339(ms);
    let date = text
        .get(..10)
        .unwrap_or("1970-01-01")
        .replace('-', &separator.to_string());
    format!("{date} {}", text.get(11..16).unwrap_or("00:00"))
}

/// Imports the pages of Confluence space `space` (only `title` when given, at most `limit`,
/// only those modified since `since_ms` when given). `progress` is called after each page.
pub fn import_confluence(
    store: &Store,
    source: &Source,
    space: &str,
    title: Option<&str>,
    limit: Option<usize>,
    since_ms: Option<i64>,
    progress: &mut dyn FnMut(&ImportReport),
) -> Result<ImportReport, ConnectorError> {
    haivemind_core::memory::check_name("space_key", space).map_err(StoreError::from)?;
    let category = source
        .settings
        .get("space_category_mapping")
        .and_then(|m| m.get(space))
        .and_then(Value::as_str)
        .unwrap_or("runbooks")
        .to_string();
    let page_size = limit.unwrap_or(usize::MAX).clamp(1, 50);
    let expand = "expand=body.storage,version";
    let mut next = Some(match since_ms {
        Some(since) => {
            let cql = format!(
                "space = \"{space}\" AND type = page AND lastmodified >= \"{}\"",
                query_time(since, '-')
            );
            format!(
                "{}/rest/api/content/search?cql={}&{expand}&limit={page_size}",
                source.url,
                encode(&cql)
            )
        }
        None => {
            let mut url = format!(
                "{}/rest/api/content?spaceKey={}&type=page&{expand}&limit={page_size}&start=0",
                source.url,
                encode(space)
            );
            if let Some(title) = title {
                url.push_str(&format!("&title={}", encode(title)));
            }
            url
        }
    });
    let mut report = ImportReport::default();
    while let Some(url) = next.take() {
        let answer = source.get_json(&url, report.fetched)?;
        report.pages += 1;
        let results = answer["results"].as_array().ok_or_else(|| {
            source.malformed("/rest/api/content", "no results list", report.fetched)
        })?;
        let base = answer["_links"]["base"]
            .as_str()
            .unwrap_or(&source.url)
            .trim_end_matches('/')
            .to_string();
        for page in results {
            if limit.is_some_and(|l| report.fetched >= l) {
                break;
            }
            let id = page["id"]
                .as_str()
                .map(str::to_string)
                .or_else(|| page["id"].as_u64().map(|n| n.to_string()));
            let (Some(id), Some(page_title)) = (id, page["title"].as_str()) else {
                return Err(source.malformed(
                    "/rest/api/content",
                    "a result without id or title",
                    report.fetched,
                ));
            };
            let version = page["version"]["number"].as_u64().unwrap_or(0);
            let html = page["body"]["storage"]["value"].as_str().unwrap_or("");
            let url = page["_links"]["webui"]
                .as_str()
                .map(|w| format!("{base}{w}"));
            let mut extra = Map::new();
            extra.insert("space_key".into(), json!(space));
            extra.insert("page_id".into(), json!(id));
            let (_, outcome) = store.upsert_external(ExternalDoc {
                system: "confluence".into(),
                id: id.clone(),
                version: version.to_string(),
                title: page_title.to_string(),
                text: text::html_to_text(html),
                category: category.clone(),
                url,
                extra,
                tags: vec!["confluence".into(), space.to_lowercase()],
                project: None,
            })?;
            report.add(outcome);
        }
        progress(&report);
        if limit.is_some_and(|l| report.fetched >= l) || results.is_empty() {
            break;
        }
        next = answer["_links"]["next"].as_str().map(|n| {
            if n.starts_with("http://") || n.starts_with("https://") {
                n.to_string()
            } else {
                format!("{base}{n}")
            }
        });
    }
    Ok(report)
}

/// Whether this Jira is Cloud (`connectors.jira.cloud`, else an `atlassian.net` URL).
fn jira_cloud(source: &Source) -> bool {
    source
        .settings
        .get("cloud")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| source.url.contains(".atlassian.net"))
}

/// Imports the issues of Jira project `project` (narrowed by `jql` and `issue_types`, at
/// most `limit`, only those updated since `since_ms` when given): Bug and Incident issues
/// go to `incidents`, others to `project`.
#[allow(clippy::too_many_arguments)]
pub fn import_jira(
    store: &Store,
    source: &Source,
    project: &str,
    jql: Option<&str>,
    issue_types: &[String],
    limit: Option<usize>,
    since_ms: Option<i64>,
    progress: &mut dyn FnMut(&ImportReport),
) -> Result<ImportReport, ConnectorError> {
    haivemind_core::memory::check_name("project_key", project).map_err(StoreError::from)?;
    let mut query = format!("project = \"{project}\"");
    if !issue_types.is_empty() {
        let types: Vec<String> = issue_types.iter().map(|t| format!("\"{t}\"")).collect();
        query.push_str(&format!(" AND issuetype in ({})", types.join(", ")));
    }
    if let Some(jql) = jql.filter(|j| !j.trim().is_empty()) {
        query.push_str(&format!(" AND ({jql})"));
    }
    if let Some(since) = since_ms {
        query.push_str(&format!(" AND updated >= \"{}\"", query_time(since, '/')));
    }
    query.push_str(" ORDER BY key ASC");
    let cloud = jira_cloud(source);
    let page_size = limit.unwrap_or(usize::MAX).clamp(1, 100);
    let fields = "summary,description,issuetype,status,updated,labels";
    let endpoint = if cloud {
        "/rest/api/3/search/jql"
    } else {
        "/rest/api/2/search"
    };
    let mut report = ImportReport::default();
    let mut start_at = 0usize;
    let mut token: Option<String> = None;
    loop {
        let mut url = format!(
            "{}{endpoint}?jql={}&maxResults={page_size}&fields={fields}",
            source.url,
            encode(&query)
        );
        if cloud {
            if let Some(token) = &token {
                url.push_str(&format!("&nextPageToken={}", encode(token)));
            }
        } else {
            url.push_str(&format!("&startAt={start_at}"));
        }
        let answer = source.get_json(&url, report.fetched)?;
        report.pages += 1;
        let issues = answer["issues"]
            .as_array()
            .ok_or_else(|| source.malformed(endpoint, "no issues list", report.fetched))?;
        for issue in issues {
            if limit.is_some_and(|l| report.fetched >= l) {
                break;
            }
            let fields = &issue["fields"];
            let (Some(key), Some(summary)) = (issue["key"].as_str(), fields["summary"].as_str())
            else {
                return Err(source.malformed(
                    endpoint,
                    "an issue without key or summary",
                    report.fetched,
                ));
            };
            let kind = fields["issuetype"]["name"].as_str().unwrap_or("Task");
            let status = fields["status"]["name"].as_str().unwrap_or("");
            let updated = fields["updated"].as_str().unwrap_or("").to_string();
            let description = match &fields["description"] {
                Value::String(text) => text.clone(),
                Value::Object(_) => text::adf_to_text(&fields["description"]),
                _ => String::new(),
            };
            let category = if matches!(kind.to_lowercase().as_str(), "bug" | "incident") {
                "incidents"
            } else {
                "project"
            };
            let mut extra = Map::new();
            extra.insert("key".into(), json!(key));
            extra.insert("issue_type".into(), json!(kind));
            extra.insert("status".into(), json!(status));
            extra.insert("updated".into(), json!(updated));
            extra.insert("project_key".into(), json!(project));
            let (_, outcome) = store.upsert_external(ExternalDoc {
                system: "jira".into(),
                id: key.to_string(),
                version: updated,
                title: format!("{key}: {summary}"),
                text: format!("{kind}, {status}\n\n{description}"),
                category: category.into(),
                url: Some(format!("{}/browse/{key}", source.url)),
                extra,
                tags: vec!["jira".into(), project.to_lowercase()],
                project: None,
            })?;
            report.add(outcome);
        }
        progress(&report);
        if limit.is_some_and(|l| report.fetched >= l) || issues.is_empty() {
            break;
        }
        if cloud {
            if answer["isLast"].as_bool().unwrap_or(true) {
                break;
            }
            token = answer["nextPageToken"].as_str().map(str::to_string);
            if token.is_none() {
                return Err(source.malformed(
                    endpoint,
                    "isLast is false but there is no nextPageToken",
                    report.fetched,
                ));
            }
        } else {
            start_at =
                answer["startAt"].as_u64().unwrap_or(start_at as u64) as usize + issues.len();
            let total = answer["total"].as_u64().unwrap_or(0) as usize;
            if start_at >= total {
                break;
            }
        }
    }
    Ok(report)
}

/// Syncs every configured space (`connectors.confluence.spaces`) and project
/// (`connectors.jira.projects`), or only `sources` (`confluence`, `jira`, or
/// `confluence:SPACE`, `jira:PROJECT`), each fetching only what changed since its last
/// complete run. Returns each source's report or error; one failing does not stop the rest.
pub fn sync_all(
    store: &Store,
    connectors: &Map<String, Value>,
    sources: &[String],
    progress: &mut dyn FnMut(&str, &ImportReport),
) -> Vec<(String, Result<ImportReport, ConnectorError>)> {
    let mut planned: Vec<(&'static str, String)> = Vec::new();
    for (system, list_key) in [("confluence", "spaces"), ("jira", "projects")] {
        let listed: Vec<String> = connectors
            .get(system)
            .and_then(|c| c.get(list_key))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for key in listed {
            let name = format!("{system}:{key}");
            if sources.is_empty() || sources.iter().any(|s| s == system || *s == name) {
                planned.push((system, key));
            }
        }
    }
    let mut results = Vec::new();
    for (system, key) in planned {
        let name = format!("{system}:{key}");
        let started = now_ms();
        let outcome = Source::from_config(connectors, system).and_then(|source| {
            let since = store.connector_checkpoint(&name)?;
            let mut report_progress = |r: &ImportReport| progress(&name, r);
            let report = if system == "confluence" {
                import_confluence(
                    store,
                    &source,
                    &key,
                    None,
                    None,
                    since,
                    &mut report_progress,
                )
            } else {
                import_jira(
                    store,
                    &source,
                    &key,
                    None,
                    &[],
                    None,
                    since,
                    &mut report_progress,
                )
            }?;
            // A minute's overlap: records changed while this run read are read again next time.
            store.set_connector_checkpoint(&name, Some(started - 60_000))?;
            Ok(report)
        });
        results.push((name, outcome));
    }
    results
}
