//! `HttpService`: an actix-web server as a supervised child. It serves on a
//! listener bound before the tree starts (so tests can bind `127.0.0.1:0`),
//! stops gracefully on `Stop`, and fails if the server ends on its own.

use std::net::TcpListener;

use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};

use super::supervisor::{Lifeline, Stop};

/// Builds and starts the server on a listener.
pub type ServeFn = Box<dyn Fn(TcpListener) -> std::io::Result<Server>>;

pub struct HttpService {
    name: &'static str,
    listener: std::rc::Rc<TcpListener>,
    serve: std::rc::Rc<ServeFn>,
    handle: Option<ServerHandle>,
    stopping: bool,
    lifeline: Lifeline,
}

impl HttpService {
    pub fn new(
        name: &'static str,
        listener: std::rc::Rc<TcpListener>,
        serve: std::rc::Rc<ServeFn>,
        lifeline: Lifeline,
    ) -> HttpService {
        HttpService {
            name,
            listener,
            serve,
            handle: None,
            stopping: false,
            lifeline,
        }
    }
}

impl Actor for HttpService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let server = self.listener.try_clone().and_then(|l| (self.serve)(l));
        let server = match server {
            Ok(server) => server,
            Err(e) => {
                self.lifeline
                    .fail(format!("{} http server cannot start: {e}", self.name));
                ctx.stop();
                return;
            }
        };
        tracing::info!(service = self.name, addr = ?self.listener.local_addr().ok(), "http server listening");
        self.handle = Some(server.handle());
        ctx.spawn(server.into_actor(self).map(|result, act, ctx| {
            if !act.stopping {
                let why = match result {
                    Ok(()) => "stopped on its own".to_string(),
                    Err(e) => e.to_string(),
                };
                act.lifeline.fail(format!("{} http server {why}", act.name));
            } else {
                act.lifeline.exit_normally();
            }
            ctx.stop();
        }));
    }
}

impl Handler<Stop> for HttpService {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let handle = self.handle.take();
        Box::pin(
            async move {
                if let Some(handle) = handle {
                    handle.stop(true).await;
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.lifeline.exit_normally();
                ctx.stop();
            }),
        )
    }
}
