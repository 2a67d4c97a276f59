//! `AgentProbeCache`: the relay's copy of the master's probe list for its
//! agent (`GET /agentprobes?agent=`), which the relay's agent API serves.
//!
//! Like the original relay it asks `HEAD` first and `GET`s only when the
//! `Content-MD5` differs from the cached one; it refreshes every
//! `relay.agent_probes_poll` after the previous refresh, and at the first
//! request while nothing is cached. Unlike the original it never turns "the
//! master is unreachable" into an empty list (which stopped every probe):
//! with nothing cached the answer is [`AgentProbesUnavailable`], and with a
//! cached list that list is kept until the master says otherwise.
//!
//! The cache is memory only: after a relay restart the first agent request
//! fetches the list again.

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::supervisor::{Lifeline, Stop};
use crate::http::client::{AgentProbes, MasterClient, Masters};

/// The agent's probe list: the cached one, or a fresh one when nothing is
/// cached yet.
#[derive(Debug, Message)]
#[rtype(result = "Result<AgentProbes, AgentProbesUnavailable>")]
pub struct GetAgentProbes;

/// Refreshes now (`HEAD`, then `GET` if changed) and answers with the list
/// that refresh got, or why it failed (the cached list is kept and still
/// served). The refresh asks the master after this message arrived: one
/// already under way may have asked before, so this waits for the next,
/// which starts when that one ends (several such requests share it). The
/// relay admin API's `POST /state?action=syncprobes`.
#[derive(Debug, Message)]
#[rtype(result = "Result<AgentProbes, AgentProbesUnavailable>")]
pub struct RefreshAgentProbes;

/// Nothing is cached and the master did not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("agent probes are unavailable: {0}")]
pub struct AgentProbesUnavailable(pub String);

type Answer = Result<AgentProbes, AgentProbesUnavailable>;

pub struct AgentProbeCache {
    client: Rc<MasterClient>,
    /// Whose probes: the agent this relay serves (the server's own uuid for
    /// the global zone's agent).
    agent: Uuid,
    /// Time from the end of one refresh to the start of the next.
    poll: Duration,
    cached: Option<AgentProbes>,
    /// A refresh is on the wire.
    refreshing: bool,
    /// `GetAgentProbes` with nothing cached: waiting for the refresh under
    /// way, for whatever list it leaves.
    waiting: Vec<oneshot::Sender<Answer>>,
    /// `RefreshAgentProbes` waiting for the outcome of the refresh under way.
    waiting_fresh: Vec<oneshot::Sender<Answer>>,
    /// `RefreshAgentProbes` that arrived while a refresh was under way: they
    /// wait for the next one.
    queued_fresh: Vec<oneshot::Sender<Answer>>,
    /// The next scheduled refresh, cancelled when one happens earlier.
    next_round: Option<SpawnHandle>,
    /// The last refresh failed (so the next failure is not logged as news).
    failing: bool,
    lifeline: Lifeline,
}

impl AgentProbeCache {
    pub fn new(
        master_urls: &[String],
        master_token: Option<&str>,
        agent: Uuid,
        poll: Duration,
        lifeline: Lifeline,
    ) -> AgentProbeCache {
        AgentProbeCache {
            client: Rc::new(MasterClient::failover(Masters::new(master_urls), master_token)),
            agent,
            poll,
            cached: None,
            refreshing: false,
            waiting: Vec::new(),
            waiting_fresh: Vec::new(),
            queued_fresh: Vec::new(),
            next_round: None,
            failing: false,
            lifeline,
        }
    }

    /// Waits for the refresh under way, starting one if none is.
    fn wait_for_refresh(&mut self, ctx: &mut Context<Self>) -> ResponseFuture<Answer> {
        let (tx, rx) = oneshot::channel();
        self.waiting.push(tx);
        self.refresh(ctx);
        answer_from(rx)
    }

    /// Waits for the outcome of a refresh that starts now, or as soon as
    /// the one under way ends.
    fn wait_for_fresh_refresh(&mut self, ctx: &mut Context<Self>) -> ResponseFuture<Answer> {
        let (tx, rx) = oneshot::channel();
        if self.refreshing {
            self.queued_fresh.push(tx);
        } else {
            self.waiting_fresh.push(tx);
            self.refresh(ctx);
        }
        answer_from(rx)
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        if let Some(handle) = self.next_round.take() {
            ctx.cancel_future(handle);
        }
        let client = self.client.clone();
        let agent = self.agent;
        let known = self.cached.as_ref().map(|c| c.content_md5.clone());
        ctx.spawn(
            async move { client.agent_probes_if_changed(agent, known).await }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.refreshing = false;
                let mut error = None;
                match result {
                    Ok(Some(fresh)) => {
                        tracing::info!(agent = %act.agent, content_md5 = %fresh.content_md5, "agent probes updated");
                        act.cached = Some(fresh);
                        act.failing = false;
                    }
                    Ok(None) => {
                        tracing::debug!(agent = %act.agent, "agent probes unchanged");
                        act.failing = false;
                    }
                    Err(e) => {
                        let kept = act.cached.is_some();
                        if act.failing {
                            tracing::debug!(agent = %act.agent, error = %e, kept, "agent probes still not refreshed");
                        } else {
                            tracing::warn!(agent = %act.agent, error = %e, kept, "cannot refresh agent probes; will retry");
                        }
                        act.failing = true;
                        error = Some(e.to_string());
                    }
                }
                let no_list = || AgentProbesUnavailable("the master sent no probe list".into());
                let fresh = match (&act.cached, &error) {
                    (Some(cached), None) => Ok(cached.clone()),
                    (_, Some(error)) => Err(AgentProbesUnavailable(error.clone())),
                    (None, None) => Err(no_list()),
                };
                let answer = match (&act.cached, error) {
                    (Some(cached), _) => Ok(cached.clone()),
                    (None, error) => Err(error.map(AgentProbesUnavailable).unwrap_or_else(no_list)),
                };
                for waiter in act.waiting.drain(..) {
                    let _ = waiter.send(answer.clone());
                }
                for waiter in act.waiting_fresh.drain(..) {
                    let _ = waiter.send(fresh.clone());
                }
                act.next_round = Some(ctx.run_later(act.poll, |act, ctx| act.refresh(ctx)));
                if !act.queued_fresh.is_empty() {
                    act.waiting_fresh = std::mem::take(&mut act.queued_fresh);
                    act.refresh(ctx);
                }
            }),
        );
    }
}

impl Actor for AgentProbeCache {
    type Context = Context<Self>;
}

impl Handler<GetAgentProbes> for AgentProbeCache {
    type Result = ResponseFuture<Answer>;

    fn handle(&mut self, _: GetAgentProbes, ctx: &mut Context<Self>) -> Self::Result {
        match &self.cached {
            Some(cached) => {
                let cached = cached.clone();
                Box::pin(async move { Ok(cached) })
            }
            None => self.wait_for_refresh(ctx),
        }
    }
}

impl Handler<RefreshAgentProbes> for AgentProbeCache {
    type Result = ResponseFuture<Answer>;

    fn handle(&mut self, _: RefreshAgentProbes, ctx: &mut Context<Self>) -> Self::Result {
        self.wait_for_fresh_refresh(ctx)
    }
}

fn answer_from(rx: oneshot::Receiver<Answer>) -> ResponseFuture<Answer> {
    Box::pin(async move {
        rx.await
            .unwrap_or_else(|_| Err(AgentProbesUnavailable("the agent probe cache stopped".into())))
    })
}

impl Handler<Stop> for AgentProbeCache {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.lifeline.exit_normally();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use actix_web::{web, App, HttpResponse};

    use super::*;
    use crate::http::server::Shape;
    use crate::http::{content_md5, serve};

    /// A master that serves one agent probe list and counts the requests.
    #[derive(Clone)]
    struct FakeMaster {
        list: Arc<Mutex<String>>,
        heads: Arc<AtomicUsize>,
        gets: Arc<AtomicUsize>,
        /// A `GET` takes its list, says so here, then answers only when the
        /// gate lets it through.
        took_list: Arc<tokio::sync::Notify>,
        gate: Arc<tokio::sync::Semaphore>,
        /// Answers every request 503 (a master that is down).
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Default for FakeMaster {
        fn default() -> FakeMaster {
            FakeMaster::gated(tokio::sync::Semaphore::MAX_PERMITS)
        }
    }

    impl FakeMaster {
        /// A master whose `GET`s wait until `permits` are given (see
        /// [`FakeMaster::open`]).
        fn gated(permits: usize) -> FakeMaster {
            FakeMaster {
                list: Default::default(),
                heads: Default::default(),
                gets: Default::default(),
                took_list: Default::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(permits)),
                down: Default::default(),
            }
        }

        fn open(&self) {
            self.gate.add_permits(1000);
        }

        fn start(&self) -> (String, actix_web::dev::ServerHandle) {
            let me = self.clone();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server = serve("fake-master", listener, Shape::RELAY, move || {
                let (get, head) = (me.clone(), me.clone());
                App::new()
                    .route(
                        "/agentprobes",
                        web::get().to(move || {
                            let me = get.clone();
                            async move {
                                if me.down.load(Ordering::SeqCst) {
                                    return HttpResponse::ServiceUnavailable().finish();
                                }
                                me.gets.fetch_add(1, Ordering::SeqCst);
                                let list = me.list.lock().unwrap().clone();
                                me.took_list.notify_one();
                                drop(me.gate.acquire().await.unwrap());
                                HttpResponse::Ok()
                                    .insert_header(("Content-MD5", content_md5(list.as_bytes())))
                                    .body(list)
                            }
                        }),
                    )
                    .route(
                        "/agentprobes",
                        web::head().to(move || {
                            let me = head.clone();
                            async move {
                                if me.down.load(Ordering::SeqCst) {
                                    return HttpResponse::ServiceUnavailable().finish();
                                }
                                me.heads.fetch_add(1, Ordering::SeqCst);
                                let list = me.list.lock().unwrap().clone();
                                HttpResponse::Ok()
                                    .insert_header(("Content-MD5", content_md5(list.as_bytes())))
                                    .finish()
                            }
                        }),
                    )
            })
            .unwrap();
            let handle = server.handle();
            actix_rt::spawn(server);
            (url, handle)
        }

        fn set(&self, list: &str) {
            *self.list.lock().unwrap() = list.to_string();
        }

        fn counts(&self) -> (usize, usize) {
            (self.heads.load(Ordering::SeqCst), self.gets.load(Ordering::SeqCst))
        }
    }

    /// A poll so long that only the test's own requests refresh.
    const NEVER: Duration = Duration::from_secs(24 * 3600);

    #[actix_rt::test]
    async fn the_list_is_fetched_again_only_when_its_md5_changed() {
        let master = FakeMaster::default();
        let one = r#"[{"uuid":"00000000-0000-0000-0000-000000000001"}]"#;
        master.set(one);
        let (url, _server) = master.start();
        let cache = AgentProbeCache::new(
            std::slice::from_ref(&url),
            None,
            Uuid::new_v4(),
            NEVER,
            Lifeline::detached(),
        )
        .start();

        let first = cache.send(GetAgentProbes).await.unwrap().unwrap();
        assert_eq!(first.body, one.as_bytes());
        assert_eq!(first.content_md5, content_md5(one.as_bytes()));
        assert_eq!(master.counts(), (0, 1), "nothing cached: straight to GET");

        cache.send(GetAgentProbes).await.unwrap().unwrap();
        assert_eq!(master.counts(), (0, 1), "served from the cache");

        cache.send(RefreshAgentProbes).await.unwrap().unwrap();
        assert_eq!(master.counts(), (1, 1), "same md5: HEAD only");

        let two = r#"[{"uuid":"00000000-0000-0000-0000-000000000002"}]"#;
        master.set(two);
        let second = cache.send(RefreshAgentProbes).await.unwrap().unwrap();
        assert_eq!(second.body, two.as_bytes());
        assert_eq!(master.counts(), (2, 2), "md5 changed: HEAD then GET");

        // The master fails: the refresh says so, the cached list stays. (A
        // stopped server would race: a kept-alive connection may still be
        // answered while it closes.)
        master.down.store(true, Ordering::SeqCst);
        let failed = cache.send(RefreshAgentProbes).await.unwrap();
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(cache.send(GetAgentProbes).await.unwrap().unwrap(), second);
    }

    #[actix_rt::test]
    async fn a_refresh_asked_for_during_another_waits_for_one_that_starts_after_it() {
        let master = FakeMaster::gated(0);
        let one = r#"[{"uuid":"00000000-0000-0000-0000-000000000001"}]"#;
        master.set(one);
        let (url, server) = master.start();
        let cache = AgentProbeCache::new(
            std::slice::from_ref(&url),
            None,
            Uuid::new_v4(),
            NEVER,
            Lifeline::detached(),
        )
        .start();

        // A first request starts a refresh; the master takes the old list
        // and holds its answer.
        let first = cache.send(GetAgentProbes);
        master.took_list.notified().await;
        // The list changes, and a sync is asked for, while that refresh is
        // still on the wire: it cannot know of the change.
        let two = r#"[{"uuid":"00000000-0000-0000-0000-000000000002"}]"#;
        master.set(two);
        let synced = cache.send(RefreshAgentProbes);
        master.open();

        assert_eq!(first.await.unwrap().unwrap().body, one.as_bytes());
        assert_eq!(
            synced.await.unwrap().unwrap().body,
            two.as_bytes(),
            "the sync got the list as it was after it was asked for"
        );
        assert_eq!(master.counts(), (1, 2), "a second round: HEAD, then GET");
        server.stop(false).await;
    }

    #[actix_rt::test]
    async fn an_unreachable_master_with_nothing_cached_is_unavailable_not_empty() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let cache = AgentProbeCache::new(
            std::slice::from_ref(&url),
            None,
            Uuid::new_v4(),
            NEVER,
            Lifeline::detached(),
        )
        .start();
        let answer = cache.send(GetAgentProbes).await.unwrap();
        assert!(answer.is_err(), "{answer:?}");
    }

    #[actix_rt::test]
    async fn a_list_that_does_not_match_its_md5_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = serve("fake-master", listener, Shape::RELAY, || {
            App::new().route(
                "/agentprobes",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .insert_header(("Content-MD5", content_md5(b"[]")))
                        .body(r#"[{"uuid":"x"}]"#)
                }),
            )
        })
        .unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        let cache = AgentProbeCache::new(
            std::slice::from_ref(&url),
            None,
            Uuid::new_v4(),
            NEVER,
            Lifeline::detached(),
        )
        .start();
        let answer = cache.send(GetAgentProbes).await.unwrap();
        assert!(
            matches!(&answer, Err(AgentProbesUnavailable(why)) if why.contains("Content-MD5")),
            "{answer:?}"
        );
        handle.stop(false).await;
    }
}
