//! A webhook receiver on loopback: records every JSON `POST` with the moment
//! it arrived, so the harness can count notifications and time them. It runs
//! on its own thread (its own actix system), away from the harness's work.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Hook {
    pub at: Instant,
    /// The request path, so one sink can serve several receivers
    /// (`/amon`, `/alertmanager`).
    pub path: String,
    /// The body; `Value::Null` when it was not JSON.
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    hooks: Mutex<Vec<Hook>>,
    count: AtomicUsize,
    /// While set, every request is answered `503` (a receiver outage).
    failing: AtomicBool,
}

pub struct WebhookSink {
    shared: Arc<Shared>,
    port: u16,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let at = Instant::now();
    if shared.failing.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.hooks.lock().expect("sink lock").push(Hook {
        at,
        path: req.path().to_string(),
        body,
    });
    shared.count.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().finish()
}

impl WebhookSink {
    /// Binds `127.0.0.1:0` and serves on `workers` threads.
    pub fn start(workers: usize) -> std::io::Result<WebhookSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let data = web::Data::from(shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("webhook-sink".into()).spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                        .default_service(web::to(receive))
                })
                .workers(workers)
                .disable_signals()
                .listen(listener);
                match server {
                    Ok(server) => {
                        let server = server.run();
                        let _ = tx.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
        })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("webhook sink thread died"))??;
        Ok(WebhookSink {
            shared,
            port,
            handle,
            thread: Some(thread),
        })
    }

    /// The base URL; any path below it is accepted.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Every request received so far.
    pub fn hooks(&self) -> Vec<Hook> {
        self.shared.hooks.lock().expect("sink lock").clone()
    }

    /// Forgets what was received (between phases of a comparison).
    pub fn clear(&self) {
        self.shared.hooks.lock().expect("sink lock").clear();
        self.shared.count.store(0, Ordering::Relaxed);
    }

    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::Relaxed);
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        // The server's own system runs `stop`; we only wait for its thread.
        drop(stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
