//! The storage seam: one small SQL facade over both backends, shaped like the part of
//! rusqlite the engine uses (`execute`, `query_row`, `prepare_cached`, `query_map`,
//! `optional`, `params!`), so the engine's rules and most of its SQL are written once.
//!
//! SQLite statements run as written, through rusqlite, with no copying of parameters or
//! rows. On PostgreSQL, `?N` placeholders become `$N`, parameters travel as [`Cell`]s that
//! take whatever type PostgreSQL inferred for them, and rows are read by their column types.
//! Where the dialects differ (full-text, JSON paths, the write lock), the engine asks
//! [`Connection::dialect`] and writes each form beside the other.

use std::cell::RefCell;
use std::error::Error as StdError;

use postgres::types::{IsNull, ToSql as PgToSql, Type};
use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::tables::Cell;

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, one file.
    Sqlite,
    /// PostgreSQL, a hub's database.
    Postgres,
}

/// A failure of either backend.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// A query that must return a row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A stored value does not fit the type asked for.
    #[error("column {column}: {detail}")]
    Conversion {
        /// Its index.
        column: usize,
        /// What was wrong.
        detail: String,
    },
}

impl DbError {
    /// A value read back does not make sense (`column` is its index in the row).
    pub(crate) fn conversion(column: usize, detail: impl Into<String>) -> Self {
        Self::Conversion {
            column,
            detail: detail.into(),
        }
    }
}

/// `Result<T, DbError>`.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Turns "no row" into `None`, like rusqlite's `OptionalExtension`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`DbError::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(DbError::NoRows) | Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// A statement's parameters: `params![a, b]`, `[a]`, or a list built at run time.
pub trait Params {
    /// The parameters in order.
    fn list(&self) -> Vec<&dyn ToSql>;
}

impl Params for &[&dyn ToSql] {
    fn list(&self) -> Vec<&dyn ToSql> {
        self.to_vec()
    }
}

impl<T: ToSql, const N: usize> Params for [T; N] {
    fn list(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|p| p as &dyn ToSql).collect()
    }
}

impl<T: ToSql> Params for &Vec<T> {
    fn list(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|p| p as &dyn ToSql).collect()
    }
}

impl<T: ToSql> Params for Vec<T> {
    fn list(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|p| p as &dyn ToSql).collect()
    }
}

/// Parameters from a list built at run time.
pub fn params_from_iter<T: ToSql>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    values.into_iter().collect()
}

/// `params![a, b, …]`: a statement's parameters, of any types rusqlite can bind.
macro_rules! params {
    () => {
        &[] as &[&dyn ::rusqlite::ToSql]
    };
    ($($param:expr),+ $(,)?) => {
        &[$(&$param as &dyn ::rusqlite::ToSql),+] as &[&dyn ::rusqlite::ToSql]
    };
}
pub(crate) use params;

/// A connection (or transaction) of either backend. Methods take `&self`, as rusqlite's do.
pub struct Connection<'a> {
    inner: Inner<'a>,
    /// On PostgreSQL with pgvector: vectors are also written to the `embedding` column.
    pgvector: bool,
}

/// The engine writes through the same type it reads through.
pub type Transaction<'a> = Connection<'a>;

enum Inner<'a> {
    SqliteReader(crate::connection_pool::PooledReader<'a>),
    SqliteTransaction(rusqlite::Transaction<'a>),
    Postgres(RefCell<PgHandle<'a>>),
}

enum PgHandle<'a> {
    Pooled(Box<r2d2::PooledConnection<haivemind_store_postgres::Manager>>),
    Transaction(postgres::Transaction<'a>),
}

impl PgHandle<'_> {
    fn query(&mut self, sql: &str, params: &[&(dyn PgToSql + Sync)]) -> Result<Vec<postgres::Row>> {
        Ok(match self {
            PgHandle::Pooled(client) => client.query(sql, params)?,
            PgHandle::Transaction(transaction) => transaction.query(sql, params)?,
        })
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn PgToSql + Sync)]) -> Result<u64> {
        Ok(match self {
            PgHandle::Pooled(client) => client.execute(sql, params)?,
            PgHandle::Transaction(transaction) => transaction.execute(sql, params)?,
        })
    }

    fn batch_execute(&mut self, sql: &str) -> Result<()> {
        match self {
            PgHandle::Pooled(client) => client.batch_execute(sql)?,
            PgHandle::Transaction(transaction) => transaction.batch_execute(sql)?,
        }
        Ok(())
    }
}

impl<'a> Connection<'a> {
    pub(crate) fn sqlite_reader(reader: crate::connection_pool::PooledReader<'a>) -> Self {
        Self {
            inner: Inner::SqliteReader(reader),
            pgvector: false,
        }
    }

    pub(crate) fn sqlite_transaction(transaction: rusqlite::Transaction<'a>) -> Self {
        Self {
            inner: Inner::SqliteTransaction(transaction),
            pgvector: false,
        }
    }

    pub(crate) fn postgres_pooled(
        connection: r2d2::PooledConnection<haivemind_store_postgres::Manager>,
        pgvector: bool,
    ) -> Self {
        Self {
            inner: Inner::Postgres(RefCell::new(PgHandle::Pooled(Box::new(connection)))),
            pgvector,
        }
    }

    pub(crate) fn postgres_transaction(
        transaction: postgres::Transaction<'a>,
        pgvector: bool,
    ) -> Self {
        Self {
            inner: Inner::Postgres(RefCell::new(PgHandle::Transaction(transaction))),
            pgvector,
        }
    }

    /// Whether vectors are ranked by pgvector here (PostgreSQL with the extension).
    pub(crate) fn pgvector(&self) -> bool {
        self.pgvector
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Postgres(_) => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    fn rusqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::SqliteReader(reader) => Some(reader),
            Inner::SqliteTransaction(transaction) => Some(transaction),
            Inner::Postgres(_) => None,
        }
    }

    /// Commits a transaction made by the store's `write`.
    pub(crate) fn commit(self) -> Result<()> {
        match self.inner {
            Inner::SqliteTransaction(transaction) => Ok(transaction.commit()?),
            Inner::Postgres(handle) => match handle.into_inner() {
                PgHandle::Transaction(transaction) => Ok(transaction.commit()?),
                PgHandle::Pooled(_) => Ok(()),
            },
            Inner::SqliteReader(_) => Ok(()),
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        match self.rusqlite() {
            Some(connection) => {
                Ok(connection.execute(sql, rusqlite::params_from_iter(params.list()))?)
            }
            None => self.pg_execute(sql, &params.list()),
        }
    }

    /// Runs statements with no parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match (&self.inner, self.rusqlite()) {
            (_, Some(connection)) => Ok(connection.execute_batch(sql)?),
            (Inner::Postgres(handle), None) => handle.borrow_mut().batch_execute(sql),
            _ => unreachable!("every connection is SQLite or PostgreSQL"),
        }
    }

    /// The first row, mapped; [`DbError::NoRows`] when there is none.
    pub fn query_row<P: Params, T>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        match self.rusqlite() {
            Some(connection) => {
                let mut statement = connection.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(params.list()))?;
                match rows.next()? {
                    Some(row) => map(&Row::Sqlite(row)),
                    None => Err(DbError::NoRows),
                }
            }
            None => {
                let rows = self.pg_query(sql, &params.list())?;
                match rows.first() {
                    Some(row) => map(&Row::Postgres(row)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    /// A statement to run (and, on SQLite, to keep prepared for the next call).
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            inner: match self.rusqlite() {
                Some(connection) => StatementInner::Sqlite(connection.prepare_cached(sql)?),
                None => StatementInner::Postgres(self, sql.to_string()),
            },
        })
    }

    /// A statement built for one use (dynamic filters), not kept.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            inner: match self.rusqlite() {
                Some(connection) => StatementInner::SqliteOnce(connection.prepare(sql)?),
                None => StatementInner::Postgres(self, sql.to_string()),
            },
        })
    }

    fn pg_handle(&self) -> &RefCell<PgHandle<'a>> {
        match &self.inner {
            Inner::Postgres(handle) => handle,
            _ => unreachable!("only called on PostgreSQL connections"),
        }
    }

    fn pg_query(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<postgres::Row>> {
        let cells = cells_of(params)?;
        let refs: Vec<&(dyn PgToSql + Sync)> = cells.iter().map(|c| c as _).collect();
        self.pg_handle()
            .borrow_mut()
            .query(&postgres_sql(sql), &refs)
    }

    fn pg_execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
        let cells = cells_of(params)?;
        let refs: Vec<&(dyn PgToSql + Sync)> = cells.iter().map(|c| c as _).collect();
        let changed = self
            .pg_handle()
            .borrow_mut()
            .execute(&postgres_sql(sql), &refs)?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }
}

/// A prepared statement of either backend.
pub struct Statement<'c> {
    inner: StatementInner<'c>,
}

enum StatementInner<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    SqliteOnce(rusqlite::Statement<'c>),
    Postgres(&'c dyn PgRun, String),
}

/// PostgreSQL's side of a connection, with its lifetime erased for statements.
trait PgRun {
    fn pg_query(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<postgres::Row>>;
    fn pg_execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize>;
}

impl PgRun for Connection<'_> {
    fn pg_query(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<postgres::Row>> {
        Connection::pg_query(self, sql, params)
    }
    fn pg_execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
        Connection::pg_execute(self, sql, params)
    }
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.inner {
            StatementInner::Sqlite(statement) => Some(statement),
            StatementInner::SqliteOnce(statement) => Some(statement),
            StatementInner::Postgres(..) => None,
        }
    }

    /// Runs it; returns how many rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        if let Some(statement) = self.sqlite() {
            return Ok(statement.execute(rusqlite::params_from_iter(params.list()))?);
        }
        match &self.inner {
            StatementInner::Postgres(connection, sql) => connection.pg_execute(sql, &params.list()),
            _ => unreachable!(),
        }
    }

    /// Every row, mapped (read whole: the engine's lists are bounded by their queries).
    pub fn query_map<P: Params, T>(
        &mut self,
        params: P,
        mut map: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut mapped = Vec::new();
        if let Some(statement) = self.sqlite() {
            let mut rows = statement.query(rusqlite::params_from_iter(params.list()))?;
            while let Some(row) = rows.next()? {
                mapped.push(map(&Row::Sqlite(row)));
            }
            return Ok(mapped.into_iter());
        }
        match &self.inner {
            StatementInner::Postgres(connection, sql) => {
                for row in connection.pg_query(sql, &params.list())? {
                    mapped.push(map(&Row::Postgres(&row)));
                }
            }
            _ => unreachable!(),
        }
        Ok(mapped.into_iter())
    }

    /// Calls `each` with every row as it comes (SQLite streams; PostgreSQL reads the
    /// answer whole).
    pub fn for_each_row<P: Params>(
        &mut self,
        params: P,
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        if let Some(statement) = self.sqlite() {
            let mut rows = statement.query(rusqlite::params_from_iter(params.list()))?;
            while let Some(row) = rows.next()? {
                each(&Row::Sqlite(row))?;
            }
            return Ok(());
        }
        match &self.inner {
            StatementInner::Postgres(connection, sql) => {
                for row in connection.pg_query(sql, &params.list())? {
                    each(&Row::Postgres(&row))?;
                }
                Ok(())
            }
            _ => unreachable!(),
        }
    }

    /// The first row, mapped; [`DbError::NoRows`] when there is none.
    pub fn query_row<P: Params, T>(
        &mut self,
        params: P,
        map: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        if let Some(statement) = self.sqlite() {
            let mut rows = statement.query(rusqlite::params_from_iter(params.list()))?;
            return match rows.next()? {
                Some(row) => map(&Row::Sqlite(row)),
                None => Err(DbError::NoRows),
            };
        }
        match &self.inner {
            StatementInner::Postgres(connection, sql) => {
                let rows = connection.pg_query(sql, &params.list())?;
                match rows.first() {
                    Some(row) => map(&Row::Postgres(row)),
                    None => Err(DbError::NoRows),
                }
            }
            _ => unreachable!(),
        }
    }

    /// Whether it returns any row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        self.query_row(params, |_| Ok(()))
            .optional()
            .map(|row| row.is_some())
    }
}

/// A row of either backend.
pub enum Row<'r> {
    /// SQLite's, read in place.
    Sqlite(&'r rusqlite::Row<'r>),
    /// PostgreSQL's.
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// The value of column `index` as `T`.
    pub fn get<I: ColumnIndex, T: FromColumn>(&self, index: I) -> Result<T> {
        let index = index.position();
        match self {
            Row::Sqlite(row) => T::from_sqlite(row.get_ref(index)?, index),
            Row::Postgres(row) => T::from_postgres(row, index),
        }
    }

    /// Column `index` as bytes, lent to `read` without a copy on SQLite.
    pub fn with_blob<T>(&self, index: usize, read: impl FnOnce(&[u8]) -> T) -> Result<T> {
        match self {
            Row::Sqlite(row) => Ok(read(
                row.get_ref(index)?
                    .as_blob()
                    .map_err(rusqlite::Error::from)?,
            )),
            Row::Postgres(row) => {
                let bytes: &[u8] = row.try_get(index)?;
                Ok(read(bytes))
            }
        }
    }

    /// Column `index` as text (`None` for NULL), lent to `read` without a copy on SQLite.
    pub fn with_text<T>(&self, index: usize, read: impl FnOnce(Option<&str>) -> T) -> Result<T> {
        match self {
            Row::Sqlite(row) => Ok(read(
                row.get_ref(index)?
                    .as_str_or_null()
                    .map_err(rusqlite::Error::from)?,
            )),
            Row::Postgres(row) => {
                let text: Option<&str> = row.try_get(index)?;
                Ok(read(text))
            }
        }
    }

    /// Column `index` as a [`Cell`], whatever its type.
    pub fn cell(&self, index: usize) -> Result<Cell> {
        match self {
            Row::Sqlite(row) => cell_of_sqlite(row.get_ref(index)?, index),
            Row::Postgres(row) => cell_of_postgres(row, index),
        }
    }
}

/// A column's position: `row.get(0)` as with rusqlite.
pub trait ColumnIndex {
    /// The position.
    fn position(self) -> usize;
}

impl ColumnIndex for usize {
    fn position(self) -> usize {
        self
    }
}

impl ColumnIndex for i32 {
    fn position(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

/// A type a column can be read as, on either backend.
pub trait FromColumn: Sized {
    /// From SQLite's value.
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self>;
    /// From PostgreSQL's row, by the column's type.
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self>;
}

fn cell_of_sqlite(value: ValueRef<'_>, index: usize) -> Result<Cell> {
    Ok(match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(value) => Cell::Integer(value),
        ValueRef::Real(value) => Cell::Real(value),
        ValueRef::Text(text) => Cell::Text(
            std::str::from_utf8(text)
                .map_err(|_| DbError::conversion(index, "text is not UTF-8"))?
                .to_string(),
        ),
        ValueRef::Blob(bytes) => Cell::Blob(bytes.to_vec()),
    })
}

fn cell_of_postgres(row: &postgres::Row, index: usize) -> Result<Cell> {
    let column_type = row
        .columns()
        .get(index)
        .ok_or_else(|| DbError::conversion(index, "no such column"))?
        .type_()
        .clone();
    Ok(match column_type {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)?
            .map_or(Cell::Null, Cell::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)?
            .map_or(Cell::Null, |v| Cell::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)?
            .map_or(Cell::Null, |v| Cell::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map_or(Cell::Null, |v| Cell::Integer(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)?
            .map_or(Cell::Null, Cell::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)?
            .map_or(Cell::Null, |v| Cell::Real(v.into())),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(index)?
            .map_or(Cell::Null, Cell::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
            .try_get::<_, Option<String>>(index)?
            .map_or(Cell::Null, Cell::Text),
        other => {
            return Err(DbError::conversion(
                index,
                format!("PostgreSQL type {other} is not read by the engine (cast it in the query)"),
            ));
        }
    })
}

impl FromColumn for Cell {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        cell_of_sqlite(value, index)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        cell_of_postgres(row, index)
    }
}

impl FromColumn for i64 {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        match value {
            ValueRef::Integer(value) => Ok(value),
            _ => Err(DbError::conversion(index, "not an integer")),
        }
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        match cell_of_postgres(row, index)? {
            Cell::Integer(value) => Ok(value),
            _ => Err(DbError::conversion(index, "not an integer")),
        }
    }
}

impl FromColumn for f64 {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        match value {
            ValueRef::Real(value) => Ok(value),
            ValueRef::Integer(value) => Ok(value as f64),
            _ => Err(DbError::conversion(index, "not a number")),
        }
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        match cell_of_postgres(row, index)? {
            Cell::Real(value) => Ok(value),
            Cell::Integer(value) => Ok(value as f64),
            _ => Err(DbError::conversion(index, "not a number")),
        }
    }
}

impl FromColumn for bool {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        i64::from_sqlite(value, index).map(|v| v != 0)
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        i64::from_postgres(row, index).map(|v| v != 0)
    }
}

macro_rules! from_integer_column {
    ($($t:ty),*) => {$(
        impl FromColumn for $t {
            fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
                <$t>::try_from(i64::from_sqlite(value, index)?)
                    .map_err(|_| DbError::conversion(index, "integer out of range"))
            }
            fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
                <$t>::try_from(i64::from_postgres(row, index)?)
                    .map_err(|_| DbError::conversion(index, "integer out of range"))
            }
        }
    )*};
}
from_integer_column!(i32, u32, u64, usize, u8);

impl FromColumn for String {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        match value {
            ValueRef::Text(text) => std::str::from_utf8(text)
                .map(str::to_string)
                .map_err(|_| DbError::conversion(index, "text is not UTF-8")),
            _ => Err(DbError::conversion(index, "not text")),
        }
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        match cell_of_postgres(row, index)? {
            Cell::Text(text) => Ok(text),
            _ => Err(DbError::conversion(index, "not text")),
        }
    }
}

impl FromColumn for Vec<u8> {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        match value {
            ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
            _ => Err(DbError::conversion(index, "not bytes")),
        }
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        match cell_of_postgres(row, index)? {
            Cell::Blob(bytes) => Ok(bytes),
            _ => Err(DbError::conversion(index, "not bytes")),
        }
    }
}

impl<T: FromColumn> FromColumn for Option<T> {
    fn from_sqlite(value: ValueRef<'_>, index: usize) -> Result<Self> {
        match value {
            ValueRef::Null => Ok(None),
            value => T::from_sqlite(value, index).map(Some),
        }
    }
    fn from_postgres(row: &postgres::Row, index: usize) -> Result<Self> {
        match cell_of_postgres(row, index)? {
            Cell::Null => Ok(None),
            _ => T::from_postgres(row, index).map(Some),
        }
    }
}

/// A parameter's value as PostgreSQL will get it, from what rusqlite would bind.
fn cells_of(params: &[&dyn ToSql]) -> Result<Vec<Cell>> {
    params
        .iter()
        .enumerate()
        .map(|(index, param)| {
            let output = param.to_sql()?;
            let value = match &output {
                ToSqlOutput::Borrowed(value) => *value,
                ToSqlOutput::Owned(value) => ValueRef::from(value),
                _ => {
                    return Err(DbError::conversion(
                        index,
                        "a parameter kind PostgreSQL cannot take",
                    ));
                }
            };
            cell_of_sqlite(value, index)
        })
        .collect()
}

/// A statement written for SQLite, as PostgreSQL takes it: placeholders renumbered, and
/// SQLite's JSON functions as PostgreSQL's (the engine's SQL uses them in two shapes only:
/// `json_extract(column, '$.a.b')` and `json_each(column, '$.a.b') alias`). Translations
/// are kept, since the engine's statements repeat.
pub(crate) fn postgres_sql(sql: &str) -> std::sync::Arc<str> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static TRANSLATED: OnceLock<Mutex<HashMap<String, Arc<str>>>> = OnceLock::new();
    let cache = TRANSLATED.get_or_init(Default::default);
    if let Some(known) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(sql) {
        return Arc::clone(known);
    }
    // SQLite reads `CROSS JOIN … ON` as an inner join the planner may not reorder;
    // PostgreSQL takes no `ON` after `CROSS JOIN`, and plans joins itself.
    let translated: Arc<str> = placeholders(&json_functions(sql))
        .replace("CROSS JOIN", "JOIN")
        .into();
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 2048 {
        cache.clear(); // dynamic statements (filters, id lists) must not grow it forever
    }
    cache.insert(sql.to_string(), Arc::clone(&translated));
    translated
}

/// `'$.a.b'` as PostgreSQL's path `'{a,b}'`.
fn json_path(literal: &str) -> Option<String> {
    let path = literal.strip_prefix("'$.")?.strip_suffix('\'')?;
    Some(format!(
        "'{{{}}}'",
        path.split('.').collect::<Vec<_>>().join(",")
    ))
}

/// Splits `name(first, 'path')…` at its two arguments; returns them and the rest after `)`.
fn two_arguments(after_name: &str) -> Option<(&str, &str, &str)> {
    let mut depth = 0usize;
    let mut comma = None;
    for (i, c) in after_name.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                let comma = comma?;
                return Some((
                    after_name[..comma].trim(),
                    after_name[comma + 1..i].trim(),
                    &after_name[i + 1..],
                ));
            }
            ')' => depth -= 1,
            ',' if depth == 0 => comma = Some(i),
            _ => {}
        }
    }
    None
}

fn json_functions(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    loop {
        let extract = rest.find("json_extract(");
        let each = rest.find("json_each(");
        let (at, is_each) = match (extract, each) {
            (Some(a), Some(b)) if b < a => (b, true),
            (Some(a), _) => (a, false),
            (None, Some(b)) => (b, true),
            (None, None) => break,
        };
        let name_len = if is_each {
            "json_each(".len()
        } else {
            "json_extract(".len()
        };
        out.push_str(&rest[..at]);
        let after = &rest[at + name_len..];
        match two_arguments(after)
            .and_then(|(column, path, tail)| json_path(path).map(|path| (column, path, tail)))
        {
            Some((column, path, tail)) if !is_each => {
                out.push_str(&format!("(CAST({column} AS jsonb) #>> {path})"));
                rest = tail;
            }
            Some((column, path, tail)) => {
                // `json_each(…) alias`: the alias names one column, `value`.
                let tail = tail.trim_start();
                let alias_len = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let alias = &tail[..alias_len];
                out.push_str(&format!(
                    "jsonb_array_elements_text(CAST({column} AS jsonb) #> {path}) AS {alias}(value)"
                ));
                rest = &tail[alias_len..];
            }
            None => {
                // Not a shape this translation knows: leave it for PostgreSQL to refuse.
                out.push_str(&rest[at..at + name_len]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// SQLite's `?N` and `?` placeholders as PostgreSQL's `$N`, leaving quoted text alone.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut next_plain = 0usize;
    let mut highest = 0usize;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
            continue;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let number = if digits.is_empty() {
            next_plain = next_plain.max(highest) + 1;
            next_plain
        } else {
            digits.parse().unwrap_or(0)
        };
        highest = highest.max(number);
        out.push('$');
        out.push_str(&number.to_string());
    }
    out
}

fn encode<T: PgToSql>(
    value: &T,
    ty: &Type,
    out: &mut bytes::BytesMut,
) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
    PgToSql::to_sql(value, ty, out)
}

impl PgToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Integer(value) => match *ty {
                Type::INT8 => encode(&value, ty, out),
                Type::INT4 => encode(&i32::try_from(*value)?, ty, out),
                Type::INT2 => encode(&i16::try_from(*value)?, ty, out),
                Type::BOOL => encode(&(*value != 0), ty, out),
                Type::FLOAT8 => encode(&(*value as f64), ty, out),
                Type::FLOAT4 => encode(&(*value as f32), ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    encode(&value.to_string(), &Type::TEXT, out)
                }
                _ => Err(format!("an integer cannot be bound as {ty}").into()),
            },
            Cell::Real(value) => match *ty {
                Type::FLOAT4 => encode(&(*value as f32), ty, out),
                Type::FLOAT8 => encode(&value, ty, out),
                _ => Err(format!("a number cannot be bound as {ty}").into()),
            },
            Cell::Text(text) => match *ty {
                Type::INT8 => encode(&text.parse::<i64>()?, ty, out),
                // jsonb's binary form is a version byte, then the JSON text.
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.extend_from_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    encode(&text.as_str(), &Type::TEXT, out)
                }
                _ => Err(format!("text cannot be bound as {ty}").into()),
            },
            Cell::Blob(bytes) => match *ty {
                Type::BYTEA => encode(&bytes.as_slice(), &Type::BYTEA, out),
                _ => Err(format!("bytes cannot be bound as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_numbers_outside_quotes() {
        assert_eq!(
            &*postgres_sql("SELECT a FROM t WHERE b = ?1 AND c = ?2 AND d = '?' AND e = ?1"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = '?' AND e = $1"
        );
        assert_eq!(&*postgres_sql("VALUES (?, ?, ?)"), "VALUES ($1, $2, $3)");
        assert_eq!(&*postgres_sql("x = ?3 OR y = ?"), "x = $3 OR y = $4");
    }

    #[test]
    fn sqlite_json_functions_become_postgres_ones() {
        assert_eq!(
            &*postgres_sql("WHERE lower(json_extract(m.metadata, '$.runbook.title')) = lower(?1)"),
            "WHERE lower((CAST(m.metadata AS jsonb) #>> '{runbook,title}')) = lower($1)"
        );
        assert_eq!(
            &*postgres_sql(
                "EXISTS (SELECT 1 FROM json_each(m.metadata, '$.incident.affected_systems') s WHERE lower(s.value) = lower(?3))"
            ),
            "EXISTS (SELECT 1 FROM jsonb_array_elements_text(CAST(m.metadata AS jsonb) #> '{incident,affected_systems}') AS s(value) WHERE lower(s.value) = lower($3))"
        );
    }
}
