//! Consistent copies of a live database (`amon backup`): SQLite's online
//! backup reads one snapshot of the source while the daemon keeps writing,
//! so the copy holds exactly the transactions committed before it started,
//! whatever the WAL held. The copy is a single file in rollback-journal mode,
//! ready to be put back in a data dir as it is (the daemon sets WAL again).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::db::StoreError;

/// Copies the database at `src` to `dest`, which must not exist yet: it is
/// written under a temporary name beside `dest` and renamed once complete,
/// so a `dest` that exists is always a whole copy.
pub fn backup_database(src: &Path, dest: &Path) -> Result<(), StoreError> {
    let open_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Open { path, source }
    };
    if dest.exists() {
        return Err(StoreError::Conflict(dest.display().to_string()));
    }
    // Read-only, and never creating: a mistyped data dir is an error, not
    // an empty backup.
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(open_error(src))?;
    // The daemon's writer may hold the write lock for a group commit.
    source.busy_timeout(std::time::Duration::from_secs(10))?;
    let partial = dest.with_extension("sqlite.partial");
    let _ = std::fs::remove_file(&partial);
    let mut copy = Connection::open(&partial).map_err(open_error(&partial))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // Every page in one step: one read transaction, one snapshot. In
        // smaller steps, each commit of the daemon (another connection)
        // would restart the copy, and a busy master could starve it. In WAL
        // mode that read transaction does not hold the writer up.
        // (`run_to_completion` refuses -1, hence the loop.)
        let mut waits = 0;
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                // A lock held by the daemon's writer or checkpointer for
                // a moment (10 s at most); `More` does not happen with -1.
                _ if waits < 500 => {
                    waits += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => {
                    return Err(StoreError::Commit(format!(
                        "{} stayed locked for 10 s: no copy made",
                        src.display()
                    )))
                }
            }
        }
    }
    // One self-contained file: no -wal beside it to lose when copied.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    let check: String = copy.pragma_query_value(None, "quick_check", |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Commit(format!(
            "the copy of {} fails its integrity check: {check}",
            src.display()
        )));
    }
    drop(copy);
    std::fs::rename(&partial, dest).map_err(|e| {
        StoreError::Commit(format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            dest.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    #[test]
    fn a_backup_holds_what_was_committed_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("amon.sqlite");
        let dest = dir.path().join("copy.sqlite");
        drop(crate::store::Db::open(&src, schema::MASTER).unwrap());
        let live = Connection::open(&src).unwrap();
        live.execute(
            "INSERT INTO accounts (uuid, login, email, created) VALUES ('u', 'alice', 'a@example.com', 1)",
            [],
        )
        .unwrap();

        backup_database(&src, &dest).unwrap();

        let copy = Connection::open(&dest).unwrap();
        let login: String = copy.query_row("SELECT login FROM accounts", [], |r| r.get(0)).unwrap();
        assert_eq!(login, "alice");
        let mode: String = copy.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        assert!(matches!(backup_database(&src, &dest), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn a_missing_source_is_an_error_not_an_empty_copy() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("copy.sqlite");
        let err = backup_database(&dir.path().join("nothing.sqlite"), &dest).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(!dest.exists());
    }
}
