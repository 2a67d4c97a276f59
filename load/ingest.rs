//! Ingest benchmark: posts machine events to a running master's
//! `POST /events` in batches over several connections, and reports events
//! per second (each answered 202 only after the master's commit) and batch
//! latency percentiles.
//!
//!   cargo run --release --example ingest -- URL EVENTS BATCH CONNECTIONS [PROBED]
//!   e.g. cargo run --release --example ingest -- http://127.0.0.1:4300 500000 1000 4
//!
//! PROBED (default 0): how many distinct machines the events cycle over,
//! for a master that has machine-up probes on them (events for machines
//! nobody watches are committed and routed but open no alarm).

// A benchmark measures wall time; the paused-time rule is for logic.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:4300".into());
    let events: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let batch: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let connections: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(4);
    let machines: Vec<Uuid> = match args.get(5).and_then(|a| a.parse::<usize>().ok()) {
        Some(n) if n > 0 => (0..n)
            .map(|i| Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("load/{i}").as_bytes()))
            .collect(),
        _ => Vec::new(),
    };
    let batches = events.div_ceil(batch);
    let server = Uuid::new_v4();
    // Events stamped now: the master drops events older than its
    // `event_retention`, which a fixed old timestamp soon would be.
    let now = chrono::Utc::now().timestamp_millis();
    // Bodies are built before the clock starts: we measure the master.
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|b| {
            let list: Vec<_> = (0..batch)
                .map(|i| {
                    let n = b * batch + i;
                    let machine = if machines.is_empty() {
                        Uuid::new_v4()
                    } else {
                        machines[n % machines.len()]
                    };
                    let up = (n / machines.len().max(1)) % 2 == 1;
                    json!({
                        "type": "machine", "uuid": Uuid::new_v4(), "time": now + n as i64,
                        "relay": server, "machine": machine, "server": server,
                        "oldState": if up { "ready" } else { "running" },
                        "newState": if up { "running" } else { "shutting_down" }, "up": up,
                    })
                })
                .collect();
            serde_json::to_vec(&list).expect("json")
        })
        .collect();
    let per_conn: Vec<Vec<Vec<u8>>> = (0..connections)
        .map(|c| bodies.iter().skip(c).step_by(connections).cloned().collect())
        .collect();
    let started = Instant::now();
    let handles: Vec<_> = per_conn
        .into_iter()
        .map(|bodies| {
            let url = format!("{url}/events");
            std::thread::spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
                    let mut latencies = Vec::with_capacity(bodies.len());
                    for body in bodies {
                        let t = Instant::now();
                        let mut res = client
                            .post(&url)
                            .insert_header(("content-type", "application/json"))
                            .send_body(body)
                            .await
                            .expect("post");
                        let _ = res.body().await;
                        assert_eq!(res.status().as_u16(), 202, "master answered {}", res.status());
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().expect("thread")).collect();
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "events={} batch={} connections={} elapsed={:.2}s rate={:.0} events/s batch p50={:?} p99={:?}",
        batches * batch,
        batch,
        connections,
        elapsed.as_secs_f64(),
        (batches * batch) as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}
