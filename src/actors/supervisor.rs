//! Our own supervision over actix (SPEC §2): child specs that build fresh
//! state on every start, restarts delayed by exponential backoff, restart
//! intensity that escalates to the parent, and reverse-order shutdown.
//!
//! actix's own `Supervisor` restarts the same instance with no delay and no
//! limit, and a panicking handler kills an actor without telling anyone. So
//! every supervised actor holds a [`Lifeline`]: when the actor is dropped —
//! stopped, or torn down after a panic — the lifeline tells its supervisor.
//! An exit the supervisor did not ask for, and that the child did not declare
//! normal with [`Lifeline::exit_normally`], is a crash.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::time::Instant;

use crate::http::shapes::ChildStatus;

/// How often a child may crash before its supervisor gives up, and how long
/// to wait before each restart.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// More than this many restarts within `within` escalates.
    pub max_restarts: usize,
    pub within: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 5,
            within: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Restart bookkeeping for one child: the backoff delay and the window of
/// recent restarts. Shared by [`Supervisor`] and dynamic supervisors such as
/// the zone dispatcher, so both count restarts the same way.
#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    backoff: ExponentialBackoff,
}

/// What a supervisor should do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    RestartAfter(Duration),
    Escalate,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        let backoff = ExponentialBackoff {
            initial_interval: policy.backoff_initial,
            current_interval: policy.backoff_initial,
            max_interval: policy.backoff_max,
            multiplier: 2.0,
            randomization_factor: 0.2,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        RestartTracker {
            policy,
            recent: VecDeque::new(),
            backoff,
        }
    }

    /// Records a crash at `now` and decides.
    pub fn crashed(&mut self, now: Instant) -> RestartDecision {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) > self.policy.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.is_empty() {
            // Calm since the last burst: start the backoff over.
            self.backoff.reset();
        }
        self.recent.push_back(now);
        if self.recent.len() > self.policy.max_restarts {
            return RestartDecision::Escalate;
        }
        let delay = self.backoff.next_backoff().unwrap_or(self.policy.backoff_max);
        RestartDecision::RestartAfter(delay)
    }

    /// Restarts counted in the current window.
    pub fn recent_restarts(&self) -> usize {
        self.recent.len()
    }

    /// The policy this tracker applies.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The child declared a normal end (e.g. its zone was deleted).
    Normal,
    /// The child reported a failure before stopping.
    Failed(String),
    /// The child vanished without saying anything: a panic.
    Crashed,
}

/// Sent by a [`Lifeline`] when its actor goes away.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub child: usize,
    pub generation: u64,
    pub reason: ExitReason,
}

/// Held by every supervised actor; its drop is the actor's death notice.
pub struct Lifeline {
    notify: Recipient<ChildExited>,
    child: usize,
    generation: u64,
    reason: Option<ExitReason>,
    /// The arbiter (thread) the actor runs on when it has one of its own:
    /// stopped with the actor, however it ends.
    thread: Option<actix::ArbiterHandle>,
}

impl Lifeline {
    pub fn new(notify: Recipient<ChildExited>, child: usize, generation: u64) -> Lifeline {
        Lifeline {
            notify,
            child,
            generation,
            reason: None,
            thread: None,
        }
    }

    /// Starts an actor on an arbiter (an OS thread) of its own, which stops
    /// when the actor goes (its lifeline goes with it). `make` runs on that
    /// thread, so what the actor builds there (clients bound to a runtime)
    /// is its own. If no thread can be started, the actor runs on the
    /// current arbiter (logged).
    pub fn start_on_own_thread<A, F>(self, make: F) -> Addr<A>
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce(Lifeline) -> A + Send + 'static,
    {
        match actix::Arbiter::try_new() {
            Ok(arbiter) => self.start_on(arbiter, make),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread; running on the current one");
                make(self).start()
            }
        }
    }

    /// Starts an actor on `arbiter`, which then belongs to it: stopped when
    /// the actor goes, however it ends (a panic included).
    pub fn start_on<A, F>(mut self, arbiter: actix::Arbiter, make: F) -> Addr<A>
    where
        A: Actor<Context = Context<A>>,
        F: FnOnce(Lifeline) -> A + Send + 'static,
    {
        let handle = arbiter.handle();
        self.thread = Some(handle.clone());
        A::start_in_arbiter(&handle, move |_| make(self))
    }

    /// A lifeline that tells nobody, for actors run outside a supervisor
    /// (tests, tools).
    pub fn detached() -> Lifeline {
        struct Nobody;
        impl Actor for Nobody {
            type Context = Context<Self>;
        }
        impl Handler<ChildExited> for Nobody {
            type Result = ();
            fn handle(&mut self, _: ChildExited, _: &mut Context<Self>) {}
        }
        // A stopped actor's recipient drops messages, which is what we want.
        let addr = Nobody.start();
        Lifeline::new(addr.recipient(), 0, 0)
    }

    /// Which child (and which of its generations) this lifeline belongs to.
    pub fn child(&self) -> (usize, u64) {
        (self.child, self.generation)
    }

    /// A recipient that drops what it is sent, for messages nobody needs
    /// to hear in tests and tools.
    pub fn detached_recipient<M>() -> Recipient<M>
    where
        M: Message<Result = ()> + Send + 'static,
    {
        struct Nobody;
        impl Actor for Nobody {
            type Context = Context<Self>;
        }
        impl<M: Message<Result = ()>> Handler<M> for Nobody {
            type Result = ();
            fn handle(&mut self, _: M, _: &mut Context<Self>) {}
        }
        Nobody.start().recipient()
    }

    /// Declares the coming stop normal, so a transient child is not restarted.
    pub fn exit_normally(&mut self) {
        self.reason = Some(ExitReason::Normal);
    }

    /// Declares the coming stop a failure with a reason for the log.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.reason = Some(ExitReason::Failed(reason.into()));
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or(ExitReason::Crashed);
        // do_send: a death notice must never be dropped for a full mailbox.
        self.notify.do_send(ChildExited {
            child: self.child,
            generation: self.generation,
            reason,
        });
        if let Some(thread) = self.thread.take() {
            thread.stop();
        }
    }
}

/// Asks a supervised actor to stop cleanly.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Whether a child is restarted after it ends (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, even after a normal exit.
    Permanent,
    /// Restarted only after a crash or failure.
    Transient,
}

/// A handle the supervisor keeps to stop a running child.
pub type StopHandle = Recipient<Stop>;

type StartFn = Box<dyn FnMut(Lifeline) -> StopHandle>;

/// How to start one child, again and again, with fresh state each time.
pub struct ChildSpec {
    pub name: String,
    pub restart: Restart,
    /// Overrides the supervisor's policy for this child.
    policy: Option<RestartPolicy>,
    start: StartFn,
}

impl ChildSpec {
    /// `start` must build the actor from scratch (fresh state), hand it the
    /// lifeline, start it and return its stop handle.
    pub fn new(
        name: impl Into<String>,
        restart: Restart,
        start: impl FnMut(Lifeline) -> StopHandle + 'static,
    ) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            restart,
            policy: None,
            start: Box::new(start),
        }
    }

    /// Restarts this child under its own policy (e.g. a source that may
    /// retry forever, with backoff, without escalating).
    pub fn with_policy(mut self, policy: RestartPolicy) -> ChildSpec {
        self.policy = Some(policy);
        self
    }
}

/// The current address of a named actor that a supervisor may restart, like
/// an OTP registered name: holders always reach the live instance.
pub struct Named<A: Actor> {
    slot: Arc<RwLock<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for Named<A> {
    fn clone(&self) -> Self {
        Named {
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor> Default for Named<A> {
    fn default() -> Self {
        Named {
            slot: Arc::new(RwLock::new(None)),
        }
    }
}

impl<A: Actor> Named<A> {
    pub fn new() -> Named<A> {
        Named::default()
    }

    pub fn set(&self, addr: Addr<A>) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// The live address, if the actor is running.
    pub fn get(&self) -> Option<Addr<A>> {
        self.slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|a| a.connected())
    }
}

struct Child {
    spec: ChildSpec,
    generation: u64,
    running: Option<StopHandle>,
    restarts: RestartTracker,
    /// Restarts since the supervisor started, for operators.
    restarts_total: u64,
}

/// A one_for_one supervisor of static children, itself supervisable.
pub struct Supervisor {
    name: String,
    children: Vec<Child>,
    policy: RestartPolicy,
    /// Set while stopping children in reverse order.
    shutting_down: bool,
    shutdown_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Our own death notice to our parent; `None` at the root.
    lifeline: Option<Lifeline>,
    /// At the root there is no parent: escalation exits the process with this
    /// code so SMF (or systemd) takes over.
    exit_code_on_escalation: i32,
}

impl Supervisor {
    pub fn new(name: impl Into<String>, policy: RestartPolicy) -> Supervisor {
        Supervisor {
            name: name.into(),
            children: Vec::new(),
            policy,
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            lifeline: None,
            exit_code_on_escalation: 70,
        }
    }

    /// Children start in the order added and stop in reverse.
    pub fn child(mut self, spec: ChildSpec) -> Supervisor {
        let restarts = RestartTracker::new(spec.policy.clone().unwrap_or_else(|| self.policy.clone()));
        self.children.push(Child {
            spec,
            generation: 0,
            running: None,
            restarts,
            restarts_total: 0,
        });
        self
    }

    /// Makes this supervisor a child of another.
    pub fn with_lifeline(mut self, lifeline: Lifeline) -> Supervisor {
        self.lifeline = Some(lifeline);
        self
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let me = ctx.address().recipient();
        let child = &mut self.children[index];
        child.generation += 1;
        let lifeline = Lifeline::new(me, index, child.generation);
        tracing::debug!(supervisor = %self.name, child = %child.spec.name, generation = child.generation, "starting child");
        child.running = Some((child.spec.start)(lifeline));
    }

    fn escalate(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::error!(supervisor = %self.name, reason = %why, "restart intensity exceeded, escalating");
        match self.lifeline.as_mut() {
            Some(lifeline) => {
                lifeline.fail(why);
                self.stop_children_now();
                ctx.stop();
            }
            None => {
                self.stop_children_now();
                System::current().stop_with_code(self.exit_code_on_escalation);
            }
        }
    }

    fn stop_children_now(&mut self) {
        for child in self.children.iter_mut().rev() {
            if let Some(stop) = child.running.take() {
                stop.do_send(Stop);
            }
        }
    }

    /// Stops the last running child; called again as each one exits.
    fn stop_next(&mut self, ctx: &mut Context<Self>) {
        if let Some(child) = self.children.iter_mut().rev().find(|c| c.running.is_some()) {
            tracing::info!(supervisor = %self.name, child = %child.spec.name, "stopping child");
            if let Some(stop) = child.running.as_ref() {
                stop.do_send(Stop);
            }
        } else {
            for waiter in self.shutdown_waiters.drain(..) {
                let _ = waiter.send(());
            }
            if let Some(lifeline) = self.lifeline.as_mut() {
                lifeline.exit_normally();
            }
            ctx.stop();
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(msg.child) else {
            return;
        };
        if msg.generation != child.generation || child.running.is_none() && !self.shutting_down {
            return; // a notice from an instance we already replaced
        }
        child.running = None;
        let name = child.spec.name.clone();
        if self.shutting_down {
            tracing::info!(supervisor = %self.name, child = %name, "child stopped");
            self.stop_next(ctx);
            return;
        }
        let restart = !matches!(
            (&msg.reason, child.spec.restart),
            (ExitReason::Normal, Restart::Transient)
        );
        match &msg.reason {
            ExitReason::Normal => tracing::info!(supervisor = %self.name, child = %name, "child exited"),
            ExitReason::Failed(why) => {
                tracing::warn!(supervisor = %self.name, child = %name, reason = %why, "child failed")
            }
            ExitReason::Crashed => tracing::error!(supervisor = %self.name, child = %name, "child crashed"),
        }
        if !restart {
            return;
        }
        crate::metrics::actor_restarted(&name);
        child.restarts_total += 1;
        match child.restarts.crashed(Instant::now()) {
            RestartDecision::Escalate => {
                let policy = child.restarts.policy();
                let why = format!(
                    "child {name} restarted more than {} times in {:?}",
                    policy.max_restarts, policy.within
                );
                self.escalate(why, ctx);
            }
            RestartDecision::RestartAfter(delay) => {
                let index = msg.child;
                tracing::info!(supervisor = %self.name, child = %name, delay_ms = delay.as_millis() as u64, "restarting child");
                ctx.run_later(delay, move |act, ctx| {
                    if !act.shutting_down {
                        act.start_child(index, ctx);
                    }
                });
            }
        }
    }
}

/// Asks a supervisor how its children are doing.
#[derive(Debug, Message)]
#[rtype(result = "Vec<ChildStatus>")]
pub struct GetChildren;

impl Handler<GetChildren> for Supervisor {
    type Result = Vec<ChildStatus>;

    fn handle(&mut self, _: GetChildren, _ctx: &mut Context<Self>) -> Vec<ChildStatus> {
        self.children
            .iter()
            .map(|c| ChildStatus {
                name: c.spec.name.clone(),
                running: c.running.is_some(),
                restarts: c.restarts_total,
            })
            .collect()
    }
}

/// Stops every child in reverse order, each after the one after it has
/// exited, then the supervisor itself; answers when done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shutdown_waiters.push(tx);
        if !self.shutting_down {
            self.shutting_down = true;
            self.stop_next(ctx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Stop> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if !self.shutting_down {
            self.shutting_down = true;
            self.stop_next(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_within_the_limit_back_off_then_escalate() {
        let policy = RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        };
        let mut tracker = RestartTracker::new(policy);
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for i in 0..3 {
            match tracker.crashed(t0 + Duration::from_millis(i)) {
                RestartDecision::RestartAfter(d) => delays.push(d),
                RestartDecision::Escalate => panic!("escalated too early"),
            }
        }
        assert!(delays[2] > delays[0], "backoff grows: {delays:?}");
        assert_eq!(
            tracker.crashed(t0 + Duration::from_millis(5)),
            RestartDecision::Escalate
        );
    }

    #[test]
    fn crashes_spread_beyond_the_window_never_escalate() {
        let policy = RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut tracker = RestartTracker::new(policy);
        let t0 = Instant::now();
        for i in 0..10 {
            let decision = tracker.crashed(t0 + Duration::from_secs(11 * i));
            assert!(matches!(decision, RestartDecision::RestartAfter(_)));
        }
    }

    /// A child that dies as soon as it starts, like a source whose command
    /// is missing.
    struct Crasher {
        _lifeline: Lifeline,
    }

    impl Actor for Crasher {
        type Context = Context<Self>;

        fn started(&mut self, _ctx: &mut Context<Self>) {
            panic!("crasher crashed");
        }
    }

    impl Handler<Stop> for Crasher {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    /// Collects the death notices a parent would get.
    struct Parent(tokio::sync::mpsc::UnboundedSender<ChildExited>);

    impl Actor for Parent {
        type Context = Context<Self>;
    }

    impl Handler<ChildExited> for Parent {
        type Result = ();
        fn handle(&mut self, msg: ChildExited, _ctx: &mut Context<Self>) {
            let _ = self.0.send(msg);
        }
    }

    #[actix_rt::test]
    async fn a_child_that_keeps_crashing_escalates_to_the_parent() {
        tokio::time::pause();
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let parent = Parent(tx).start();
        let counted = starts.clone();
        let policy = RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        };
        let _supervisor = Supervisor::new("test", policy)
            .child(ChildSpec::new("crasher", Restart::Permanent, move |lifeline| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Crasher { _lifeline: lifeline }.start().recipient()
            }))
            .with_lifeline(Lifeline::new(parent.recipient(), 7, 1))
            .start();
        let notice = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("escalated within the window")
            .expect("a notice");
        assert_eq!(notice.child, 7);
        assert!(
            matches!(notice.reason, ExitReason::Failed(ref why) if why.contains("crasher")),
            "{notice:?}"
        );
        // The first start plus max_restarts restarts, then escalation.
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[actix_rt::test]
    async fn shutdown_stops_children_in_reverse_order() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Quiet {
            name: &'static str,
            order: Arc<std::sync::Mutex<Vec<&'static str>>>,
            lifeline: Lifeline,
        }
        impl Actor for Quiet {
            type Context = Context<Self>;
        }
        impl Handler<Stop> for Quiet {
            type Result = ();
            fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                self.order.lock().unwrap().push(self.name);
                self.lifeline.exit_normally();
                ctx.stop();
            }
        }
        let mut supervisor = Supervisor::new("test", RestartPolicy::default());
        for name in ["first", "second", "third"] {
            let order = order.clone();
            supervisor = supervisor.child(ChildSpec::new(name, Restart::Permanent, move |lifeline| {
                Quiet {
                    name,
                    order: order.clone(),
                    lifeline,
                }
                .start()
                .recipient()
            }));
        }
        let supervisor = supervisor.start();
        supervisor.send(Shutdown).await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["third", "second", "first"]);
    }
}
