//! Whole tables in and out of the hub's database, for `haivemind migrate`: the same
//! [`TableShape`]s and [`Cell`]s the SQLite store reads and writes, so a copy is checked by
//! an equal [`TableDigest`] on both sides.

use haivemind_store::tables::{Cell, TABLES, TableDigest, TableShape};
use postgres::types::{ToSql, Type};

use crate::connection::VectorRanking;
use crate::{Database, PostgresError};

/// How a column is typed here, so a [`Cell`] goes in and comes out the same.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ColumnType {
    Integer,
    Boolean,
    Real,
    Text,
    Bytes,
}

fn column_type(data_type: &str) -> Result<ColumnType, PostgresError> {
    Ok(match data_type {
        "bigint" | "integer" | "smallint" => ColumnType::Integer,
        "boolean" => ColumnType::Boolean,
        "double precision" | "real" => ColumnType::Real,
        "text" => ColumnType::Text,
        "bytea" => ColumnType::Bytes,
        other => {
            return Err(PostgresError::Config(format!(
                "unexpected column type {other} in the hub's schema"
            )));
        }
    })
}

impl Database {
    fn column_types(&self, table: &TableShape) -> Result<Vec<ColumnType>, PostgresError> {
        let mut connection = self.connection()?;
        let mut types = Vec::with_capacity(table.columns.len());
        for column in table.columns {
            let row = connection.query_one(
                "SELECT data_type FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                &[&table.name, column],
            )?;
            types.push(column_type(row.get(0))?);
        }
        Ok(types)
    }

    /// Calls `each` with every row of `table`, in key order (byte order for text, as
    /// SQLite's, whatever the database's collation).
    pub fn read_rows<E: From<PostgresError>>(
        &self,
        table: &TableShape,
        mut each: impl FnMut(Vec<Cell>) -> Result<(), E>,
    ) -> Result<(), E> {
        let types = self.column_types(table)?;
        let order: Vec<String> = table
            .key
            .iter()
            .map(|key| {
                let index = table.columns.iter().position(|c| c == key);
                match index.map(|i| types[i]) {
                    Some(ColumnType::Text) => format!("{key} COLLATE \"C\""),
                    _ => key.to_string(),
                }
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            table.columns.join(", "),
            table.name,
            order.join(", ")
        );
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction().map_err(PostgresError::from)?;
        // A cursor, so a large table streams instead of arriving whole.
        let portal = transaction.bind(&sql, &[]).map_err(PostgresError::from)?;
        loop {
            let rows = transaction
                .query_portal(&portal, 1000)
                .map_err(PostgresError::from)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let mut cells = Vec::with_capacity(types.len());
                for (index, kind) in types.iter().enumerate() {
                    cells.push(cell_at(&row, index, *kind).map_err(PostgresError::from)?);
                }
                each(cells)?;
            }
        }
        Ok(())
    }

    /// Inserts rows into `table` as they are (ids and sequence numbers included) in one
    /// transaction, then moves the table's identity counter past them. On a pgvector
    /// database, vectors also fill the `embedding` column HNSW ranks.
    pub fn write_rows(&self, table: &TableShape, rows: &[Vec<Cell>]) -> Result<(), PostgresError> {
        let types = self.column_types(table)?;
        let with_embedding =
            table.name == "memory_vectors" && self.vector_ranking() == VectorRanking::Pgvector;
        let mut columns: Vec<String> = table.columns.iter().map(|c| c.to_string()).collect();
        let mut placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        if with_embedding {
            columns.push("embedding".into());
            placeholders.push(format!("${}::text::vector", columns.len()));
        }
        let overriding = if table.identity.is_some() {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO {} ({}){overriding} VALUES ({})",
            table.name,
            columns.join(", "),
            placeholders.join(", ")
        );
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        let statement = transaction.prepare(&sql)?;
        for row in rows {
            let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(row.len() + 1);
            for (cell, kind) in row.iter().zip(&types) {
                values.push(sql_value(cell, *kind, table)?);
            }
            if with_embedding {
                let bytes = match row.get(3) {
                    Some(Cell::Blob(bytes)) => bytes.as_slice(),
                    _ => &[],
                };
                values.push(Box::new(vector_literal(bytes)));
            }
            let parameters: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
            transaction.execute(&statement, &parameters)?;
        }
        if let Some(identity) = table.identity {
            transaction.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{identity}'),
                                   coalesce((SELECT max({identity}) FROM {0}), 0) + 1, false)",
                    table.name
                ),
                &[],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// How many rows `table` holds.
    pub fn count_rows(&self, table: &TableShape) -> Result<u64, PostgresError> {
        let count: i64 = self
            .connection()?
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])?
            .get(0);
        Ok(count.max(0) as u64)
    }

    /// True when no table holds a row: the only state a whole store may be moved into.
    pub fn holds_nothing(&self) -> Result<bool, PostgresError> {
        let mut connection = self.connection()?;
        for table in TABLES {
            let any: bool = connection
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", table.name),
                    &[],
                )?
                .get(0);
            if any {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The [`TableDigest`] of every table: equal to the SQLite store's
    /// (`Store::table_digest`) exactly when both hold the same rows.
    pub fn table_digest(&self) -> Result<String, PostgresError> {
        let mut digest = TableDigest::default();
        for table in TABLES {
            digest.table(table);
            self.read_rows::<PostgresError>(table, |cells| {
                digest.row(&cells);
                Ok(())
            })?;
        }
        Ok(digest.finish())
    }
}

fn cell_at(row: &postgres::Row, index: usize, kind: ColumnType) -> Result<Cell, postgres::Error> {
    Ok(match kind {
        ColumnType::Integer => {
            let value: Option<i64> = match *row.columns()[index].type_() {
                Type::INT4 => row.try_get::<_, Option<i32>>(index)?.map(i64::from),
                Type::INT2 => row.try_get::<_, Option<i16>>(index)?.map(i64::from),
                _ => row.try_get(index)?,
            };
            value.map_or(Cell::Null, Cell::Integer)
        }
        ColumnType::Boolean => row
            .try_get::<_, Option<bool>>(index)?
            .map_or(Cell::Null, |b| Cell::Integer(i64::from(b))),
        ColumnType::Real => row
            .try_get::<_, Option<f64>>(index)?
            .map_or(Cell::Null, Cell::Real),
        ColumnType::Text => row
            .try_get::<_, Option<String>>(index)?
            .map_or(Cell::Null, Cell::Text),
        ColumnType::Bytes => row
            .try_get::<_, Option<Vec<u8>>>(index)?
            .map_or(Cell::Null, Cell::Blob),
    })
}

fn sql_value(
    cell: &Cell,
    kind: ColumnType,
    table: &TableShape,
) -> Result<Box<dyn ToSql + Sync>, PostgresError> {
    let mismatch = || {
        PostgresError::Config(format!(
            "a value in {} does not fit its column's type",
            table.name
        ))
    };
    Ok(match (cell, kind) {
        (Cell::Null, ColumnType::Integer) => Box::new(None::<i64>),
        (Cell::Null, ColumnType::Boolean) => Box::new(None::<bool>),
        (Cell::Null, ColumnType::Real) => Box::new(None::<f64>),
        (Cell::Null, ColumnType::Text) => Box::new(None::<String>),
        (Cell::Null, ColumnType::Bytes) => Box::new(None::<Vec<u8>>),
        (Cell::Integer(value), ColumnType::Integer) => Box::new(*value),
        (Cell::Integer(value), ColumnType::Boolean) => Box::new(*value != 0),
        (Cell::Real(value), ColumnType::Real) => Box::new(*value),
        (Cell::Text(text), ColumnType::Text) => Box::new(text.clone()),
        (Cell::Blob(bytes), ColumnType::Bytes) => Box::new(bytes.clone()),
        _ => return Err(mismatch()),
    })
}

/// pgvector's text form of little-endian `f32` bytes: `[0.1,0.2,…]`.
fn vector_literal(bytes: &[u8]) -> String {
    let values: Vec<String> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).to_string())
        .collect();
    format!("[{}]", values.join(","))
}
