//! The schema's tables as plain rows, for moving a whole store between backends
//! (`haivemind migrate`): every table that holds ground truth or node state, in an order
//! that satisfies foreign keys, with the columns both backends share and the key that orders
//! their rows. Derived data is left out (the full-text index, pgvector's column): each
//! backend rebuilds its own.
//!
//! [`TableDigest`] hashes rows canonically, so a copy read back from the other backend
//! proves itself by an equal digest.

use rusqlite::types::{Value, ValueRef};
use sha2::{Digest, Sha256};

use crate::{Store, StoreError};

/// One value of a row, as both backends can hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Integers and flags (a boolean is 0 or 1).
    Integer(i64),
    /// Floating point.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes (token digests, vectors).
    Blob(Vec<u8>),
}

/// A table as the move sees it.
#[derive(Debug, Clone, Copy)]
pub struct TableShape {
    /// Its name, the same on both backends.
    pub name: &'static str,
    /// The columns moved, the same on both backends.
    pub columns: &'static [&'static str],
    /// The columns that order its rows (its primary key).
    pub key: &'static [&'static str],
    /// The identity column whose counter must continue after the copied rows, if any.
    pub identity: Option<&'static str>,
}

/// Every table, parents before children.
pub const TABLES: &[TableShape] = &[
    TableShape {
        name: "memories",
        columns: &[
            "rowid",
            "id",
            "content",
            "category",
            "context",
            "tags",
            "metadata",
            "user_id",
            "project",
            "machine_id",
            "agent_id",
            "scope",
            "confidentiality",
            "created_at",
            "updated_at",
            "version",
            "deleted_at",
            "deleted_reason",
            "deleted_by",
            "hlc",
            "hlc_origin",
        ],
        key: &["rowid"],
        identity: Some("rowid"),
    },
    TableShape {
        name: "memory_tags",
        columns: &["tag", "memory_rowid"],
        key: &["tag", "memory_rowid"],
        identity: None,
    },
    TableShape {
        name: "memory_history",
        columns: &[
            "seq",
            "memory_id",
            "version",
            "action",
            "changed_at",
            "machine_id",
            "agent_id",
            "changes",
        ],
        key: &["seq"],
        identity: Some("seq"),
    },
    TableShape {
        name: "tombstones",
        columns: &[
            "record_kind",
            "record_id",
            "hlc",
            "hlc_origin",
            "erased_at",
            "reason",
        ],
        key: &["record_kind", "record_id"],
        identity: None,
    },
    TableShape {
        name: "op_log",
        columns: &[
            "seq",
            "op_id",
            "hlc",
            "origin",
            "record_kind",
            "record_id",
            "op",
            "payload",
            "shareable",
        ],
        key: &["seq"],
        identity: Some("seq"),
    },
    TableShape {
        name: "op_log_floor",
        columns: &["origin", "hlc"],
        key: &["origin"],
        identity: None,
    },
    TableShape {
        name: "memory_vectors",
        columns: &["seq", "memory_rowid", "model_id", "vector"],
        key: &["seq"],
        identity: Some("seq"),
    },
    TableShape {
        name: "api_tokens",
        columns: &[
            "id",
            "name",
            "role",
            "digest",
            "created_at",
            "last_used_at",
            "revoked_at",
        ],
        key: &["id"],
        identity: None,
    },
    TableShape {
        name: "agents",
        columns: &[
            "id",
            "machine_id",
            "role",
            "capabilities",
            "description",
            "registered_at",
            "last_seen",
            "hlc",
            "hlc_origin",
        ],
        key: &["id"],
        identity: None,
    },
    TableShape {
        name: "tasks",
        columns: &[
            "id",
            "description",
            "required_capabilities",
            "target_agent",
            "assigned_to",
            "status",
            "priority",
            "priority_rank",
            "deadline",
            "created_by",
            "created_on",
            "created_at",
            "updated_at",
            "result",
            "history",
            "hlc",
            "hlc_origin",
        ],
        key: &["id"],
        identity: None,
    },
    TableShape {
        name: "connector_checkpoints",
        columns: &["source", "last_run"],
        key: &["source"],
        identity: None,
    },
];

/// A canonical hash of tables' rows: equal on two backends exactly when they hold the same
/// rows in every table.
#[derive(Default)]
pub struct TableDigest {
    hasher: Sha256,
}

impl TableDigest {
    /// Starts a table.
    pub fn table(&mut self, table: &TableShape) {
        self.hasher.update(b"T");
        self.field(table.name.as_bytes());
    }

    /// Adds one row of the current table.
    pub fn row(&mut self, cells: &[Cell]) {
        self.hasher.update(b"R");
        for cell in cells {
            match cell {
                Cell::Null => self.hasher.update(b"n"),
                Cell::Integer(value) => {
                    self.hasher.update(b"i");
                    self.hasher.update(value.to_le_bytes());
                }
                Cell::Real(value) => {
                    self.hasher.update(b"r");
                    self.hasher.update(value.to_bits().to_le_bytes());
                }
                Cell::Text(text) => {
                    self.hasher.update(b"s");
                    self.field(text.as_bytes());
                }
                Cell::Blob(bytes) => {
                    self.hasher.update(b"b");
                    self.field(bytes);
                }
            }
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// The digest, as hex.
    pub fn finish(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn cell_of(value: ValueRef<'_>) -> Result<Cell, StoreError> {
    Ok(match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(value) => Cell::Integer(value),
        ValueRef::Real(value) => Cell::Real(value),
        ValueRef::Text(text) => Cell::Text(
            std::str::from_utf8(text)
                .map_err(|_| StoreError::Corrupt {
                    record: "text column".into(),
                    detail: "not UTF-8".into(),
                })?
                .to_string(),
        ),
        ValueRef::Blob(bytes) => Cell::Blob(bytes.to_vec()),
    })
}

fn value_of(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Integer(value) => Value::Integer(*value),
        Cell::Real(value) => Value::Real(*value),
        Cell::Text(text) => Value::Text(text.clone()),
        Cell::Blob(bytes) => Value::Blob(bytes.clone()),
    }
}

impl Store {
    /// Calls `each` with every row of `table`, in key order.
    pub fn read_rows<E: From<StoreError>>(
        &self,
        table: &TableShape,
        mut each: impl FnMut(Vec<Cell>) -> Result<(), E>,
    ) -> Result<(), E> {
        let reader = self.reader()?;
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            table.columns.join(", "),
            table.name,
            table.key.join(", ")
        );
        let mut statement = reader.prepare(&sql).map_err(StoreError::from)?;
        let mut rows = statement.query([]).map_err(StoreError::from)?;
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            let mut cells = Vec::with_capacity(table.columns.len());
            for index in 0..table.columns.len() {
                cells.push(cell_of(row.get_ref(index).map_err(StoreError::from)?)?);
            }
            each(cells)?;
        }
        Ok(())
    }

    /// Inserts rows into `table` as they are (ids and sequence numbers included), in one
    /// transaction. Used on an empty store only: see [`Store::holds_nothing`].
    pub fn write_rows(&self, table: &TableShape, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        let mut writer = self.writer();
        let transaction = writer.transaction()?;
        {
            let placeholders = vec!["?"; table.columns.len()].join(", ");
            let mut insert = transaction.prepare(&format!(
                "INSERT INTO {} ({}) VALUES ({placeholders})",
                table.name,
                table.columns.join(", ")
            ))?;
            for row in rows {
                insert.execute(rusqlite::params_from_iter(row.iter().map(value_of)))?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// How many rows `table` holds.
    pub fn count_rows(&self, table: &TableShape) -> Result<u64, StoreError> {
        let count: i64 = self.reader()?.query_row(
            &format!("SELECT count(*) FROM {}", table.name),
            [],
            |row| row.get(0),
        )?;
        Ok(count.max(0) as u64)
    }

    /// True when no table holds a row: the only state a whole store may be moved into.
    pub fn holds_nothing(&self) -> Result<bool, StoreError> {
        let reader = self.reader()?;
        for table in TABLES {
            let any: bool = reader.query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", table.name),
                [],
                |row| row.get(0),
            )?;
            if any {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The [`TableDigest`] of every table.
    pub fn table_digest(&self) -> Result<String, StoreError> {
        let mut digest = TableDigest::default();
        for table in TABLES {
            digest.table(table);
            self.read_rows::<StoreError>(table, |cells| {
                digest.row(&cells);
                Ok(())
            })?;
        }
        Ok(digest.finish())
    }
}
