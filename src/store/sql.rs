//! One SQL interface over the master's two engines, SQLite (embedded, the
//! default) and PostgreSQL (shared by several masters): the store's methods
//! are written once against [`Conn`], whose calls read as rusqlite's
//! (`prepare_cached`, `execute`, `query_map`, `query_row`, `optional`), and
//! whose rows are plain [`Value`]s, so a method does not know which engine
//! runs it. Statements are written in SQLite's dialect with `?N`
//! parameters; for PostgreSQL [`postgres_dialect`] numbers them `$N` and
//! quotes the `user` column (a reserved word there). The few statements
//! that cannot be written once pick by [`Conn::engine`].

use std::cell::RefCell;
use std::collections::HashMap;

use super::StoreError;

/// Which database engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A value in a row or a parameter, whatever the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What can be a statement parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u8);

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// A statement's parameters: `params![a, b]`, an array of one type, or
/// `[]` for none.
pub trait Params {
    fn values(self) -> Vec<Value>;
}

impl Params for &[&dyn ToValue] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

impl<const N: usize> Params for &[&dyn ToValue; N] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}

/// `[]`: no parameters (the element type is named so `[]` infers).
impl Params for [&dyn ToValue; 0] {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}

/// Parameters of mixed types, as rusqlite's macro of the same name.
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::store::sql::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::sql::ToValue),+] as &[&dyn $crate::store::sql::ToValue]
    };
}
pub(crate) use params;

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(n) => Ok(*n),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! narrow_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, String> {
                let n = i64::from_value(value)?;
                <$t>::try_from(n).map_err(|_| format!("{n} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
narrow_from_value!(i32, u32, u64, usize);

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Real(x) => Ok(*x),
            Value::Int(n) => Ok(*n as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(t) => Ok(t.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(t) => Ok(t.clone().into_bytes()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A column index: `usize`, or an integer literal.
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl RowIndex for i32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

/// One result row, read whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// Column `i` as `T` (`r.get::<_, String>(0)`, as rusqlite).
    pub fn get<I: RowIndex, T: FromValue>(&self, i: I) -> Result<T, StoreError> {
        let i = i.index();
        let value = self
            .values
            .get(i)
            .ok_or_else(|| StoreError::Column(format!("no column {i} in a row of {}", self.values.len())))?;
        T::from_value(value).map_err(|e| StoreError::Column(format!("column {i}: {e}")))
    }
}

/// `Ok(None)` for a query that found no row, as rusqlite's trait.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> OptionalExtension<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(t) => Ok(Some(t)),
            Err(StoreError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A PostgreSQL session on a store thread: the connection and its prepared
/// statements (PostgreSQL has no statement cache of its own).
pub struct PgSession {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl PgSession {
    pub fn new(client: postgres::Client) -> PgSession {
        PgSession {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        self.client.borrow_mut()
    }

    /// Whether the connection is gone (the server restarted, the network
    /// dropped): the next request needs a new one.
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.borrow_mut().prepare(&postgres_dialect(sql))?;
        self.statements.borrow_mut().insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn execute(&self, sql: &str, params: Vec<Value>) -> Result<usize, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<PgParam> = params.into_iter().map(PgParam).collect();
        let n = self.client.borrow_mut().execute(&statement, &pg_refs(&params))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let params: Vec<PgParam> = params.into_iter().map(PgParam).collect();
        let rows = self.client.borrow_mut().query(&statement, &pg_refs(&params))?;
        rows.iter().map(pg_row).collect()
    }
}

/// Parameters as the client takes them.
fn pg_refs(params: &[PgParam]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// A connection to the master's database, lent to one store request.
#[derive(Clone, Copy)]
pub enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a PgSession),
}

impl<'a> Conn<'a> {
    pub fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// `sqlite` on SQLite, `postgres` on PostgreSQL: for the few statements
    /// the two dialects cannot share.
    pub fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Conn::Sqlite(_) => sqlite,
            Conn::Postgres(_) => postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (the relay's own
    /// store, backups); `None` on PostgreSQL.
    pub fn sqlite(&self) -> Option<&'a rusqlite::Connection> {
        match self {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    /// A statement, prepared once per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'a>, StoreError> {
        Ok(match *self {
            Conn::Sqlite(c) => Stmt::Sqlite(c.prepare_cached(sql)?),
            Conn::Postgres(s) => {
                s.statement(sql)?;
                Stmt::Postgres(s, sql.to_string())
            }
        })
    }

    /// As [`Conn::prepare_cached`] (every statement is cached).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'a>, StoreError> {
        self.prepare_cached(sql)
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, StoreError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs statements without parameters (`;`-separated), returning nothing.
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(s) => Ok(s.client.borrow_mut().batch_execute(sql)?),
        }
    }

    /// The one row `sql` finds as `f` makes it, or [`StoreError::NoRow`].
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// A prepared statement of a [`Conn`].
pub enum Stmt<'a> {
    Sqlite(rusqlite::CachedStatement<'a>),
    Postgres(&'a PgSession, String),
}

impl Stmt<'_> {
    /// Runs the statement; how many rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize, StoreError> {
        let values = params.values();
        match self {
            Stmt::Sqlite(stmt) => Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?),
            Stmt::Postgres(session, sql) => session.execute(sql, values),
        }
    }

    /// Every row, read whole.
    pub fn rows(&mut self, params: impl Params) -> Result<Vec<Row>, StoreError> {
        let values = params.values();
        match self {
            Stmt::Sqlite(stmt) => {
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let values = (0..columns)
                        .map(|i| row.get::<_, rusqlite::types::Value>(i).map(from_sqlite))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(Row { values });
                }
                Ok(out)
            }
            Stmt::Postgres(session, sql) => session.query(sql, values),
        }
    }

    /// Every row as `f` makes it, as rusqlite's `query_map` (read whole
    /// first: the iterator holds no cursor).
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError> {
        let rows = self.rows(params)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }

    /// The first row as `f` makes it, or [`StoreError::NoRow`].
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rows = self.rows(params)?;
        rows.first().map_or(Err(StoreError::NoRow), f)
    }

    /// Whether the statement finds a row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool, StoreError> {
        Ok(!self.rows(params)?.is_empty())
    }
}

/// A parameter for SQLite, bound without a copy.
impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Real(x) => ValueRef::Real(*x),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn from_sqlite(value: rusqlite::types::Value) -> Value {
    match value {
        rusqlite::types::Value::Null => Value::Null,
        rusqlite::types::Value::Integer(n) => Value::Int(n),
        rusqlite::types::Value::Real(x) => Value::Real(x),
        rusqlite::types::Value::Text(t) => Value::Text(t),
        rusqlite::types::Value::Blob(b) => Value::Blob(b),
    }
}

/// A parameter for PostgreSQL, written as the type the statement expects:
/// an integer as `bigint`, `integer`, `smallint` or `boolean`, text as any
/// text type.
#[derive(Debug)]
struct PgParam(Value);

impl postgres::types::ToSql for PgParam {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match &self.0 {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                _ => n.to_string().to_sql(ty, out),
            },
            Value::Real(x) => x.to_sql(ty, out),
            Value::Text(t) => t.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL row as [`Value`]s, by each column's type.
fn pg_row(row: &postgres::Row) -> Result<Row, StoreError> {
    use postgres::types::Type;
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match *column.type_() {
                Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Int),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)?
                    .map_or(Value::Null, |n| Value::Int(n.into())),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)?
                    .map_or(Value::Null, |n| Value::Int(n.into())),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)?
                    .map_or(Value::Null, |b| Value::Int(b.into())),
                Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map_or(Value::Null, Value::Real),
                Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Value::Null, Value::Blob),
                Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                    row.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text)
                }
                ref other => {
                    return Err(StoreError::Column(format!(
                        "column {} has type {other}, which the store does not read (cast it in the query)",
                        column.name()
                    )))
                }
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Row { values })
}

/// A statement in SQLite's dialect as PostgreSQL takes it: `?N` parameters
/// become `$N`, and the column `user` (a reserved word there, meaning
/// `current_user`) is quoted. Text in quotes is left alone.
pub fn postgres_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            // Copy the quoted text, with its doubled quotes, as it is.
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        out.push(c);
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
        } else if c == '?' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
            i += 1;
        } else if ident(c) && (i == 0 || !ident(chars[i - 1])) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "user" {
                out.push_str("\"user\"");
            } else {
                out.push_str(&word);
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_dialect_numbers_parameters_and_quotes_the_user_column() {
        assert_eq!(
            postgres_dialect("SELECT body FROM probes WHERE user = ?1 AND p.user = ?12 AND users = 'user ?1'"),
            "SELECT body FROM probes WHERE \"user\" = $1 AND p.\"user\" = $12 AND users = 'user ?1'"
        );
        assert_eq!(
            postgres_dialect("SELECT 'it''s ?1', \"user\""),
            "SELECT 'it''s ?1', \"user\""
        );
        assert_eq!(
            postgres_dialect("INSERT INTO t (user_id) VALUES (?1)"),
            "INSERT INTO t (user_id) VALUES ($1)"
        );
    }

    #[test]
    fn a_sqlite_connection_reads_and_writes_through_the_common_interface() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let c = Conn::Sqlite(&conn);
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
            .unwrap();
        c.execute(
            "INSERT INTO t (id, name, data) VALUES (?1, ?2, ?3)",
            params![1, "one", vec![1u8, 2]],
        )
        .unwrap();
        c.execute(
            "INSERT INTO t (id, name, data) VALUES (?1, ?2, ?3)",
            params![2, None::<String>, None::<Vec<u8>>],
        )
        .unwrap();
        let rows: Vec<(i64, Option<String>)> = c
            .prepare("SELECT id, name FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [(1, Some("one".into())), (2, None)]);
        let none = c
            .query_row("SELECT id FROM t WHERE id = ?1", [3], |r| r.get::<_, i64>(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let err = c
            .query_row("SELECT name FROM t WHERE id = 1", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(err.to_string().contains("expected an integer"), "{err}");
    }
}
