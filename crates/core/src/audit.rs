//! The audit log: append-only JSON lines of what a security review asks about —
//! authentication failures, token use and management, deletions and erasures, refusals —
//! rotated by size.
//!
//! Events carry ids, names, roles, addresses and outcomes, never a token's secret and never
//! memory content: a deletion names the memory's id, not what it said. The callers build
//! events from those fields only; [`AuditEvent`] has no way to attach free text except
//! through named fields, which keeps that rule visible at each call site.
//!
//! Several processes (the stdio server, `haivemind serve`, the CLI) may append to the same
//! file; each line is written with one `write` on an `O_APPEND` descriptor, so lines do not
//! interleave. Rotation renames `audit.log` to `audit.log.1` (and so on up to
//! [`KEPT_FILES`]); a process that still holds the old file appends its next line there,
//! then notices the rename and reopens.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::time_format::{ms_to_rfc3339, now_ms};

/// How many rotated files are kept besides the live one.
pub const KEPT_FILES: usize = 5;

/// One audit event under construction.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    fields: Map<String, Value>,
}

impl AuditEvent {
    /// An event of `kind` (`auth_failed`, `token_used`, `memory_deleted`, ...), stamped now.
    pub fn new(kind: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("ts".into(), Value::String(ms_to_rfc3339(now_ms())));
        fields.insert("event".into(), Value::String(kind.into()));
        Self { fields }
    }

    /// Adds a field. Never pass a secret or memory content.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The event's fields, for tests and for the tracing echo.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditOpenError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// An open audit log. Share it behind an `Arc`.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<File>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl AuditLog {
    /// Opens (creating) the log at `path`, rotating when it passes `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, AuditOpenError> {
        let error = |source| AuditOpenError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let file = open_append(path).map_err(error)?;
        // A log made before files were created owner-only: make it so.
        crate::private_files::ensure_private_file(path).map_err(error)?;
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(4096),
            file: Mutex::new(file),
        })
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event. A failure to write is logged, not returned: an audit problem
    /// must not turn a successful deletion into an error the agent retries.
    pub fn record(&self, event: AuditEvent) {
        let mut line = Value::Object(event.fields).to_string();
        line.push('\n');
        let Ok(mut file) = self.file.lock() else {
            tracing::error!("audit log lock poisoned; event dropped");
            return;
        };
        if let Err(error) = self.rotate_if_needed(&mut file, line.len() as u64) {
            tracing::warn!(path = %self.path.display(), %error, "could not rotate the audit log");
        }
        if let Err(error) = file.write_all(line.as_bytes()) {
            tracing::error!(path = %self.path.display(), %error, "could not write the audit log");
        }
    }

    fn rotate_if_needed(&self, file: &mut File, incoming: u64) -> std::io::Result<()> {
        // Another process may have rotated: follow the name, not the old descriptor.
        let on_disk = std::fs::metadata(&self.path);
        let ours = file.metadata()?;
        let renamed = match &on_disk {
            Ok(meta) => !same_file(meta, &ours),
            Err(_) => true,
        };
        if renamed {
            *file = open_append(&self.path)?;
        }
        let size = file.metadata()?.len();
        if size == 0 || size + incoming <= self.max_bytes {
            return Ok(());
        }
        for n in (1..KEPT_FILES).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        *file = open_append(&self.path)?;
        Ok(())
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// `audit.log.N`.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Reads a size like `100MB`, `512KiB`, `1048576` into bytes.
pub fn parse_size(field: &str, text: &str) -> Result<u64, crate::InvalidInput> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        crate::InvalidInput::new(field, "must be a size like 100MB, 512KB or 1048576")
    })?;
    let unit = unit.trim().to_ascii_uppercase();
    let factor: u64 = match unit.as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(crate::InvalidInput::new(
                field,
                "must be a size like 100MB, 512KB or 1048576 (units B, KB, MB, GB)",
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| crate::InvalidInput::new(field, "is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_and_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 4096).unwrap();
        for i in 0..200 {
            log.record(AuditEvent::new("auth_failed").with("attempt", i));
        }
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.len() <= 4096);
        let first = std::fs::read_to_string(rotated(&path, 1)).unwrap();
        for line in live.lines().chain(first.lines()) {
            let value: Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["event"], "auth_failed");
            assert!(value["ts"].as_str().unwrap().ends_with('Z'));
        }
        // The newest event is in the live file, the ones before it in .1.
        let last: Value = serde_json::from_str(live.lines().last().unwrap()).unwrap();
        assert_eq!(last["attempt"], 199);
        assert!(!rotated(&path, KEPT_FILES + 1).exists());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("k", "100MB").unwrap(), 100 << 20);
        assert_eq!(parse_size("k", "512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("k", "4096").unwrap(), 4096);
        assert_eq!(parse_size("k", "1 TB").unwrap_err().field, "k");
    }
}
