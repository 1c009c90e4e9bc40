//! Confluence and Jira imports against stand-in servers written here, which answer with
//! the response shapes Atlassian documents: every page of results for the three APIs,
//! storage-format HTML and ADF turned into text, re-imports without duplicates, a newer
//! page version replacing its text, 401, 429 with Retry-After, a 500 then success, a
//! malformed answer, incremental syncs, and no credential in any memory, file or log.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::Scratch;
use serde_json::{Value, json};

const CONFLUENCE_TOKEN: &str = "s3cret-confluence-token";
const JIRA_TOKEN: &str = "pat-jira-0123456789";

type Reply = (u16, Vec<(String, String)>, String);
/// Requests seen: target and Authorization header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
/// Confluence pages: id, title, version, storage-format body.
type Page = (u64, String, u64, String);
type Pages = Arc<Mutex<Vec<Page>>>;

/// A stand-in server: scripted replies first, then `answer` for each request.
struct Fake {
    url: String,
    requests: Seen,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Fake {
    fn start(answer: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Seen = Arc::default();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let (seen, queued, base) = (Arc::clone(&requests), Arc::clone(&script), url.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let target = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        authorization = Some(value.trim().to_string());
                    }
                }
                seen.lock().unwrap().push((target.clone(), authorization));
                let scripted = queued.lock().unwrap().pop_front();
                let (status, headers, body) = scripted.unwrap_or_else(|| answer(&base, &target));
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                let _ = stream.write_all(format!("{head}\r\n{body}").as_bytes());
            }
        });
        Fake {
            url,
            requests,
            script,
        }
    }

    fn then(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.script.lock().unwrap().push_back((
            status,
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body.to_string(),
        ));
    }

    fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

fn query<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
}

fn ok(body: Value) -> Reply {
    (200, Vec::new(), body.to_string())
}

/// Five pages in space OPS; `pages` can be changed while the server runs.
fn confluence(pages: Pages) -> Fake {
    Fake::start(move |base, target| {
        let pages = pages.lock().unwrap().clone();
        if target.starts_with("/rest/api/content/search") {
            // Incremental: only pages changed since (here: version above 1).
            let changed: Vec<Value> = pages.iter().filter(|p| p.2 > 1).map(page_json).collect();
            return ok(
                json!({"results": changed, "start": 0, "limit": 25, "size": changed.len(), "_links": {"base": base}}),
            );
        }
        let start: usize = query(target, "start")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let limit: usize = query(target, "limit")
            .and_then(|s| s.parse().ok())
            .unwrap_or(25)
            .min(2);
        let slice: Vec<Value> = pages
            .iter()
            .skip(start)
            .take(limit)
            .map(page_json)
            .collect();
        let mut links = json!({"base": base, "context": ""});
        if start + limit < pages.len() {
            links["next"] = json!(format!(
                "/rest/api/content?spaceKey=OPS&type=page&expand=body.storage,version&limit={limit}&start={}",
                start + limit
            ));
        }
        ok(
            json!({"results": slice, "start": start, "limit": limit, "size": slice.len(), "_links": links}),
        )
    })
}

fn page_json(page: &Page) -> Value {
    json!({"id": page.0.to_string(), "type": "page", "status": "current", "title": page.1,
           "version": {"number": page.2}, "body": {"storage": {"value": page.3, "representation": "storage"}},
           "_links": {"webui": format!("/display/OPS/{}", page.0)}})
}

fn memories(scratch: &Scratch, category: &str) -> Vec<Value> {
    scratch.json(&[
        "recent",
        "--category",
        category,
        "--hours",
        "1",
        "--limit",
        "100",
    ])["memories"]
        .as_array()
        .unwrap()
        .clone()
}

fn no_secret_anywhere(scratch: &Scratch, secrets: &[&str]) {
    for entry in std::fs::read_dir(scratch.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} found in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn confluence_pages_import_every_page_as_text_incrementally_and_without_duplicates() {
    let pages: Pages = Arc::new(Mutex::new(
        (1..=5)
            .map(|i| {
                (
                    1000 + i,
                    format!("Runbook {i}"),
                    1,
                    format!("<h2>Step &amp; check {i}</h2><ul><li>drain node{i}</li><li>restart</li></ul>"),
                )
            })
            .collect(),
    ));
    let server = confluence(Arc::clone(&pages));
    let scratch = Scratch::new();
    scratch.write_config(
        &json!({"connectors": {"confluence": {"url": server.url, "spaces": ["OPS"], "retry_pause_ms": 10,
            "credentials": {"username": "bot", "token": CONFLUENCE_TOKEN},
            "space_category_mapping": {"OPS": "runbooks"}}}})
        .to_string(),
    );
    // A 429 with Retry-After and a 500 on the way are waited out and retried.
    server.then(429, &[("Retry-After", "1")], "{}");
    server.then(500, &[], "oops");
    let mut command = scratch.command();
    command.args(["--json", "import", "confluence", "OPS"]);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["fetched"].as_u64(), report["created"].as_u64()),
        (Some(5), Some(5)),
        "{report}"
    );
    assert_eq!(
        report["pages"], 3,
        "three pages of results, following _links.next"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(CONFLUENCE_TOKEN));
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some("Basic Ym90OnMzY3JldC1jb25mbHVlbmNlLXRva2Vu"))
    );
    assert!(requests.iter().any(|(p, _)| p.contains("start=4")));

    let stored = memories(&scratch, "runbooks");
    assert_eq!(stored.len(), 5);
    let third = stored
        .iter()
        .find(|m| m["metadata"]["source"]["page_id"] == "1003")
        .unwrap()
        .clone();
    assert_eq!(
        third["content"],
        "Runbook 3\n\n## Step & check 3\n\n- drain node3\n- restart"
    );
    assert_eq!(third["metadata"]["source"]["version"], "1");
    assert_eq!(
        third["metadata"]["source"]["url"],
        format!("{}/display/OPS/1003", server.url)
    );

    // Again: nothing changes. Then a newer version of one page replaces its text.
    let again = scratch.json(&["import", "confluence", "OPS"]);
    assert_eq!(
        (again["unchanged"].as_u64(), again["created"].as_u64()),
        (Some(5), Some(0))
    );
    pages.lock().unwrap()[2] = (
        1003,
        "Runbook 3".into(),
        2,
        "<p>Use the new drain script</p>".into(),
    );
    let updated = scratch.json(&["import", "confluence", "OPS"]);
    assert_eq!(updated["updated"], 1, "{updated}");
    let stored = memories(&scratch, "runbooks");
    assert_eq!(stored.len(), 5, "no duplicates");
    let third = stored
        .iter()
        .find(|m| m["metadata"]["source"]["page_id"] == "1003")
        .unwrap();
    assert_eq!(third["content"], "Runbook 3\n\nUse the new drain script");

    // sync_external_knowledge: the first run imports, the next asks only for changes.
    let mut mcp = scratch.mcp();
    let history = mcp.ok("get_memory_history", json!({"memory_id": third["id"]}));
    assert!(
        history.to_string().contains("drain node3"),
        "the old text stays in the history: {history}"
    );
    let first = mcp.ok("sync_external_knowledge", json!({}));
    assert_eq!(first["sources"][0]["source"], "confluence:OPS");
    assert_eq!(first["sources"][0]["ok"], true);
    let second = mcp.ok(
        "sync_external_knowledge",
        json!({"sources": ["confluence"]}),
    );
    assert_eq!(second["sources"][0]["fetched"], 1, "{second}");
    assert!(
        server
            .paths()
            .iter()
            .any(|p| p.starts_with("/rest/api/content/search") && p.contains("lastmodified"))
    );
    mcp.finish();
    no_secret_anywhere(
        &scratch,
        &[CONFLUENCE_TOKEN, "Ym90OnMzY3JldC1jb25mbHVlbmNlLXRva2Vu"],
    );
}

fn issue(key: &str, kind: &str, description: Value) -> Value {
    json!({"id": key.trim_start_matches("OPS-"), "key": key, "fields": {
        "summary": format!("summary of {key}"), "description": description,
        "issuetype": {"name": kind}, "status": {"name": "Done"}, "updated": "2026-11-20T10:00:00.000+0000"}})
}

#[test]
fn jira_data_center_and_cloud_import_every_page_and_errors_are_clear() {
    // Data Center: startAt / maxResults / total.
    let dc = Fake::start(|_, target| {
        let all: Vec<Value> = (1..=5)
            .map(|i| {
                issue(
                    &format!("OPS-{i}"),
                    if i % 2 == 0 { "Bug" } else { "Story" },
                    json!(format!("wiki text {i}")),
                )
            })
            .collect();
        let start: usize = query(target, "startAt")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let slice: Vec<Value> = all.iter().skip(start).take(2).cloned().collect();
        ok(json!({"startAt": start, "maxResults": 2, "total": all.len(), "issues": slice}))
    });
    // Cloud: nextPageToken / isLast, descriptions in ADF.
    let cloud = Fake::start(|_, target| {
        let adf = |text: &str| {
            json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": text}]}]})
        };
        match query(target, "nextPageToken") {
            None => ok(
                json!({"issues": [issue("OPS-10", "Incident", adf("heap exhausted"))], "nextPageToken": "p2", "isLast": false}),
            ),
            Some("p2") => ok(
                json!({"issues": [issue("OPS-11", "Task", adf("rotate keys"))], "nextPageToken": "p3", "isLast": false}),
            ),
            _ => ok(json!({"issues": [issue("OPS-12", "Bug", adf("502s"))], "isLast": true})),
        }
    });
    let scratch = Scratch::new();
    let configure = |url: &str, cloud: bool| {
        scratch.write_config(
            &json!({"connectors": {"jira": {"url": url, "cloud": cloud, "retry_pause_ms": 10, "projects": ["OPS"]}}})
                .to_string(),
        );
    };
    let run = |args: &[&str]| {
        let mut command = scratch.command();
        command
            .env("HAIVEMIND_JIRA_TOKEN", JIRA_TOKEN)
            .arg("--json")
            .args(args);
        command.output().unwrap()
    };
    configure(&dc.url, false);
    let output = run(&["import", "jira", "OPS"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["created"].as_u64(), report["pages"].as_u64()),
        (Some(5), Some(3)),
        "{report}"
    );
    assert!(
        dc.requests
            .lock()
            .unwrap()
            .iter()
            .all(|(p, auth)| p.starts_with("/rest/api/2/search")
                && auth.as_deref() == Some(&format!("Bearer {JIRA_TOKEN}") as &str))
    );
    let incidents = memories(&scratch, "incidents");
    assert_eq!(incidents.len(), 2, "the two Bugs");
    let bug = incidents
        .iter()
        .find(|m| m["metadata"]["source"]["key"] == "OPS-2")
        .unwrap();
    assert_eq!(bug["metadata"]["source"]["issue_type"], "Bug");
    assert_eq!(bug["metadata"]["source"]["status"], "Done");
    assert_eq!(memories(&scratch, "project").len(), 3);

    configure(&cloud.url, true);
    let output = run(&["import", "jira", "OPS"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["created"].as_u64(), report["pages"].as_u64()),
        (Some(3), Some(3)),
        "{report}"
    );
    assert!(
        cloud
            .paths()
            .iter()
            .all(|p| p.starts_with("/rest/api/3/search/jql"))
    );
    let heap = memories(&scratch, "incidents")
        .into_iter()
        .find(|m| m["metadata"]["source"]["key"] == "OPS-10")
        .unwrap();
    assert!(
        heap["content"]
            .as_str()
            .unwrap()
            .ends_with("heap exhausted"),
        "{heap}"
    );

    // 401: a clear authentication error. A malformed answer: a clear error naming it.
    cloud.then(401, &[], r#"{"errorMessages":["no"]}"#);
    let refused = run(&["import", "jira", "OPS"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("refused the credentials (HTTP 401)")
            && said.contains("HAIVEMIND_JIRA_TOKEN"),
        "{said}"
    );
    assert!(!said.contains(JIRA_TOKEN));
    cloud.then(200, &[], "<html>maintenance</html>");
    let broken = run(&["import", "jira", "OPS"]);
    let said = String::from_utf8_lossy(&broken.stderr);
    assert!(
        !broken.status.success() && said.contains("not JSON"),
        "{said}"
    );
    // A server that keeps failing: bounded retries, then how far it got.
    for _ in 0..4 {
        cloud.then(503, &[], "");
    }
    let failing = run(&["import", "jira", "OPS"]);
    let said = String::from_utf8_lossy(&failing.stderr);
    assert!(
        !failing.status.success()
            && said.contains("HTTP 503")
            && said.contains("after importing 0"),
        "{said}"
    );
    no_secret_anywhere(&scratch, &[JIRA_TOKEN]);

    // The MCP tool: not configured is a clear tool error.
    let plain = Scratch::new();
    let mut mcp = plain.mcp();
    let error = mcp.tool_error("fetch_from_confluence", json!({"space_key": "OPS"}));
    assert_eq!(error["code"], "not_configured");
    mcp.finish();
}
