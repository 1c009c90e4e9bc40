//! A minimal MCP client over a `haivemind mcp` child's stdio, for benchmarks that must go
//! through the public interface. One request at a time, one line each way.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub struct StdioClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl StdioClient {
    /// Starts this binary's `haivemind mcp` on `data_dir` (with an empty config, so no
    /// config file around the caller changes what is measured) and initializes a session.
    pub fn start(data_dir: &Path, settings: &serde_json::Value) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let config = data_dir.join("bench-config.json");
        std::fs::write(&config, settings.to_string())
            .context("cannot write the benchmark config")?;
        let exe = std::env::current_exe().context("cannot find the haivemind binary")?;
        let mut child = Command::new(exe)
            .arg("mcp")
            .env("HAIVEMIND_CONFIG", &config)
            .env("HAIVEMIND_DATA_DIR", data_dir)
            .env("HAIVEMIND_MACHINE_ID", "bench")
            .env("HAIVEMIND_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start haivemind mcp")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut client = Self {
            child,
            stdin: Some(stdin),
            stdout,
            next_id: 0,
        };
        client.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "haivemind-bench", "version": "1"}}),
        )?;
        client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(client)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, message: &Value) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the session is closed")?;
        writeln!(stdin, "{message}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends a request and returns its `result`.
    pub fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("haivemind mcp closed its output");
            }
            let frame: Value = serde_json::from_str(&line)
                .context("haivemind mcp sent a line that is not JSON")?;
            if frame.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(error) = frame.get("error") {
                bail!("{method} failed: {error}");
            }
            return Ok(frame.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Calls a tool that must succeed; returns its structured content.
    pub fn call(&mut self, tool: &str, arguments: Value) -> Result<Value> {
        let result = self.request("tools/call", json!({"name": tool, "arguments": arguments}))?;
        if result.get("isError") != Some(&json!(false)) {
            bail!("{tool} failed: {result}");
        }
        Ok(result
            .get("structuredContent")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Closes the session and waits for the server to exit.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            bail!("haivemind mcp exited with {status}");
        }
        Ok(())
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
