//! WAL checkpoints off the writer thread. SQLite's automatic checkpoint runs
//! inside the commit that crosses its threshold, so every few thousand
//! events one commit also copies the WAL into the database file and
//! fsyncs it, and ingest stalls meanwhile. Instead the writer turns
//! automatic checkpoints off and this thread, with its own connection, runs
//! a `PASSIVE` checkpoint whenever the WAL has grown: passive checkpoints
//! never block the writer (nor readers), and once one has copied every
//! frame the writer starts the WAL over at its next commit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often the thread looks at the WAL.
const EVERY: Duration = Duration::from_millis(200);
/// A WAL longer than this many frames (pages) is checkpointed even if the
/// writer is busy: `TRUNCATE` waits for the writer, but keeps the file from
/// growing without bound when passive checkpoints cannot catch up.
const TRUNCATE_ABOVE: i64 = 262_144;

/// Stops the checkpoint thread when the last store handle goes, and says
/// whether its last checkpoint failed (a full disk, a read-only file).
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
}

impl Checkpointer {
    pub(super) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Starts checkpointing the database at `path` (already in WAL mode).
pub(super) fn start(path: &Path) -> std::io::Result<Checkpointer> {
    let stop = Arc::new(AtomicBool::new(false));
    let failing = Arc::new(AtomicBool::new(false));
    let path: PathBuf = path.to_path_buf();
    let (flag, state) = (stop.clone(), failing.clone());
    std::thread::Builder::new()
        .name("amon-db-ckpt".into())
        .spawn(move || run(&path, &flag, &state))?;
    Ok(Checkpointer { stop, failing })
}

fn run(path: &Path, stop: &AtomicBool, failing: &AtomicBool) {
    let mut conn = match open(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "no checkpoint thread; the writer will checkpoint");
            return;
        }
    };
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(EVERY);
        if failing.load(Ordering::Acquire) {
            // A connection that met a read-only file system can stay
            // read-only after the file system takes writes again (SQLite
            // opens what it cannot write read-only, and keeps it so; the
            // checkpoints then failed for good and /ping answered 503):
            // while checkpoints fail, each turn starts on a new one.
            match open(path) {
                Ok(fresh) => conn = fresh,
                Err(e) => tracing::debug!(error = %e, "cannot open the database for a checkpoint yet"),
            }
        }
        let outcome = match checkpoint(&conn, "PASSIVE") {
            Ok((log, _)) if log > TRUNCATE_ABOVE => checkpoint(&conn, "TRUNCATE").map(|_| ()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        // Logged when it starts failing and when it is over, not every turn.
        match outcome {
            Ok(()) => {
                if failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!("WAL checkpoints work again");
                }
            }
            Err(e) => {
                if !failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, "WAL checkpoint failed; the database may not take writes until it works again");
                }
            }
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Runs one checkpoint; returns the WAL's frames and how many are copied.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })
}
