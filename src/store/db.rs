//! The database threads. The writer, one OS thread, owns the read-write
//! SQLite connection, takes every request waiting in its bounded mailbox,
//! runs them in one transaction (each under its own savepoint, so one failing
//! request does not spoil the others), commits once, and only then answers
//! them all: an answer always means "durable". A file database may also have
//! a few reader threads, each with its own read-only connection, fed from
//! one bounded queue: in WAL mode a reader sees every transaction committed
//! before its read began, and readers and the writer never wait for each
//! other, so reads that only answer someone skip the writer's queue. Used by
//! the master's [`super::Store`] (writer and readers) and the relay's
//! [`super::RelayStore`] (writer only), each with its own schema.
//!
//! The master may instead keep its database in PostgreSQL
//! ([`Db::connect_postgres`]), shared by several masters: the same threads,
//! each with its own connection (the writer's group commit is one
//! transaction there too, reads are `REPEATABLE READ READ ONLY`
//! transactions), reconnecting when the connection drops. Requests see
//! either engine as a [`Conn`].

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::sql::{Conn, PgSession};

/// Requests that can wait in the mailbox; beyond this, senders wait.
const MAILBOX: usize = 4096;
/// Most requests folded into one transaction.
const MAX_GROUP: usize = 2048;
/// Reads that can wait for a reader thread; beyond this, readers' callers wait.
const READ_QUEUE: usize = 1024;
/// Reader threads of a database that has them (the master's): enough for the
/// Master API's two workers to read at once.
pub(super) const READERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    /// A query for one row found none (see `sql::OptionalExtension`).
    #[error("no row found")]
    NoRow,
    /// A column that is not what the code reads it as.
    #[error("unexpected column: {0}")]
    Column(String),
    /// PostgreSQL could not be reached or refused to open the database
    /// (the address is shown without its password).
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("stored json is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the store has stopped")]
    Stopped,
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("migration to schema version {version} failed: {source}")]
    Migration { version: usize, source: Box<StoreError> },
    /// A request panicked: it was rolled back alone and the store went on.
    #[error("the store request panicked: {0}")]
    Panicked(String),
    /// A stored row that cannot be what it claims (a bad uuid, unreadable
    /// json, a row the model cannot hold): which table and row, and why.
    #[error("corrupt row in {table} (key {key}): {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
}

impl StoreError {
    /// The database cannot take writes for now (disk full, read-only file,
    /// I/O error, locked): a temporary condition the caller may retry, not a
    /// bug. The API answers these `503`, so relays keep their spool and retry.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen | DatabaseBusy | DatabaseLocked)
            ),
            StoreError::Postgres(e) => postgres_unavailable(e),
            StoreError::Connect { .. } => true,
            // A failed COMMIT is reported as SQLite's message.
            StoreError::Commit(message) => [
                "WAL checkpoints fail",
                "disk is full",
                "readonly database",
                "disk I/O error",
                "database is locked",
                // PostgreSQL: the connection dropped, or the server is
                // shutting down, out of room, or could not serialise.
                "connection closed",
                "error communicating with the server",
                "terminating connection",
                "could not serialize",
                "deadlock detected",
                "no space left",
            ]
            .iter()
            .any(|m| message.contains(m)),
            _ => false,
        }
    }
}

/// A PostgreSQL error with its cause ("db error" alone says nothing): the
/// server's message, or the I/O error.
pub(crate) fn postgres_message(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A PostgreSQL error the caller may retry: the connection is gone, the
/// server is starting or stopping, out of resources, or a transaction lost
/// a serialisation race (SQLSTATE classes 08, 53, 57 and 40).
fn postgres_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => ["08", "53", "57", "40"]
            .iter()
            .any(|class| code.code().starts_with(class)),
        // No SQLSTATE: an I/O error talking to the server.
        None => e.as_db_error().is_none(),
    }
}

/// Runs one request, turning a panic into [`StoreError::Panicked`] so the
/// thread that runs it (the writer, a reader) goes on with the others.
/// Logged here, once; the caller gets the message as its error.
fn guarded<T>(f: impl FnOnce(&Conn) -> Result<T, StoreError>, conn: &Conn) -> Result<T, StoreError> {
    // The connection is unwind safe in the sense that matters: the writer
    // rolls a failed request back to its savepoint and a reader drops its
    // read transaction, so no half-done state outlives the request.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn))).unwrap_or_else(|payload| {
        let message = panic_message(payload.as_ref());
        tracing::error!(panic = %message, "a store request panicked; it fails alone and the store goes on");
        Err(StoreError::Panicked(message))
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

trait Finish: Send {
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Reply<T> {
    result: Result<T, StoreError>,
    tx: oneshot::Sender<Result<T, StoreError>>,
}

/// A reply that first hands the committed result to a callback, on the
/// store thread and in commit order (see [`Db::call_then`]).
struct ReplyThen<T, U, A> {
    result: Result<T, StoreError>,
    after: A,
    tx: oneshot::Sender<Result<U, StoreError>>,
}

impl<T: Send, U: Send, A: FnOnce(T) -> U + Send> Finish for ReplyThen<T, U, A> {
    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let result = match committed {
            Ok(()) => self.result.map(self.after),
            Err(e) => Err(StoreError::Commit(e)),
        };
        let _ = self.tx.send(result);
    }
}

impl<T: Send> Finish for Reply<T> {
    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let result = match committed {
            Ok(()) => self.result,
            Err(e) => Err(StoreError::Commit(e)),
        };
        let _ = self.tx.send(result);
    }
}

/// A request: runs against the connection and says whether it succeeded (a
/// failed one is rolled back to its savepoint) and how to answer after commit.
type Op = Box<dyn FnOnce(&Conn) -> (bool, Box<dyn Finish>) + Send>;

/// A read: runs against a reader's connection and sends its own answer (or
/// sends the error of a reader that has no connection).
type ReadOp = Box<dyn FnOnce(Result<&Conn, StoreError>) + Send>;

/// A cheap, cloneable handle to a database's threads.
#[derive(Clone)]
pub struct Db {
    mailbox: mpsc::Sender<Op>,
    /// The WAL checkpoint thread of a file database (stops with the last
    /// handle).
    _checkpointer: Option<std::sync::Arc<super::checkpoint::Checkpointer>>,
    /// The reader threads' queue. `None` (an in-memory database, which one
    /// connection cannot share with another, or a database opened without
    /// readers): reads go to the writer.
    reads: Option<mpsc::Sender<ReadOp>>,
    engine: super::sql::Engine,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies the
    /// migrations it lacks, and starts its writer thread; reads go to the
    /// writer.
    pub fn open(path: &Path, migrations: &'static [&'static str]) -> Result<Db, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        // The writer does not checkpoint inside its commits: this thread does
        // (it waits a moment before its first look, so the writer has set
        // WAL mode and migrated by then).
        let checkpointer = match super::checkpoint::start(path) {
            Ok(checkpointer) => {
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                Some(std::sync::Arc::new(checkpointer))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; the writer will checkpoint");
                None
            }
        };
        let mut db = Db::start(conn, migrations)?;
        db._checkpointer = checkpointer;
        Ok(db)
    }

    /// [`Db::open`], then `readers` reader threads, each with a read-only
    /// connection opened once the writer has migrated the schema.
    pub fn open_with_readers(
        path: &Path,
        migrations: &'static [&'static str],
        readers: usize,
    ) -> Result<Db, StoreError> {
        let mut db = Db::open(path, migrations)?;
        if readers > 0 {
            db.reads = Some(start_readers(path, readers)?);
        }
        Ok(db)
    }

    /// An in-memory database, for tests.
    pub fn in_memory(migrations: &'static [&'static str]) -> Result<Db, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Db::start(conn, migrations)
    }

    fn start(mut conn: Connection, migrations: &'static [&'static str]) -> Result<Db, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a process crash (SIGKILL); only a power
        // loss can take the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache (SQLite's default is 2 MiB): the events
        // table's uuid index is written at random places, and once it
        // outgrows the cache every insert reads pages back from the OS.
        conn.pragma_update(None, "cache_size", -65_536)?;
        migrate(&mut conn, migrations)?;
        let mailbox = spawn_writer(SqliteWriter(conn))?;
        Ok(Db {
            mailbox,
            _checkpointer: None,
            reads: None,
            engine: super::sql::Engine::Sqlite,
        })
    }

    /// Connects to the PostgreSQL database at `url` (a `postgres://` URL or
    /// a libpq key=value string), works in `schema` (created if missing,
    /// so several installations can share one database), applies the
    /// migrations it lacks (one master at a time: under an advisory lock),
    /// and starts the writer and `readers` reader threads, each with its
    /// own connection.
    pub fn connect_postgres(
        url: &str,
        schema: &str,
        migrations: &'static [&'static str],
        readers: usize,
    ) -> Result<Db, StoreError> {
        let target = PgTarget::new(url, schema)?;
        // The client drives its connection with a runtime of its own, which
        // cannot start inside the caller's (a tokio or actix one): connect
        // and migrate on a thread of their own.
        let client = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut client = target.connect()?;
                    migrate_postgres(&mut client, schema, migrations)?;
                    Ok::<_, StoreError>(client)
                })
                .join()
                .unwrap_or_else(|_| Err(StoreError::Panicked("connecting to PostgreSQL panicked".into())))
        })?;
        let mailbox = spawn_writer(PgWriter {
            session: PgSession::new(client),
            target: target.clone(),
            open: Default::default(),
        })?;
        let reads = if readers > 0 {
            let (tx, rx) = mpsc::channel(READ_QUEUE);
            let queue = Arc::new(Mutex::new(rx));
            for _ in 0..readers {
                let queue = queue.clone();
                let target = target.clone();
                // The reader connects on its own thread (see above); the
                // first read that finds it unconnected tries again.
                std::thread::Builder::new()
                    .name("amon-db-read".into())
                    .spawn(move || serve_postgres_reads(target, queue))
                    .map_err(|e| StoreError::Commit(format!("cannot start database reader thread: {e}")))?;
            }
            Some(tx)
        } else {
            None
        };
        Ok(Db {
            mailbox,
            _checkpointer: None,
            reads,
            engine: super::sql::Engine::Postgres,
        })
    }

    /// Which engine this database runs on.
    pub fn engine(&self) -> super::sql::Engine {
        self.engine
    }

    /// Whether the last WAL checkpoint failed (a full disk, a read-only
    /// file): the database cannot be trusted to take writes meanwhile.
    pub fn checkpoint_failing(&self) -> bool {
        self._checkpointer.as_ref().is_some_and(|c| c.failing())
    }

    /// Runs `f` in the next group commit; answers after the commit.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = guarded(f, conn);
            (result.is_ok(), Box::new(Reply { result, tx }) as Box<dyn Finish>)
        });
        self.mailbox.send(op).await.map_err(|_| StoreError::Stopped)?;
        answer(rx).await.map_err(|_| StoreError::Stopped)?
    }

    /// As [`Db::call`], and once the result is committed `after` takes it on
    /// the store thread and makes the answer. Callbacks run in commit order,
    /// which no awaiting caller can promise: the master hands committed
    /// events to the router this way, so it gets them in sequence.
    pub async fn call_then<T, U, F, A>(&self, f: F, after: A) -> Result<U, StoreError>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
        A: FnOnce(T) -> U + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = guarded(f, conn);
            (
                result.is_ok(),
                Box::new(ReplyThen { result, after, tx }) as Box<dyn Finish>,
            )
        });
        self.mailbox.send(op).await.map_err(|_| StoreError::Stopped)?;
        answer(rx).await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs `f` on a reader thread, in one read transaction: it sees every
    /// commit answered before it was called (not requests still waiting in
    /// the writer's mailbox), and waits for no commit. Without readers, on
    /// the writer, like [`Db::call`]. `f` must only read: the connection is
    /// read-only.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(reads) = &self.reads else {
            return self.call(f).await;
        };
        let (tx, rx) = oneshot::channel();
        let read: ReadOp = Box::new(move |conn| {
            let _ = tx.send(conn.and_then(|conn| read_transaction(conn, f)));
        });
        reads.send(read).await.map_err(|_| StoreError::Stopped)?;
        answer(rx).await.map_err(|_| StoreError::Stopped)?
    }
}

/// The store thread's answer to one request.
#[cfg(not(test))]
async fn answer<T>(rx: oneshot::Receiver<T>) -> Result<T, oneshot::error::RecvError> {
    rx.await
}

/// The store thread's answer, in unit tests awaited on a blocking task:
/// tokio's paused clock jumps to the next timer whenever the runtime has
/// nothing to do, and waiting for another thread looks like nothing to do,
/// so a hold could run out while the store works on a loaded machine. A
/// blocking task in flight stops those jumps (tokio's test-util): in a
/// paused-time test the store takes no time, as it nearly does on a real
/// clock.
#[cfg(test)]
async fn answer<T: Send + 'static>(rx: oneshot::Receiver<T>) -> Result<T, oneshot::error::RecvError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::spawn_blocking(move || rx.blocking_recv())
            .await
            .expect("the blocking wait for the store does not panic"),
        Err(_) => rx.await,
    }
}

/// Runs a read in one snapshot for every statement of `f`. Ending the
/// transaction (a rollback: it only read) lets the next read start from the
/// newest commit.
fn read_transaction<T>(conn: &Conn, f: impl FnOnce(&Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
    match conn {
        Conn::Sqlite(c) => {
            let tx = c.unchecked_transaction()?;
            guarded(f, &Conn::Sqlite(&tx))
        }
        Conn::Postgres(_) => {
            conn.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let result = guarded(f, conn);
            let ended = conn.execute_batch("ROLLBACK");
            result.and_then(|t| ended.map(|_| t))
        }
    }
}

/// Opens `count` read-only connections to `path` and starts a reader thread
/// for each, all taking from one queue; they stop when every handle is gone.
fn start_readers(path: &Path, count: usize) -> Result<mpsc::Sender<ReadOp>, StoreError> {
    let (tx, rx) = mpsc::channel(READ_QUEUE);
    let queue = Arc::new(Mutex::new(rx));
    for _ in 0..count {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|source| StoreError::Open {
                    path: path.display().to_string(),
                    source,
                })?;
        let queue = queue.clone();
        std::thread::Builder::new()
            .name("amon-db-read".into())
            .spawn(move || serve_reads(conn, queue))
            .map_err(|e| StoreError::Commit(format!("cannot start database reader thread: {e}")))?;
    }
    Ok(tx)
}

/// The next read from a queue the reader threads share, `None` once every
/// handle is gone.
fn next_read(queue: &Mutex<mpsc::Receiver<ReadOp>>) -> Option<ReadOp> {
    // Locked only to take the next read; the other readers wait for the
    // one after it. Nothing panics while holding it, but a poisoned lock
    // still guards a sound receiver.
    queue.lock().unwrap_or_else(PoisonError::into_inner).blocking_recv()
}

/// A reader thread: one read at a time until every handle is gone.
fn serve_reads(conn: Connection, queue: Arc<Mutex<mpsc::Receiver<ReadOp>>>) {
    while let Some(read) = next_read(&queue) {
        read(Ok(&Conn::Sqlite(&conn)));
    }
}

/// A PostgreSQL reader thread: as [`serve_reads`], reconnecting before a
/// read when the connection has dropped (a read that cannot reconnect
/// fails on the closed one, and says so).
fn serve_postgres_reads(target: PgTarget, queue: Arc<Mutex<mpsc::Receiver<ReadOp>>>) {
    let connect = || {
        target.connect().map(PgSession::new).inspect_err(|e| {
            tracing::warn!(error = %e, "store reader: cannot connect to PostgreSQL");
        })
    };
    let mut session = connect();
    while let Some(read) = next_read(&queue) {
        if session.as_ref().map_or(true, PgSession::is_closed) {
            // A failed reconnect keeps a closed session, whose read then
            // fails as unavailable too.
            match (connect(), &session) {
                (Ok(new), _) => session = Ok(new),
                (Err(e), Err(_)) => session = Err(e),
                (Err(_), Ok(_)) => {}
            }
        }
        match &session {
            Ok(session) => read(Ok(&Conn::Postgres(session))),
            // Never connected: the read's caller hears why (unavailable).
            Err(e) => read(Err(StoreError::Connect {
                url: target.shown.clone(),
                reason: e.to_string(),
            })),
        }
    }
}

pub(super) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (index, sql) in migrations.iter().enumerate().skip(current) {
        let version = index + 1;
        let failed = |source: rusqlite::Error| StoreError::Migration {
            version,
            source: Box::new(source.into()),
        };
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", version as i64))
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version, "database schema upgraded");
    }
    Ok(())
}

/// Where a PostgreSQL store lives: the connection settings and the schema,
/// kept to open the readers' connections and to reconnect.
#[derive(Clone)]
struct PgTarget {
    config: postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl PgTarget {
    fn new(url: &str, schema: &str) -> Result<PgTarget, StoreError> {
        let shown = redact_url(url);
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| StoreError::Connect {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        if !crate::store::valid_schema_name(schema) {
            return Err(StoreError::Connect {
                url: shown,
                reason: format!("{schema:?} is not a schema name (lower-case letters, digits and _)"),
            });
        }
        // Every connection works in the schema (the name is checked: no
        // quoting needed).
        config.options(&format!("-c search_path={schema}"));
        // Named after the schema too, so an operator (or a test) can tell
        // which installation a backend in `pg_stat_activity` serves.
        config.application_name(&format!("amon/{schema}"));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(PgTarget { config, shown })
    }

    fn connect(&self) -> Result<postgres::Client, StoreError> {
        self.config.connect(postgres::NoTls).map_err(|e| StoreError::Connect {
            url: self.shown.clone(),
            reason: e.to_string(),
        })
    }
}

/// A database URL as it may be shown: any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let path = path.map(|p| format!("/{}", redact_query(p))).unwrap_or_default();
        format!("{scheme}://{authority}{path}")
    } else {
        // key=value form: hide the value of password=.
        url.split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn redact_query(path: &str) -> String {
    match path.split_once('?') {
        Some((p, query)) => {
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{p}?{query}")
        }
        None => path.to_string(),
    }
}

/// Applies the migrations a PostgreSQL schema lacks, in one transaction
/// under an advisory lock, so two masters starting together migrate once.
/// The version is kept in `amon_schema` (PostgreSQL has no `user_version`).
fn migrate_postgres(client: &mut postgres::Client, schema: &str, migrations: &[&str]) -> Result<(), StoreError> {
    client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('amon migrations ' || $1::text))",
        &[&schema],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS amon_schema (id INTEGER PRIMARY KEY CHECK (id = 0), version BIGINT NOT NULL)",
    )?;
    let current: i64 = tx
        .query_opt("SELECT version FROM amon_schema WHERE id = 0", &[])?
        .map_or(0, |r| r.get(0));
    for (index, sql) in migrations.iter().enumerate().skip(current as usize) {
        let version = index + 1;
        tx.batch_execute(sql)
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO amon_schema (id, version) VALUES (0, $1) ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    &[&(version as i64)],
                )
            })
            .map_err(|source| StoreError::Migration {
                version,
                source: Box::new(source.into()),
            })?;
        tracing::info!(version, "database schema upgraded");
    }
    tx.commit()?;
    Ok(())
}

/// What the group-commit loop needs of an engine's writing connection.
trait Writer: Send + 'static {
    fn conn(&self) -> Conn<'_>;
    /// Readies the connection for the next group: ends a transaction a
    /// failed commit left open, reconnects a dropped connection.
    fn ready(&mut self);
    fn begin(&self) -> Result<(), String>;
    /// Commits; on failure rolls back and says why.
    fn commit(&self) -> Result<(), String>;
}

struct SqliteWriter(Connection);

impl Writer for SqliteWriter {
    fn conn(&self) -> Conn<'_> {
        Conn::Sqlite(&self.0)
    }

    fn ready(&mut self) {
        if !self.0.is_autocommit() {
            // A transaction a failed commit left open (its ROLLBACK failed
            // too, as it can while the file system refuses writes) would
            // make every later BEGIN fail: end it first.
            tracing::warn!("store: rolling back a transaction a failed commit left open");
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }

    fn begin(&self) -> Result<(), String> {
        self.0.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())
    }

    fn commit(&self) -> Result<(), String> {
        let conn = &self.0;
        conn.execute_batch("COMMIT").map_err(|e| {
            use rusqlite::ErrorCode::{CannotOpen, DiskFull, ReadOnly, SystemIoFailure};
            if matches!(e.sqlite_error_code(), Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen)) {
                // SQLite says "disk I/O error" for a write refused by a
                // read-only file system: say what to look at.
                tracing::error!(error = %e, "store commit failed: the database cannot take writes (is its file system full, read-only or failing?)");
            } else {
                tracing::error!(error = %e, "store commit failed");
            }
            if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                if !conn.is_autocommit() {
                    tracing::error!(error = %rollback, "store rollback failed; it is tried again before the next commit");
                }
            }
            e.to_string()
        })
    }
}

struct PgWriter {
    session: PgSession,
    target: PgTarget,
    /// A transaction is open (begun, not yet committed or rolled back).
    open: std::cell::Cell<bool>,
}

impl Writer for PgWriter {
    fn conn(&self) -> Conn<'_> {
        Conn::Postgres(&self.session)
    }

    fn ready(&mut self) {
        if self.session.is_closed() {
            match self.target.connect() {
                Ok(client) => {
                    tracing::info!(url = %self.target.shown, "store: reconnected to PostgreSQL");
                    self.session = PgSession::new(client);
                }
                // The group then fails on the closed connection, and its
                // callers hear the store is unavailable (the API says 503).
                Err(e) => tracing::error!(error = %e, "store: cannot reconnect to PostgreSQL"),
            }
        } else if self.open.get() {
            // A transaction whose COMMIT and ROLLBACK both failed would
            // swallow the next group: end it.
            if self.session.client().batch_execute("ROLLBACK").is_ok() {
                self.open.set(false);
            }
        }
    }

    fn begin(&self) -> Result<(), String> {
        self.session
            .client()
            .batch_execute("BEGIN")
            .map_err(|e| postgres_message(&e))?;
        self.open.set(true);
        Ok(())
    }

    fn commit(&self) -> Result<(), String> {
        let mut client = self.session.client();
        let committed = client.batch_execute("COMMIT").map_err(|e| {
            let message = postgres_message(&e);
            tracing::error!(error = %message, "store commit failed");
            message
        });
        // A failed COMMIT ends the transaction in PostgreSQL; the rollback
        // is for a connection that failed mid-way.
        if committed.is_ok() || client.batch_execute("ROLLBACK").is_ok() || client.is_closed() {
            self.open.set(false);
        }
        committed
    }
}

/// Starts the writer thread of a database.
fn spawn_writer(writer: impl Writer) -> Result<mpsc::Sender<Op>, StoreError> {
    let (tx, rx) = mpsc::channel(MAILBOX);
    std::thread::Builder::new()
        .name("amon-db".into())
        .spawn(move || run(writer, rx))
        .map_err(|e| StoreError::Commit(format!("cannot start database thread: {e}")))?;
    Ok(tx)
}

/// The store thread: group commit until every handle is gone.
fn run(mut writer: impl Writer, mut mailbox: mpsc::Receiver<Op>) {
    let mut group: Vec<Op> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = mailbox.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match mailbox.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let mut finishers: Vec<Box<dyn Finish>> = Vec::with_capacity(group.len());
        writer.ready();
        let began = writer.begin();
        let conn = writer.conn();
        for op in group.drain(..) {
            // A savepoint per request: a failed request rolls back alone.
            let _ = conn.execute_batch("SAVEPOINT op");
            let (ok, finish) = op(&conn);
            if !ok {
                let _ = conn.execute_batch("ROLLBACK TO SAVEPOINT op");
            }
            let _ = conn.execute_batch("RELEASE SAVEPOINT op");
            finishers.push(finish);
        }
        let committed = match began {
            Ok(()) => writer.commit(),
            Err(e) => {
                tracing::error!(error = %e, "store: cannot begin a transaction");
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        for finish in finishers {
            // An answer's callback (`call_then`'s `after`) is caller code
            // too: its panic must not take the store thread with it. Its
            // caller then sees the store as stopped for that one request.
            let committed = committed.clone();
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| finish.finish(committed))) {
                let message = panic_message(payload.as_ref());
                tracing::error!(panic = %message, "a store answer's callback panicked; the store goes on");
            }
        }
    }
    tracing::info!("store stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOTES: &[&str] = &["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)"];

    fn write(conn: &Conn, text: &str) -> Result<(), StoreError> {
        conn.execute("INSERT INTO notes (text) VALUES (?1)", [text])?;
        Ok(())
    }

    fn notes(conn: &Conn) -> Result<Vec<String>, StoreError> {
        let mut stmt = conn.prepare("SELECT text FROM notes ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()
    }

    /// A read that should not wait for anything, failing the test if it hangs.
    async fn read_now(db: &Db) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), db.read(notes))
            .await
            .expect("the read waited for the writer")
            .unwrap()
    }

    #[tokio::test]
    async fn a_read_does_not_wait_for_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with_readers(&dir.path().join("notes.sqlite"), NOTES, 2).unwrap();
        db.call(|conn| write(conn, "committed")).await.unwrap();

        // Hold the writer inside its transaction until the test lets go.
        let (entered, inside) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writing = tokio::spawn({
            let db = db.clone();
            async move {
                db.call(move |conn| {
                    write(conn, "in flight")?;
                    let _ = entered.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
            }
        });
        inside.await.unwrap();

        assert_eq!(read_now(&db).await, ["committed"]);
        assert_eq!(read_now(&db).await, ["committed"]);
        assert!(!writing.is_finished());

        release.send(()).unwrap();
        writing.await.unwrap().unwrap();
        assert_eq!(read_now(&db).await, ["committed", "in flight"]);
    }

    #[tokio::test]
    async fn a_read_sees_every_commit_answered_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with_readers(&dir.path().join("notes.sqlite"), NOTES, 2).unwrap();
        let mut expected = Vec::new();
        for n in 0..20 {
            let text = format!("note {n}");
            expected.push(text.clone());
            db.call(move |conn| write(conn, &text)).await.unwrap();
            // Twice, so that both readers are likely asked.
            assert_eq!(read_now(&db).await, expected);
            assert_eq!(read_now(&db).await, expected);
        }
    }

    #[tokio::test]
    async fn a_panicking_request_fails_alone_and_the_store_goes_on() {
        let db = Db::in_memory(NOTES).unwrap();
        // Hold the writer so the next three requests share one group.
        let (entered, inside) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holding = tokio::spawn({
            let db = db.clone();
            async move {
                db.call(move |conn| {
                    let _ = entered.send(());
                    let _ = released.recv();
                    write(conn, "first")
                })
                .await
            }
        });
        inside.await.unwrap();
        let panicking = tokio::spawn({
            let db = db.clone();
            async move {
                db.call(|conn| -> Result<(), StoreError> {
                    write(conn, "half done")?;
                    panic!("a bad row");
                })
                .await
            }
        });
        let after = tokio::spawn({
            let db = db.clone();
            async move { db.call(|conn| write(conn, "same group")).await }
        });
        // Both wait in the mailbox before the writer is let go.
        while db.mailbox.capacity() > MAILBOX - 2 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();
        let err = panicking.await.unwrap().unwrap_err();
        assert!(matches!(&err, StoreError::Panicked(m) if m == "a bad row"), "{err}");
        after.await.unwrap().unwrap();
        db.call(|conn| write(conn, "later")).await.unwrap();
        assert_eq!(db.read(notes).await.unwrap(), ["first", "same group", "later"]);
    }

    #[tokio::test]
    async fn a_panicking_read_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with_readers(&dir.path().join("notes.sqlite"), NOTES, 1).unwrap();
        db.call(|conn| write(conn, "kept")).await.unwrap();
        let err = db
            .read(|_| -> Result<(), StoreError> { panic!("reader {}", 1) })
            .await
            .unwrap_err();
        assert!(matches!(&err, StoreError::Panicked(m) if m == "reader 1"), "{err}");
        assert_eq!(read_now(&db).await, ["kept"]);
    }

    const NOTES_POSTGRES: &[&str] =
        &["CREATE TABLE notes (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, text TEXT NOT NULL)"];

    /// The PostgreSQL database of `AMON_TEST_DATABASE_URL`, or `None` (a
    /// skip, said; a failure under CI).
    fn postgres_url() -> Option<String> {
        match std::env::var("AMON_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(std::env::var_os("CI").is_none(), "CI must set AMON_TEST_DATABASE_URL");
                eprintln!("skipped: AMON_TEST_DATABASE_URL is not set");
                None
            }
        }
    }

    /// Ends every server process serving `schema`'s store, as a database
    /// restart or a dropped network would (from a thread of its own: the
    /// client's runtime cannot start inside the test's).
    fn kill_backends(url: &str, schema: &str) -> u64 {
        let (url, name) = (url.to_string(), format!("amon/{schema}"));
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .unwrap()
                .len() as u64
        })
        .join()
        .unwrap()
    }

    #[tokio::test]
    async fn a_postgres_store_reconnects_after_its_connections_are_killed_and_loses_nothing() {
        let Some(url) = postgres_url() else { return };
        let schema = format!("amon_t_{}", uuid::Uuid::new_v4().simple());
        let db = Db::connect_postgres(&url, &schema, NOTES_POSTGRES, 1).unwrap();
        db.call(|conn| write(conn, "before")).await.unwrap();
        assert_eq!(db.read(notes).await.unwrap(), ["before"]);

        assert_eq!(kill_backends(&url, &schema), 2, "the writer and the reader");
        // The first request on a killed connection may fail, as
        // "unavailable" (the API answers 503 and relays retry); the next
        // one runs on a new connection.
        let mut failures = 0;
        loop {
            match db.call(|conn| write(conn, "after")).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(e.is_unavailable(), "{e}");
                    failures += 1;
                    assert!(failures < 3, "the writer did not reconnect: {e}");
                }
            }
        }
        let mut failures = 0;
        let seen = loop {
            match db.read(notes).await {
                Ok(seen) => break seen,
                Err(e) => {
                    assert!(e.is_unavailable(), "{e}");
                    failures += 1;
                    assert!(failures < 3, "the reader did not reconnect: {e}");
                }
            }
        };
        assert_eq!(seen, ["before", "after"]);
    }

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        assert_eq!(
            redact_url("postgres://amon:s3cret@db:5432/amon?sslmode=disable&password=x"),
            "postgres://amon:***@db:5432/amon?sslmode=disable&password=***"
        );
        assert_eq!(redact_url("postgresql://db/amon"), "postgresql://db/amon");
        assert_eq!(
            redact_url("host=db password=s3cret user=amon"),
            "host=db password=*** user=amon"
        );
    }

    #[tokio::test]
    async fn an_in_memory_database_reads_on_its_writer() {
        let db = Db::in_memory(NOTES).unwrap();
        db.call(|conn| write(conn, "kept")).await.unwrap();
        assert_eq!(db.read(notes).await.unwrap(), ["kept"]);
    }

    #[tokio::test]
    async fn readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with_readers(&dir.path().join("notes.sqlite"), NOTES, 1).unwrap();
        let err = db.read(|conn| write(conn, "sneaked in")).await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        assert_eq!(read_now(&db).await, Vec::<String>::new());
    }
}
