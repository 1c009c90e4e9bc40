//! The end-to-end harness: a scratch data directory, the real `haivemind` binary, and a
//! minimal line-by-line MCP client over its stdio, so each test stays a few lines long.
#![allow(dead_code)]

pub mod database;
pub mod fleet;
pub mod http;
pub mod python;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_haivemind"))
}

/// Where the embedding model is: `$HAIVEMIND_MODEL_DIR`, else where `scripts/fetch-model`
/// puts it by default.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("HAIVEMIND_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".local/share/haivemind/models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "these tests need the embedding model in {} (run scripts/fetch-model)",
        dir.display()
    );
    dir
}

/// Runs `command` with `--json` and `args`, expects success, and parses stdout.
pub fn run_json(mut command: Command, args: &[&str]) -> Value {
    let output = command
        .arg("--json")
        .args(args)
        .output()
        .expect("run haivemind");
    assert!(
        output.status.success(),
        "haivemind {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of {args:?} is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A data directory and config of its own, so tests never touch the user's memory.
pub struct Scratch {
    pub dir: TempDir,
    /// With `HAIVEMIND_TEST_BACKEND=postgres`, the node's store is a database of its own on
    /// the test PostgreSQL (`storage.backend` set in every config written here).
    pub database: Option<database::ScratchDatabase>,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = std::env::var("HAIVEMIND_TEST_BACKEND")
            .is_ok_and(|b| b == "postgres")
            .then(|| database::ScratchDatabase::new(database::Server::Pgvector));
        let scratch = Self { dir, database };
        scratch.write_config("{}");
        scratch
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub fn write_config(&self, json: &str) {
        let mut json = json.to_string();
        if self.database.is_some()
            && let Ok(Value::Object(mut config)) = serde_json::from_str::<Value>(&json)
        {
            config
                .entry("storage")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("storage is an object")
                .insert("backend".into(), json!("postgres"));
            json = Value::Object(config).to_string();
        }
        std::fs::write(self.config_path(), json).expect("write config");
    }

    /// A `haivemind` command with this scratch's environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("HAIVEMIND_CONFIG", self.config_path())
            .env("HAIVEMIND_DATA_DIR", self.data_dir())
            .env("HAIVEMIND_MACHINE_ID", "e2e-machine")
            .current_dir(self.dir.path());
        if let Some(database) = &self.database {
            command.env("HAIVEMIND_DATABASE_URL", &database.url);
        }
        command
    }

    /// A `haivemind` command that also finds the embedding model (which `scripts/test`
    /// fetches); plain [`Scratch::command`] runs without one, full-text only.
    pub fn command_with_model(&self) -> Command {
        let mut command = self.command();
        command.env("HAIVEMIND_MODEL_DIR", model_dir());
        command
    }

    /// Runs the CLI with `args`; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run haivemind")
    }

    /// Runs the CLI with `--json` and `args`, expects success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        run_json(self.command(), args)
    }

    /// Makes a token with `role` (named `name` when given) through the CLI; returns the
    /// secret, which `token create` prints alone on its last line.
    pub fn create_token(&self, role: &str, name: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--role", role];
        if let Some(name) = name {
            args.extend(["--name", name]);
        }
        let output = self.run(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        let token = stdout.lines().last().expect("a token line").to_string();
        assert!(token.starts_with("hv_") && token.len() == 67, "{token}");
        token
    }

    /// Starts `haivemind mcp` and completes the initialize handshake.
    pub fn mcp(&self) -> McpProcess {
        McpProcess::start(self.command())
    }
}

/// A running `haivemind mcp` and a line-by-line JSON-RPC client for it.
pub struct McpProcess {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

impl McpProcess {
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haivemind mcp");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut process = Self {
            child,
            stdin,
            lines,
            next_id: 0,
        };
        let answer = process.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "e2e-harness", "version": "1"}
            }),
        );
        assert!(
            answer.get("result").is_some(),
            "initialize failed: {answer}"
        );
        process.send_line(
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        );
        process
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to haivemind mcp");
        stdin.flush().expect("flush");
    }

    /// The next line on stdout, which must be one JSON value.
    pub fn next_frame(&mut self) -> Value {
        let line = match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no answer from haivemind mcp in {ANSWER_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!("haivemind mcp closed stdout"),
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line}"))
    }

    /// Sends a request without waiting; returns its id.
    pub fn send_request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send_line(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        id
    }

    /// Sends a request and returns the whole response frame.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.send_request(method, params);
        loop {
            let frame = self.next_frame();
            if frame.get("id") == Some(&json!(id)) {
                return frame;
            }
        }
    }

    /// Calls a tool and returns its result object (`structuredContent`, `isError`, ...).
    pub fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let frame = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        frame
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{tool} got no result: {frame}"))
    }

    /// Calls a tool that must succeed and returns its structured content, after checking
    /// that the text content carries the same JSON.
    pub fn ok(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments.clone());
        assert_eq!(
            result["isError"],
            json!(false),
            "{tool} {arguments} failed: {result}"
        );
        let structured = result["structuredContent"].clone();
        let text: Value =
            serde_json::from_str(result["content"][0]["text"].as_str().expect("text content"))
                .expect("text content is JSON");
        assert_eq!(text, structured, "text and structured content differ");
        structured
    }

    /// Calls a tool that must fail with a tool error; returns its error object.
    pub fn tool_error(&mut self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments.clone());
        assert_eq!(
            result["isError"],
            json!(true),
            "{tool} {arguments} should have failed: {result}"
        );
        result["structuredContent"]["error"].clone()
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "haivemind mcp exited with {status}");
    }
}

impl Drop for McpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
