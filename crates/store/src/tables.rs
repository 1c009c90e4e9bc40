//! The schema's tables as plain rows, for moving a whole store between backends
//! (`haivemind migrate`): every table that holds ground truth or node state, in an order
//! that satisfies foreign keys, with the columns both backends share and the key that orders
//! their rows. Derived data is left out (the full-text index, pgvector's column): each
//! backend rebuilds its own.
//!
//! [`TableDigest`] hashes rows canonically, so a copy read back from the other backend
//! proves itself by an equal digest.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use sha2::{Digest, Sha256};

use crate::db::{Dialect, params};
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
            "tool_profile",
            "parent_id",
            "client_id",
            "grant_id",
            "audience",
            "expires_at",
        ],
        key: &["id"],
        identity: None,
    },
    TableShape {
        name: "oauth_clients",
        columns: &["id", "name", "redirect_uris", "created_at"],
        key: &["id"],
        identity: None,
    },
    TableShape {
        name: "oauth_refresh_tokens",
        columns: &[
            "digest",
            "grant_id",
            "client_id",
            "parent_id",
            "role",
            "audience",
            "tool_profile",
            "created_at",
            "expires_at",
            "used_at",
            "revoked_at",
        ],
        key: &["digest"],
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

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Owned(Value::Null),
            Cell::Integer(value) => ToSqlOutput::Owned(Value::Integer(*value)),
            Cell::Real(value) => ToSqlOutput::Owned(Value::Real(*value)),
            Cell::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Cell::Blob(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
        })
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
        let mut failure = None;
        statement
            .for_each_row(params![], |row| {
                let mut cells = Vec::with_capacity(table.columns.len());
                for index in 0..table.columns.len() {
                    cells.push(row.cell(index)?);
                }
                if failure.is_none()
                    && let Err(error) = each(cells)
                {
                    failure = Some(error);
                }
                Ok(())
            })
            .map_err(StoreError::from)?;
        failure.map_or(Ok(()), Err)
    }

    /// Inserts rows into `table` as they are (ids and sequence numbers included), in one
    /// transaction; on PostgreSQL the table's identity counter moves past them, and vectors
    /// also fill pgvector's column when it exists. Used on an empty store only: see
    /// [`Store::holds_nothing`].
    pub fn write_rows(&self, table: &TableShape, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        let pgvector = self.postgres().is_some_and(|database| {
            database.vector_ranking() == haivemind_store_postgres::VectorRanking::Pgvector
        });
        self.transact(|tx| {
            let dialect = tx.dialect();
            let with_embedding = pgvector && table.name == "memory_vectors";
            let mut columns: Vec<String> = table.columns.iter().map(|c| c.to_string()).collect();
            let mut placeholders: Vec<String> =
                (1..=columns.len()).map(|i| format!("?{i}")).collect();
            if with_embedding {
                columns.push("embedding".into());
                placeholders.push(format!("CAST(?{} AS text)::vector", columns.len()));
            }
            let overriding = match (dialect, table.identity) {
                (Dialect::Postgres, Some(_)) => " OVERRIDING SYSTEM VALUE",
                _ => "",
            };
            let mut insert = tx.prepare(&format!(
                "INSERT INTO {} ({}){overriding} VALUES ({})",
                table.name,
                columns.join(", "),
                placeholders.join(", ")
            ))?;
            for row in rows {
                let mut values: Vec<Cell> = row.clone();
                if with_embedding {
                    let bytes = match row.get(3) {
                        Some(Cell::Blob(bytes)) => bytes.as_slice(),
                        _ => &[],
                    };
                    let floats: Vec<f32> = bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    values.push(Cell::Text(crate::vectors::pgvector_literal(&floats)));
                }
                insert.execute(&values)?;
            }
            if let (Dialect::Postgres, Some(identity)) = (dialect, table.identity) {
                tx.query_row(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', '{identity}'),
                                       coalesce((SELECT max({identity}) FROM {0}), 0) + 1, false)",
                        table.name
                    ),
                    params![],
                    |_| Ok(()),
                )?;
            }
            Ok(())
        })
    }

    /// How many rows `table` holds.
    pub fn count_rows(&self, table: &TableShape) -> Result<u64, StoreError> {
        let count: i64 = self.reader()?.query_row(
            &format!("SELECT count(*) FROM {}", table.name),
            params![],
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
                params![],
                |row| row.get(0),
            )?;
            if any {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The [`TableDigest`] of every table: equal on two stores (of either backend) exactly
    /// when they hold the same rows.
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
