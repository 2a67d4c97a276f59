//! Following a log file by name, as `tail -F` does, for the log-scan probes:
//! [`Follower::poll`] returns the complete lines written since the last
//! call. It starts at the end of a file that exists (only new lines count),
//! reads a file that appears later from its start, survives rotation by
//! rename-and-create (the old file is read to its end, then the new one from
//! its start) and by copytruncate (a file shorter than what was read is read
//! again from its start), holds a partial last line until its newline comes,
//! and cuts lines longer than [`MAX_LINE`]. It is polled (no inotify: the
//! platforms differ and a poll a second costs a `stat`), so the caller's
//! timer decides when, and tests call `poll` directly.
//!
//! The original spawned `tail -F` and, when it exited, logged and never
//! read again; here a read error is returned to the caller, which logs it
//! and calls [`Follower::reopen`].

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};

use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Longest line kept, in bytes: a longer line is cut to this (and still
/// matched), so one runaway line cannot take the agent's memory.
pub const MAX_LINE: usize = 64 * 1024;

/// Most bytes read in one poll: a log written faster than this is caught up
/// over the next polls instead of holding the agent's thread in one long
/// read and match.
const MAX_READ_PER_POLL: usize = 4 * 1024 * 1024;

/// Size of one read.
const CHUNK: usize = 64 * 1024;

/// Which file a path names: a new (device, inode) pair at the same path is a
/// rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The file being read and how far.
#[derive(Debug)]
struct Open {
    file: File,
    identity: Identity,
    /// Bytes of the file consumed so far (what its size is compared with to
    /// see a copytruncate).
    offset: u64,
}

/// One log file, followed by name.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    open: Option<Open>,
    /// Only the first sighting of the file starts at its end: a file that
    /// appears later, or replaces a rotated one, is new, so all of it is.
    at_end: bool,
    /// After a read error: where reading stopped, so reopening the same file
    /// goes on from there rather than skipping or repeating lines.
    resume: Option<(Identity, u64)>,
    /// "Waiting for the file" is logged once per absence, not every poll.
    absence_logged: bool,
    lines: LineSplitter,
    /// Lines read before a poll failed, given by the next poll: they were
    /// consumed from the file and would otherwise be lost.
    carry: Vec<String>,
    buf: Vec<u8>,
}

impl Follower {
    pub fn new(path: impl Into<PathBuf>) -> Follower {
        Follower {
            path: path.into(),
            open: None,
            at_end: true,
            resume: None,
            absence_logged: false,
            lines: LineSplitter::default(),
            carry: Vec::new(),
            buf: vec![0; CHUNK],
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was written since the last call: the complete lines, in
    /// order. An `Err` is a failure to read (not the file being absent, which
    /// is waited for); call [`Follower::reopen`] before polling again.
    pub async fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = std::mem::take(&mut self.carry);
        match self.read_new(&mut lines).await {
            Ok(()) => Ok(lines),
            Err(e) => {
                self.carry = lines;
                Err(e)
            }
        }
    }

    async fn read_new(&mut self, lines: &mut Vec<String>) -> std::io::Result<()> {
        // What the name is now, looked at before draining the open file so
        // that nothing the writer adds to the old file before it moves to the
        // new one is lost.
        let named = match tokio::fs::metadata(&self.path).await {
            Ok(meta) if !meta.is_file() => {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} is not a regular file", self.path.display()),
                ))
            }
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match (&self.open, &named) {
            (None, None) => {
                self.absent();
                return Ok(());
            }
            (None, Some(_)) => {
                self.open_named(lines).await?;
            }
            (Some(open), Some(meta)) if open.identity != Identity::of(meta) => {
                // Rename and create: finish the old file, then the new one
                // from its start.
                self.drain(lines).await?;
                self.lines.finish(lines);
                tracing::info!(path = %self.path.display(), "log file rotated; reading the new one");
                self.open = None;
                self.at_end = false;
                self.open_named(lines).await?;
            }
            (Some(_), None) => {
                // Renamed away (or deleted) and not yet replaced: the writer
                // may still be writing to it, so keep reading it meanwhile.
                self.absent();
            }
            (Some(_), Some(_)) => {}
        }
        self.absence_logged &= named.is_none();
        self.drain(lines).await
    }

    /// Forgets the open file after a read error; the next poll opens the path
    /// again, going on where reading stopped if it is still the same file.
    pub fn reopen(&mut self) {
        if let Some(open) = self.open.take() {
            self.resume = Some((open.identity, open.offset));
        }
    }

    fn absent(&mut self) {
        // Absent when first looked at: whatever appears later is all new.
        if self.open.is_none() {
            self.at_end = false;
        }
        if !self.absence_logged {
            self.absence_logged = true;
            tracing::info!(path = %self.path.display(), "log file does not exist (yet); waiting for it");
        }
    }

    async fn open_named(&mut self, lines: &mut Vec<String>) -> std::io::Result<()> {
        let mut file = File::open(&self.path).await?;
        let meta = file.metadata().await?;
        let identity = Identity::of(&meta);
        let offset = match self.resume.take() {
            Some((same, offset)) if same == identity && offset <= meta.len() => offset,
            Some(_) => {
                // Not the file reading stopped in: its partial line ends
                // here rather than run into the new file's first.
                self.lines.finish(lines);
                0
            }
            None if self.at_end => meta.len(),
            None => {
                if self.absence_logged {
                    // The other half of "waiting for it": operators (and
                    // tests) see when a log began to be read.
                    tracing::info!(path = %self.path.display(), "log file appeared; reading it from the start");
                }
                0
            }
        };
        self.at_end = false;
        file.seek(SeekFrom::Start(offset)).await?;
        self.open = Some(Open { file, identity, offset });
        Ok(())
    }

    /// Reads the open file to its end (or this poll's budget).
    async fn drain(&mut self, lines: &mut Vec<String>) -> std::io::Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let size = open.file.metadata().await?.len();
        if size < open.offset {
            // Copytruncate: the content read so far is gone (and with it a
            // partial line); what is there now is new.
            tracing::info!(path = %self.path.display(), "log file truncated; reading it from the start");
            open.file.seek(SeekFrom::Start(0)).await?;
            open.offset = 0;
            self.lines.clear();
        }
        let mut budget = MAX_READ_PER_POLL;
        while budget > 0 {
            let n = open.file.read(&mut self.buf).await?;
            if n == 0 {
                break;
            }
            open.offset += n as u64;
            budget = budget.saturating_sub(n);
            self.lines.push(&self.buf[..n], lines);
        }
        Ok(())
    }
}

/// Cuts bytes into lines: holds a partial line until its newline, cuts a
/// line at [`MAX_LINE`] (dropping the rest up to its newline), removes a
/// trailing `\r`, and reads invalid UTF-8 as U+FFFD.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    /// The pending line hit [`MAX_LINE`]: drop bytes until its newline.
    cut: bool,
}

impl LineSplitter {
    pub fn push(&mut self, mut bytes: &[u8], lines: &mut Vec<String>) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|b| *b == b'\n');
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            if !self.cut {
                let room = MAX_LINE - self.pending.len();
                self.pending.extend_from_slice(&piece[..piece.len().min(room)]);
                self.cut = piece.len() > room;
            }
            match end {
                Some(end) => {
                    self.emit(lines);
                    bytes = &bytes[end + 1..];
                }
                None => break,
            }
        }
    }

    /// Ends the partial line, if any, as a line (the file it came from will
    /// not be read again).
    pub fn finish(&mut self, lines: &mut Vec<String>) {
        if !self.pending.is_empty() {
            self.emit(lines);
        }
        self.cut = false;
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.cut = false;
    }

    fn emit(&mut self, lines: &mut Vec<String>) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        lines.push(String::from_utf8_lossy(&self.pending).into_owned());
        self.pending.clear();
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<String>, LineSplitter) {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        for c in chunks {
            s.push(c, &mut lines);
        }
        (lines, s)
    }

    #[test]
    fn lines_wait_for_their_newline() {
        let (lines, mut s) = split(&[b"one\ntw", b"o\r\nthr", b"ee"]);
        assert_eq!(lines, ["one", "two"]);
        let mut rest = Vec::new();
        s.finish(&mut rest);
        assert_eq!(rest, ["three"]);
    }

    #[test]
    fn empty_lines_are_lines() {
        assert_eq!(split(&[b"\n\nx\n"]).0, ["", "", "x"]);
    }

    #[test]
    fn huge_lines_are_cut_and_the_next_line_is_whole() {
        let huge = vec![b'a'; MAX_LINE * 2 + 10];
        let (lines, _) = split(&[&huge[..MAX_LINE - 1], &huge[MAX_LINE - 1..], b"\nnext\n"]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        assert_eq!(split(&[b"a\xffb\n"]).0, ["a\u{fffd}b"]);
    }

    proptest::proptest! {
        #[test]
        fn how_bytes_are_chunked_does_not_change_the_lines(
            text in "[a-c\r\n\u{e9}]{0,200}",
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                chunks.push(&bytes[from..cut]);
                from = cut;
            }
            let whole = split(&[bytes]).0;
            proptest::prop_assert_eq!(split(&chunks).0, whole);
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn starts_at_the_end_and_reads_what_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "old line\n");
        let mut f = Follower::new(&path);
        assert!(f.poll().await.unwrap().is_empty(), "lines already there do not count");
        append(&path, "new 1\nnew 2\npart");
        assert_eq!(f.poll().await.unwrap(), ["new 1", "new 2"]);
        assert!(f.poll().await.unwrap().is_empty());
        append(&path, "ial\n");
        assert_eq!(f.poll().await.unwrap(), ["partial"]);
    }

    #[tokio::test]
    async fn a_file_that_appears_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut f = Follower::new(&path);
        assert!(f.poll().await.unwrap().is_empty());
        assert!(f.poll().await.unwrap().is_empty());
        append(&path, "first\n");
        assert_eq!(f.poll().await.unwrap(), ["first"]);
    }

    #[tokio::test]
    async fn rename_and_create_finishes_the_old_file_then_reads_the_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path);
        f.poll().await.unwrap();
        append(&path, "a\nb");
        std::fs::rename(&path, dir.path().join("app.log.0")).unwrap();
        // Renamed and not replaced yet: the old file is still read.
        append(&dir.path().join("app.log.0"), "\nc\n");
        assert_eq!(f.poll().await.unwrap(), ["a", "b", "c"]);
        append(&dir.path().join("app.log.0"), "late\n");
        append(&path, "fresh\nhalf");
        assert_eq!(f.poll().await.unwrap(), ["late", "fresh"]);
        append(&path, "\n");
        assert_eq!(f.poll().await.unwrap(), ["half"]);
    }

    #[tokio::test]
    async fn rotation_between_polls_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path);
        f.poll().await.unwrap();
        append(&path, "before\nunterminated");
        std::fs::rename(&path, dir.path().join("app.log.0")).unwrap();
        append(&path, "after\n");
        assert_eq!(f.poll().await.unwrap(), ["before", "unterminated", "after"]);
    }

    #[tokio::test]
    async fn copytruncate_reads_again_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "x\n");
        let mut f = Follower::new(&path);
        f.poll().await.unwrap();
        append(&path, "one\n");
        assert_eq!(f.poll().await.unwrap(), ["one"]);
        std::fs::copy(&path, dir.path().join("app.log.0")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, "two\n");
        assert_eq!(f.poll().await.unwrap(), ["two"]);
    }

    #[tokio::test]
    async fn reopening_after_an_error_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "x\n");
        let mut f = Follower::new(&path);
        f.poll().await.unwrap();
        append(&path, "one\n");
        f.poll().await.unwrap();
        f.reopen();
        append(&path, "two\n");
        assert_eq!(f.poll().await.unwrap(), ["two"]);
    }

    #[tokio::test]
    async fn reopening_another_file_ends_the_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "x\n");
        let mut f = Follower::new(&path);
        f.poll().await.unwrap();
        append(&path, "ab");
        assert!(f.poll().await.unwrap().is_empty());
        f.reopen();
        std::fs::rename(&path, dir.path().join("app.log.0")).unwrap();
        append(&path, "cd\n");
        assert_eq!(f.poll().await.unwrap(), ["ab", "cd"]);
    }

    #[tokio::test]
    async fn a_directory_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Follower::new(dir.path());
        let err = f.poll().await.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
