//! The database thread: one OS thread owns the SQLite connection, takes
//! every request waiting in its bounded mailbox, runs them in one transaction
//! (each under its own savepoint, so one failing request does not spoil the
//! others), commits once, and only then answers them all. An answer always
//! means "durable". Used by the master's [`super::Store`] and the relay's
//! [`super::RelayStore`], each with its own schema.

use std::path::Path;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

/// Requests that can wait in the mailbox; beyond this, senders wait.
const MAILBOX: usize = 4096;
/// Most requests folded into one transaction.
const MAX_GROUP: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    Migration { version: usize, source: rusqlite::Error },
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
type Op = Box<dyn FnOnce(&Connection) -> (bool, Box<dyn Finish>) + Send>;

/// A cheap, cloneable handle to a database thread.
#[derive(Clone)]
pub struct Db {
    mailbox: mpsc::Sender<Op>,
    /// The WAL checkpoint thread of a file database (stops with the last
    /// handle).
    _checkpointer: Option<std::sync::Arc<super::checkpoint::Checkpointer>>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies the
    /// migrations it lacks, and starts its thread.
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
        let (tx, rx) = mpsc::channel(MAILBOX);
        std::thread::Builder::new()
            .name("amon-db".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Commit(format!("cannot start database thread: {e}")))?;
        Ok(Db {
            mailbox: tx,
            _checkpointer: None,
        })
    }

    /// Runs `f` in the next group commit; answers after the commit.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = f(conn);
            (result.is_ok(), Box::new(Reply { result, tx }) as Box<dyn Finish>)
        });
        self.mailbox.send(op).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// As [`Db::call`], and once the result is committed `after` takes it on
    /// the store thread and makes the answer. Callbacks run in commit order,
    /// which no awaiting caller can promise: the master hands committed
    /// events to the router this way, so it gets them in sequence.
    pub async fn call_then<T, U, F, A>(&self, f: F, after: A) -> Result<U, StoreError>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        A: FnOnce(T) -> U + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = f(conn);
            (
                result.is_ok(),
                Box::new(ReplyThen { result, after, tx }) as Box<dyn Finish>,
            )
        });
        self.mailbox.send(op).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (index, sql) in migrations.iter().enumerate().skip(current) {
        let version = index + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", version as i64))
            .map_err(|source| StoreError::Migration { version, source })?;
        tx.commit()
            .map_err(|source| StoreError::Migration { version, source })?;
        tracing::info!(version, "database schema upgraded");
    }
    Ok(())
}

/// The store thread: group commit until every handle is gone.
fn run(conn: Connection, mut mailbox: mpsc::Receiver<Op>) {
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
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        for op in group.drain(..) {
            // A savepoint per request: a failed request rolls back alone.
            let _ = conn.execute_batch("SAVEPOINT op");
            let (ok, finish) = op(&conn);
            if !ok {
                let _ = conn.execute_batch("ROLLBACK TO op");
            }
            let _ = conn.execute_batch("RELEASE op");
            finishers.push(finish);
        }
        let committed = began.and_then(|_| conn.execute_batch("COMMIT")).map_err(|e| {
            tracing::error!(error = %e, "store commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for finish in finishers {
            finish.finish(committed.clone());
        }
    }
    tracing::info!("store stopped");
}
