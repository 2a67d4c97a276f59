//! An SMTP server on loopback that accepts every message and records it with
//! the moment it was accepted (the `250` after `DATA`), so the harness can
//! count emails, read whom they name and time them. It can refuse for a while
//! (`set_refusing`): `421` to new connections and `451` to `MAIL` on open
//! ones, which a sender must treat as temporary.
//!
//! Hand-written rather than a crate: it must time the acceptance exactly and
//! inject refusals, and it needs only the half dozen commands lettre sends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Email {
    pub at: Instant,
    pub rcpt_to: Vec<String>,
    pub subject: String,
    pub message_id: String,
    /// The body after the headers, quoted-printable decoded when so encoded.
    pub body: String,
}

#[derive(Default)]
struct Shared {
    emails: Mutex<Vec<Email>>,
    count: AtomicUsize,
    refusing: AtomicBool,
    /// Transactions refused while `refusing` (for the report).
    refused: AtomicUsize,
}

pub struct SmtpSink {
    shared: Arc<Shared>,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmtpSink {
    /// Binds `127.0.0.1:port` (0: any free port) and serves on its own thread.
    pub fn start(port: u16) -> std::io::Result<SmtpSink> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new().name("smtp-sink".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("smtp sink runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("smtp sink listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let shared = serving.clone();
                        tokio::spawn(async move {
                            let _ = session(stream, shared).await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        })?;
        Ok(SmtpSink {
            shared,
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    pub fn emails(&self) -> Vec<Email> {
        self.shared.emails.lock().expect("sink lock").clone()
    }

    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::Relaxed);
    }

    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Longest message we keep (a server-down email of 500 machines is ~60 kB).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

async fn session(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if shared.refusing.load(Ordering::Relaxed) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        write.write_all(b"421 4.3.2 sink refusing for now\r\n").await?;
        return Ok(());
    }
    write.write_all(b"220 amon-load sink ESMTP\r\n").await?;
    let mut rcpt_to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-amon-load sink\r\n250-8BITMIME\r\n250 SIZE 16777216\r\n",
            "HELO" => b"250 amon-load sink\r\n",
            "MAIL" if shared.refusing.load(Ordering::Relaxed) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                b"451 4.3.2 sink refusing for now\r\n"
            }
            "MAIL" => {
                rcpt_to.clear();
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" => {
                let address = line
                    .split_once(':')
                    .map(|(_, a)| a.trim().trim_start_matches('<').trim_end_matches('>').to_string())
                    .unwrap_or_default();
                rcpt_to.push(address);
                b"250 2.1.5 ok\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let raw = read_data(&mut reader).await?;
                let at = Instant::now();
                let email = parse_message(&raw, std::mem::take(&mut rcpt_to), at);
                shared.emails.lock().expect("sink lock").push(email);
                shared.count.fetch_add(1, Ordering::Relaxed);
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                rcpt_to.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Reads a message up to the lone `.` line, undoing dot-stuffing.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<String> {
    let mut message = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let content = line.trim_end_matches(['\r', '\n']);
        if content == "." {
            return Ok(message);
        }
        if message.len() < MAX_MESSAGE {
            message.push_str(content.strip_prefix('.').unwrap_or(content));
            message.push('\n');
        }
    }
}

/// Splits headers from body, unfolds the headers we need and decodes a
/// quoted-printable body.
pub fn parse_message(raw: &str, rcpt_to: Vec<String>, at: Instant) -> Email {
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = if header("content-transfer-encoding").eq_ignore_ascii_case("quoted-printable") {
        decode_quoted_printable(body)
    } else {
        body.to_string()
    };
    Email {
        at,
        rcpt_to,
        subject: header("subject"),
        message_id: header("message-id"),
        body,
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split('\n') {
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        if !soft {
            out.push(b'\n');
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_soft_breaks_and_escapes_are_undone() {
        let raw = "Subject: [amon load] Alarm 1\nContent-Transfer-Encoding: quoted-printable\n\nab=\ncd =3D e\n";
        let email = parse_message(raw, vec!["a@b".into()], Instant::now());
        assert_eq!(email.subject, "[amon load] Alarm 1");
        assert_eq!(email.body, "abcd = e\n\n");
    }

    #[test]
    fn folded_headers_are_unfolded() {
        let raw = "Subject: a long\n subject\nMessage-ID: <x@y>\n\nbody\n";
        let email = parse_message(raw, vec![], Instant::now());
        assert_eq!(email.subject, "a long subject");
        assert_eq!(email.message_id, "<x@y>");
    }
}
