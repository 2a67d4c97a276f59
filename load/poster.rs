//! Posts prepared JSON bodies to one HTTP endpoint and records how each was
//! answered: either as fast as the server answers (throughput) or on a fixed
//! schedule (latency). The same poster drives Amon and Alertmanager, so both
//! see the same client. Each connection's loop runs on its own OS thread with
//! its own actix system and `awc` client, away from the caller's thread (which
//! may itself be inside an actix system), and every response body is read so
//! keep-alive connections stay open (SPEC §11's sharp edge).
//!
//! **Architecture Invariant:** the poster builds no bodies and parses no
//! answers; callers hand it finished bytes and read only statuses and times.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use hdrhistogram::Histogram;

/// How long one request may take before it counts as an error: long enough
/// for a 1000-alert batch on a loaded two-core machine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `post_all` waits before resending a body answered `503`
/// (shorter than the `Retry-After` a relay honours, so the measurement
/// shows the server's pace, not the client's patience).
const RETRY_503: Duration = Duration::from_millis(10);
/// Answers larger than this are cut short (both systems answer a few bytes).
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;

/// What one `post_all` or `post_paced` call saw.
#[derive(Debug, Clone)]
pub struct PostStats {
    /// Requests sent, answered or not.
    pub requests: usize,
    /// Items carried by the requests answered with a 2xx status, so a
    /// failing server does not look fast.
    pub items: usize,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Microseconds from each send to the end of its answer's body.
    pub latencies: Histogram<u64>,
    /// How many requests were answered with each status.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub errors: usize,
    /// `post_all` only: `503` answers (back-pressure), each retried after
    /// [`RETRY_503`] as a relay retries; not in `requests` or `statuses`.
    pub refused: usize,
    /// `post_paced` only: the furthest a send fell behind its due time (the
    /// tokio timer's ~1 ms granularity, or a slow answer holding every
    /// connection); zero for `post_all`.
    pub max_late: Duration,
}

impl PostStats {
    fn empty() -> PostStats {
        PostStats {
            requests: 0,
            items: 0,
            elapsed: Duration::ZERO,
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            statuses: BTreeMap::new(),
            errors: 0,
            refused: 0,
            max_late: Duration::ZERO,
        }
    }

    fn record(&mut self, answer: Result<u16, String>, took: Duration, items: usize) {
        self.requests += 1;
        self.latencies.saturating_record((took.as_micros() as u64).max(1));
        match answer {
            Ok(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    self.items += items;
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, other: PostStats) {
        self.requests += other.requests;
        self.items += other.items;
        self.latencies
            .add(&other.latencies)
            .expect("histograms share their bounds");
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        self.refused += other.refused;
        self.max_late = self.max_late.max(other.max_late);
    }

    /// Items accepted (2xx) per second of `elapsed`.
    pub fn items_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.items as f64 / secs
        } else {
            0.0
        }
    }

    /// At least one request, every one answered, and all with `status`.
    pub fn all_ok(&self, status: u16) -> bool {
        self.requests > 0 && self.errors == 0 && self.statuses.get(&status) == Some(&self.requests)
    }
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(REQUEST_TIMEOUT).finish()
}

/// One `POST` of `body` as JSON; `Ok(status)` once the whole answer is read.
async fn post(client: &awc::Client, url: &str, bearer: Option<&str>, body: Bytes) -> Result<u16, String> {
    let mut request = client.post(url).insert_header(("content-type", "application/json"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let mut answer = request.send_body(body).await.map_err(|e| e.to_string())?;
    // Read even an error's body: an unread body closes the connection.
    answer.body().limit(ANSWER_LIMIT).await.map_err(|e| e.to_string())?;
    Ok(answer.status().as_u16())
}

/// Posts every body (one JSON request each) to `url` over `connections`
/// concurrent keep-alive connections, each sending its next body as soon as
/// the last is answered; `items_per_body` is how many events or alerts each
/// body carries (for `items_per_sec`). Connections take bodies from one
/// shared queue in order, so a faster connection takes more. Blocks until
/// every body is answered or failed; `elapsed` runs from the first send to
/// the last answer, so thread start-up is not measured.
pub fn post_all(
    url: &str,
    bodies: Vec<Vec<u8>>,
    items_per_body: usize,
    connections: usize,
    bearer: Option<String>,
) -> PostStats {
    let bodies: Arc<Vec<Bytes>> = Arc::new(bodies.into_iter().map(Bytes::from).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..connections.max(1))
        .map(|c| {
            let (url, bearer, bodies, next) = (url.to_string(), bearer.clone(), bodies.clone(), next.clone());
            std::thread::Builder::new()
                .name(format!("poster-{c}"))
                .spawn(move || {
                    actix_rt::System::new().block_on(async move {
                        let client = client();
                        let mut stats = PostStats::empty();
                        let mut span: Option<(Instant, Instant)> = None;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(body) = bodies.get(i) else { break };
                            let sent = Instant::now();
                            let mut answer = post(&client, &url, bearer.as_deref(), body.clone()).await;
                            while answer == Ok(503) {
                                stats.refused += 1;
                                actix_rt::time::sleep(RETRY_503).await;
                                answer = post(&client, &url, bearer.as_deref(), body.clone()).await;
                            }
                            let answered = Instant::now();
                            stats.record(answer, answered - sent, items_per_body);
                            span = Some((span.map_or(sent, |(first, _)| first), answered));
                        }
                        (stats, span)
                    })
                })
                .expect("spawn a poster thread")
        })
        .collect();
    let mut total = PostStats::empty();
    let mut span: Option<(Instant, Instant)> = None;
    for thread in threads {
        let (stats, thread_span) = thread.join().expect("a poster thread panicked");
        total.merge(stats);
        if let Some((first, last)) = thread_span {
            span = Some(span.map_or((first, last), |(f, l)| (f.min(first), l.max(last))));
        }
    }
    total.elapsed = span.map_or(Duration::ZERO, |(first, last)| last - first);
    total
}

/// Posts the bodies in order at a steady `per_second` (one item per body):
/// body `i` is due at `start + i / per_second` and is sent then, or as soon
/// as a connection is free after that, so a slow answer delays the bodies
/// behind it without shifting the schedule (see `PostStats::max_late`).
/// `on_sent(i, at)` is called right before body `i` is sent, so the caller
/// can time end-to-end latency from `at`. `connections` keep-alive
/// connections share one thread (1 keeps up with 1,000/s while answers take
/// under a millisecond; use 2 when they may take longer). Blocks until every
/// body is answered or failed.
pub fn post_paced<F>(
    url: &str,
    bodies: Vec<Vec<u8>>,
    per_second: f64,
    connections: usize,
    bearer: Option<String>,
    on_sent: F,
) -> PostStats
where
    F: FnMut(usize, Instant) + Send + 'static,
{
    assert!(per_second > 0.0, "post_paced needs a positive rate, not {per_second}");
    let url = url.to_string();
    let bodies: Vec<Bytes> = bodies.into_iter().map(Bytes::from).collect();
    std::thread::Builder::new()
        .name("poster-paced".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let client = client();
                let next = Cell::new(0usize);
                let on_sent = RefCell::new(on_sent);
                let started = Instant::now();
                let lanes = (0..connections.max(1)).map(|_| async {
                    let mut stats = PostStats::empty();
                    loop {
                        // A lane takes the next body only once it is due,
                        // and takes it and records it without an await in
                        // between: lanes share one thread, so bodies leave
                        // in schedule order. (Taking the index before the
                        // sleep let two lanes whose timers had both passed
                        // on a loaded machine send 16 before 15.)
                        let i = next.get();
                        let Some(body) = bodies.get(i) else { break };
                        let due = started + Duration::from_secs_f64(i as f64 / per_second);
                        let sent = Instant::now();
                        if sent < due {
                            actix_rt::time::sleep_until(due.into()).await;
                            continue;
                        }
                        next.set(i + 1);
                        stats.max_late = stats.max_late.max(sent.saturating_duration_since(due));
                        (on_sent.borrow_mut())(i, sent);
                        let answer = post(&client, &url, bearer.as_deref(), body.clone()).await;
                        stats.record(answer, sent.elapsed(), 1);
                    }
                    stats
                });
                let mut total = PostStats::empty();
                for stats in futures_util::future::join_all(lanes).await {
                    total.merge(stats);
                }
                total.elapsed = started.elapsed();
                total
            })
        })
        .expect("spawn the paced poster thread")
        .join()
        .expect("the paced poster thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use std::sync::Mutex;

    /// A loopback server answering `202` (or `401` without the expected
    /// bearer), on its own thread; returns its URL.
    fn server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                HttpServer::new(|| {
                    App::new().default_service(web::to(|req: HttpRequest, _body: web::Bytes| async move {
                        match req.headers().get("authorization").and_then(|v| v.to_str().ok()) {
                            Some("Bearer wrong") => HttpResponse::Unauthorized().finish(),
                            _ => HttpResponse::Accepted().finish(),
                        }
                    }))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run()
                .await
                .expect("serve")
            })
        });
        format!("http://127.0.0.1:{port}/events")
    }

    #[test]
    fn post_all_counts_every_body_and_its_items() {
        let url = server();
        let stats = post_all(&url, vec![b"[1,2]".to_vec(); 50], 2, 3, None);
        assert_eq!(stats.requests, 50);
        assert_eq!(stats.items, 100);
        assert!(stats.all_ok(202), "{:?}", stats.statuses);
        assert_eq!(stats.latencies.len(), 50);
        assert!(stats.items_per_sec() > 0.0);
    }

    #[test]
    fn refused_answers_count_no_items() {
        let url = server();
        let stats = post_all(&url, vec![b"[]".to_vec(); 4], 10, 2, Some("wrong".into()));
        assert_eq!(stats.items, 0);
        assert_eq!(stats.statuses.get(&401), Some(&4));
        assert!(!stats.all_ok(202));
    }

    #[test]
    fn unreachable_server_counts_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let stats = post_all(
            &format!("http://127.0.0.1:{port}/"),
            vec![b"[]".to_vec(); 3],
            1,
            1,
            None,
        );
        assert_eq!((stats.requests, stats.errors), (3, 3));
        assert!(!stats.all_ok(202));
    }

    #[test]
    fn paced_bodies_leave_in_order_on_schedule() {
        let url = server();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        let before = Instant::now();
        let stats = post_paced(&url, vec![b"{}".to_vec(); 20], 200.0, 2, None, move |i, at| {
            record.lock().expect("lock").push((i, at))
        });
        let sent = sent.lock().expect("lock").clone();
        assert!(stats.all_ok(202));
        assert_eq!(
            sent.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        // 20 bodies at 200/s: the last is due 95 ms after the start, and
        // never leaves early (a lower bound, so a slow machine cannot flake).
        let span = sent[19].1 - before;
        assert!(span >= Duration::from_millis(95), "{span:?}");
    }
}
