//! Backups of a SQLite store, taken while it serves, and restores that prove themselves.
//!
//! A backup is one SQLite file: a consistent snapshot (`VACUUM INTO` on a read-only
//! connection, which copies one read transaction's view while writers go on) with a
//! manifest written into it (table `haivemind_backup`): the binary's version, the schema
//! version, the machine id, when, the counts, and two digests computed from the copy itself
//! (the replicated state's and every table's rows'). A restore copies the file beside the
//! database, takes the manifest out, recomputes both digests and only then moves the copy
//! into place, so a damaged or edited backup is refused and the database is never half
//! restored.
//!
//! A restored node is simply a node that was away: its version vector is the backup's, so
//! its peers send it everything since, erasures included, and nothing erased meanwhile
//! comes back (tests/backup.rs).

use std::path::{Path, PathBuf};

use haivemind_core::time_format::{ms_to_rfc3339, now_ms};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{Value, json};

use crate::{Store, StoreError, StoreOptions};

/// The table a backup carries its manifest in.
const MANIFEST_TABLE: &str = "haivemind_backup";

/// What a backup holds.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupManifest {
    /// The version of haivemind that wrote it.
    pub haivemind_version: String,
    /// The schema version of the copy.
    pub schema_version: i64,
    /// The node it was taken from.
    pub machine_id: String,
    /// When, epoch milliseconds.
    pub created_at_ms: i64,
    /// Live memories.
    pub memories: usize,
    /// Soft-deleted memories.
    pub deleted: usize,
    /// `Store::state_digest` of the copy.
    pub state_digest: String,
    /// `Store::table_digest` of the copy (every table's rows).
    pub table_digest: String,
}

impl BackupManifest {
    /// As JSON (`haivemind backup --json` prints it).
    pub fn to_json(&self) -> Value {
        json!({
            "haivemind_version": self.haivemind_version,
            "schema_version": self.schema_version,
            "machine_id": self.machine_id,
            "created_at": ms_to_rfc3339(self.created_at_ms),
            "memories": self.memories,
            "deleted": self.deleted,
            "state_digest": self.state_digest,
            "table_digest": self.table_digest,
        })
    }

    fn from_json(value: &Value) -> Option<Self> {
        Some(Self {
            haivemind_version: value["haivemind_version"].as_str()?.to_string(),
            schema_version: value["schema_version"].as_i64()?,
            machine_id: value["machine_id"].as_str()?.to_string(),
            created_at_ms: haivemind_core::time_format::parse_rfc3339(
                "created_at",
                value["created_at"].as_str()?,
            )
            .ok()?,
            memories: value["memories"].as_u64()? as usize,
            deleted: value["deleted"].as_u64()? as usize,
            state_digest: value["state_digest"].as_str()?.to_string(),
            table_digest: value["table_digest"].as_str()?.to_string(),
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        record: format!("backup {}", path.display()),
        detail: detail.into(),
    }
}

/// A path beside `path` with `suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes a SQLite file and its side files.
fn remove_database(path: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = beside(path, suffix);
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&file)(error));
            }
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    /// Writes a consistent copy of this store to `target` (which must not exist), with its
    /// manifest, while other connections go on writing. SQLite only: a hub's PostgreSQL
    /// database is backed up with PostgreSQL's own tools.
    pub fn backup_to(&self, target: &Path) -> Result<BackupManifest, StoreError> {
        if self.postgres().is_some() {
            return Err(haivemind_core::InvalidInput::new(
                "storage.backend",
                "a PostgreSQL hub is backed up with pg_dump or pg_basebackup (docs/HUB.md), not `haivemind backup`",
            )
            .into());
        }
        if target.exists() {
            return Err(haivemind_core::InvalidInput::new(
                "file",
                format!(
                    "{} exists; a backup never overwrites a file",
                    target.display()
                ),
            )
            .into());
        }
        // Owner-only from the first byte: the copy holds every memory, pii included.
        haivemind_core::private_files::ensure_private_file(target).map_err(io(target))?;
        let copied = (|| -> Result<(), StoreError> {
            let source = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            source.busy_timeout(std::time::Duration::from_secs(30))?;
            source.execute("VACUUM INTO ?1", [target.to_string_lossy()])?;
            Ok(())
        })();
        if let Err(error) = copied {
            let _ = remove_database(target);
            return Err(error);
        }
        let manifest = (|| {
            let manifest = manifest_of(target, &self.machine_id)?;
            let connection = Connection::open(target)?;
            connection.execute_batch(&format!(
                "CREATE TABLE {MANIFEST_TABLE} (manifest TEXT NOT NULL)"
            ))?;
            connection.execute(
                &format!("INSERT INTO {MANIFEST_TABLE} (manifest) VALUES (?1)"),
                [manifest.to_json().to_string()],
            )?;
            // One file: the copy carries no WAL of its own.
            connection.pragma_update(None, "journal_mode", "DELETE")?;
            Ok(manifest)
        })();
        match manifest {
            Ok(manifest) => Ok(manifest),
            Err(error) => {
                let _ = remove_database(target);
                Err(error)
            }
        }
    }
}

/// The manifest of the store at `path`, computed from its contents.
fn manifest_of(path: &Path, machine_id: &str) -> Result<BackupManifest, StoreError> {
    let copy = Store::open(StoreOptions::new(path, machine_id))?;
    let stats = copy.stats()?;
    Ok(BackupManifest {
        haivemind_version: haivemind_core::VERSION.to_string(),
        schema_version: crate::migrations::SCHEMA_VERSION,
        machine_id: machine_id.to_string(),
        created_at_ms: now_ms(),
        memories: stats.live,
        deleted: stats.deleted,
        state_digest: copy.state_digest()?,
        table_digest: copy.table_digest()?,
    })
}

/// Reads a backup's manifest without changing the file.
pub fn read_manifest(backup: &Path) -> Result<BackupManifest, StoreError> {
    if !backup.is_file() {
        return Err(haivemind_core::InvalidInput::new(
            "file",
            format!("{} is not a file", backup.display()),
        )
        .into());
    }
    let connection = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| corrupt(backup, format!("not a SQLite file ({e})")))?;
    let text: Option<String> = connection
        .query_row(&format!("SELECT manifest FROM {MANIFEST_TABLE}"), [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| corrupt(backup, format!("no hAIveMind backup manifest ({e})")))?;
    let text = text.ok_or_else(|| corrupt(backup, "the manifest is empty"))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| corrupt(backup, format!("the manifest is not JSON ({e})")))?;
    BackupManifest::from_json(&value).ok_or_else(|| corrupt(backup, "the manifest lacks fields"))
}

/// Restores `backup` as the database at `database`. The database must hold nothing unless
/// `force` (then the old one is kept beside it as `…before-restore`). The copy's digests
/// must match its manifest before it is moved into place.
pub fn restore(backup: &Path, database: &Path, force: bool) -> Result<BackupManifest, StoreError> {
    let manifest = read_manifest(backup)?;
    if manifest.schema_version > crate::migrations::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: backup.to_path_buf(),
            found: manifest.schema_version,
            supported: crate::migrations::SCHEMA_VERSION,
        });
    }
    if database.exists() {
        let holds_something = {
            let existing = Store::open(StoreOptions::new(database, &manifest.machine_id))?;
            !existing.holds_nothing()?
        };
        if holds_something && !force {
            return Err(haivemind_core::InvalidInput::new(
                "data_dir",
                format!(
                    "{} already holds data; restore into an empty data directory, or pass --force to replace it (it is kept as …before-restore)",
                    database.display()
                ),
            )
            .into());
        }
    }
    let staging = beside(database, ".restoring");
    remove_database(&staging)?;
    if let Some(parent) = database.parent()
        && !parent.as_os_str().is_empty()
    {
        haivemind_core::private_files::ensure_private_dir(parent).map_err(io(parent))?;
    }
    haivemind_core::private_files::ensure_private_file(&staging).map_err(io(&staging))?;
    let checked = (|| -> Result<(), StoreError> {
        std::fs::copy(backup, &staging).map_err(io(&staging))?;
        let connection = Connection::open(&staging)?;
        connection.execute_batch(&format!("DROP TABLE {MANIFEST_TABLE}"))?;
        drop(connection);
        let restored = Store::open(StoreOptions::new(&staging, &manifest.machine_id))?;
        let (state, tables) = (restored.state_digest()?, restored.table_digest()?);
        // A backup by an older binary was migrated on opening, which changes the tables'
        // shape but not the replicated state: then the state digest alone must match.
        let same_schema = manifest.schema_version == crate::migrations::SCHEMA_VERSION;
        if state != manifest.state_digest || (same_schema && tables != manifest.table_digest) {
            return Err(corrupt(
                backup,
                "its contents do not match its manifest's digests (damaged or edited); nothing was restored",
            ));
        }
        Ok(())
    })();
    if let Err(error) = checked {
        let _ = remove_database(&staging);
        return Err(error);
    }
    if database.exists() {
        let kept = beside(database, ".before-restore");
        remove_database(&kept)?;
        for suffix in ["", "-wal", "-shm"] {
            let from = beside(database, suffix);
            if from.exists() {
                std::fs::rename(&from, beside(&kept, suffix)).map_err(io(&from))?;
            }
        }
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = beside(&staging, suffix);
        if side.exists() {
            std::fs::rename(&side, beside(database, suffix)).map_err(io(&side))?;
        }
    }
    std::fs::rename(&staging, database).map_err(io(database))?;
    Ok(manifest)
}
