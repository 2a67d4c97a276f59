//! A webhook receiver for tests: HTTP/1.1 on loopback with keep-alive, on
//! plain threads so that it answers whichever runtime the client runs on. It
//! counts the connections it accepts and hands every request to the test in
//! the order they arrive, answered at once with a fixed status or held until
//! the test answers it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long a test waits for a request before it fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct FakeWebhook {
    port: u16,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    posted: mpsc::Receiver<Posted>,
}

/// One request as the receiver read it.
#[derive(Debug)]
pub(crate) struct Posted {
    /// Request line and headers, lines joined by `\n`.
    pub head: String,
    pub body: Vec<u8>,
    /// Where a held request's answer goes; `None` once answered.
    answer: Option<mpsc::Sender<&'static str>>,
}

impl FakeWebhook {
    /// Answers every request with `status` (e.g. `200 OK`) once it has
    /// handed it to the test.
    pub fn answering(status: &'static str) -> FakeWebhook {
        FakeWebhook::start(Some(status))
    }

    /// Holds every request until the test calls [`Posted::answer`].
    pub fn holding() -> FakeWebhook {
        FakeWebhook::start(None)
    }

    fn start(status: Option<&'static str>) -> FakeWebhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, posted) = mpsc::channel();
        let counter = accepted.clone();
        // Runs until the test process ends: a blocked accept cannot be woken.
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(socket) = socket else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                std::thread::spawn(move || serve(socket, status, tx));
            }
        });
        FakeWebhook { port, accepted, posted }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next request; panics if none comes within 10 s.
    pub fn next(&self) -> Posted {
        self.posted.recv_timeout(PATIENCE).expect("a webhook request")
    }
}

impl Posted {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Answers a held request with `status`.
    pub fn answer(&mut self, status: &'static str) {
        let answer = self.answer.take().expect("a held request, answered once");
        answer.send(status).unwrap();
    }
}

/// One connection: requests until the client closes it.
fn serve(socket: TcpStream, status: Option<&'static str>, posted: mpsc::Sender<Posted>) {
    let Ok(mut writer) = socket.try_clone() else { return };
    let mut reader = BufReader::new(socket);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let length = head
            .iter()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (answer, answered) = mpsc::channel();
        let request = Posted {
            head: head.join("\n"),
            body,
            answer: status.is_none().then_some(answer),
        };
        if posted.send(request).is_err() {
            return;
        }
        let Some(status) = status.or_else(|| answered.recv().ok()) else {
            return;
        };
        let said = format!("{{\"said\": \"{status}\"}}\n");
        let written = write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nLocation: http://elsewhere.example.com/\r\n\r\n{said}",
            said.len()
        );
        if written.and_then(|_| writer.flush()).is_err() {
            return;
        }
    }
}
