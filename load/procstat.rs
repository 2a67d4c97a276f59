//! The child processes the harness starts (Amon's daemons, Alertmanager)
//! and what they cost, read from Linux's `/proc`: resident memory and CPU
//! time. Linux only (the harness runs where the daemons are measured).

use std::fs;
use std::path::PathBuf;
use std::process::Child;

/// A child process with its log file: killed and reaped when dropped.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn new(child: Child, log: PathBuf) -> Process {
        Process { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid()).unwrap_or(0)
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM without waiting (a relay then announces its shutdown).
    pub fn signal_term(&self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }

    /// Whether it has exited, and if so how.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of its log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.kill();
        }
    }
}

/// Resident set size of `pid` in bytes (`VmRSS`), or `None` once it has exited.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// User plus system CPU time of `pid` in seconds, or `None` once it has exited.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

/// `/proc/PID/stat`: the command name is in parentheses and may hold spaces,
/// so fields are counted after the last `)`; `utime` and `stime` are fields
/// 14 and 15, in clock ticks of `USER_HZ`, which Linux fixes at 100 for
/// this interface on every architecture we run on.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (amon (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_seconds(me).is_some());
    }
}
