//! The Redis-compatible (RESP2) endpoint of the AP keyspace, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries work against an Isle node.
//!
//! - [`codec`]: the protocol, sans-IO — an incremental parser of commands (arrays of bulk
//!   strings and inline commands, with limits) and the reply encoder.
//! - `commands`: what each command does to the AP keyspace (see its module docs for the
//!   mapping and where Isle differs from Redis).
//! - [`serve`]: the TCP shell — one task per connection. Pipelining: the complete commands in
//!   the input buffer run concurrently (up to [`MAX_IN_FLIGHT`]) when they name keys no
//!   command in flight names; any other command (session state such as `SELECT`, or a key
//!   already in flight) waits until those before it are done, so a pipeline behaves as if run
//!   one command at a time. Replies go out in command order, together in one write.
//!
//! A client selects a bucket with `SELECT i` (the i-th of [`ApBackend::buckets`]); reads and
//! writes wait for a quorum of replicas unless `ISLE.CONSISTENCY r w` says otherwise.

pub mod codec;
mod commands;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::ap_backend::ApBackend;
use codec::{Command, CommandParser, Frame, Limits, write_error};
use commands::{After, Session, Shared};

pub use commands::REDIS_VERSION;

/// Replies buffered beyond this are written out before the next command runs, so a long
/// pipeline does not grow the output without bound.
const FLUSH_AT: usize = 64 << 10;

/// Most commands of one connection in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// Serves RESP2 clients on `listener` from `backend` until `shutdown` completes; then stops
/// accepting and closes every connection (a command in flight is abandoned).
pub async fn serve<B: ApBackend>(
    backend: B,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let shared = Arc::new(Shared::new(port));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(%peer, %err, "resp: TCP_NODELAY not set");
                    }
                    let (backend, shared) = (backend.clone(), shared.clone());
                    let mut stopped = stopped.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            biased;
                            _ = stopped.wait_for(|stop| *stop) => {}
                            () = connection(backend, shared, stream, peer) => {}
                        }
                    });
                }
                Err(err) => {
                    warn!(%err, "resp: accept failed");
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One client connection, from accept to close.
async fn connection<B: ApBackend, S: AsyncRead + AsyncWrite + Unpin>(
    backend: B,
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
) {
    let mut conn = Connection::new(backend, shared, peer.to_string());
    if let Err(err) = conn.run(stream).await {
        debug!(%peer, %err, "resp: connection ended");
    }
}

/// Where [`Connection::process`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Every complete command ran: read more input.
    Read,
    /// The output is full: write it, then run more commands.
    More,
    /// Write the output, then close the connection.
    Close,
}

/// A command running on its own task, and the keys it names.
type Running = (JoinHandle<(Frame, After)>, Vec<Vec<u8>>);

/// A connection's protocol state: the parser, the session and the backend. Driven by bytes in,
/// producing bytes out, so tests can run it without a socket.
struct Connection<B> {
    backend: B,
    shared: Arc<Shared>,
    session: Session,
    parser: CommandParser,
    /// Commands running, oldest first, with the keys each names.
    running: VecDeque<Running>,
    /// A parsed command waiting for those in flight to finish.
    held: Option<Command>,
}

impl<B> Drop for Connection<B> {
    fn drop(&mut self) {
        // A closed connection abandons its commands in flight, as it would a lone one.
        for (task, _) in &self.running {
            task.abort();
        }
        self.shared.disconnect(&self.session);
    }
}

impl<B: ApBackend> Connection<B> {
    fn new(backend: B, shared: Arc<Shared>, addr: String) -> Self {
        let session = shared.connect(addr);
        Connection {
            backend,
            shared,
            session,
            parser: CommandParser::new(Limits::default()),
            running: VecDeque::new(),
            held: None,
        }
    }

    /// Whether a command naming `keys` may start while others run: none of them names one.
    fn free(&self, keys: &[Vec<u8>]) -> bool {
        !self
            .running
            .iter()
            .any(|(_, busy)| busy.iter().any(|b| keys.contains(b)))
    }

    /// Starts a command on its own task, with a copy of the session (it changes none).
    fn start(&mut self, args: Command, keys: Vec<Vec<u8>>) {
        let (backend, shared) = (self.backend.clone(), Arc::clone(&self.shared));
        let mut session = self.session.clone();
        let task =
            tokio::spawn(
                async move { commands::execute(&backend, &shared, &mut session, args).await },
            );
        self.running.push_back((task, keys));
    }

    /// Runs the complete commands buffered, appending the replies to `out`, until the buffer
    /// holds no complete command ([`Step::Read`]), `out` holds `flush_at` bytes ([`Step::More`])
    /// or the connection must close after `QUIT` or a protocol error ([`Step::Close`]).
    async fn process(&mut self, out: &mut Vec<u8>, flush_at: usize) -> Step {
        let mut broken = None;
        let mut exhausted = false;
        loop {
            // Start what may run now; stop at a command that must wait for those in flight.
            while broken.is_none()
                && !exhausted
                && self.running.len() < MAX_IN_FLIGHT
                && out.len() < flush_at
            {
                let args = match self.held.take() {
                    Some(args) => args,
                    None => match self.parser.next_command() {
                        Ok(Some(args)) => args,
                        Ok(None) => {
                            exhausted = true;
                            break;
                        }
                        Err(err) => {
                            broken = Some(err);
                            break;
                        }
                    },
                };
                match commands::concurrent_keys(&args) {
                    Some(keys) if self.free(&keys) => self.start(args, keys),
                    _ if self.running.is_empty() => {
                        let (reply, after) =
                            commands::execute(&self.backend, &self.shared, &mut self.session, args)
                                .await;
                        reply.encode(out);
                        if after == After::Close {
                            return Step::Close;
                        }
                    }
                    _ => {
                        self.held = Some(args);
                        break;
                    }
                }
            }
            // Then collect the oldest reply, so replies keep the commands' order.
            let Some((task, _)) = self.running.front_mut() else {
                if let Some(err) = broken {
                    write_error(out, &format!("ERR {err}"));
                    return Step::Close;
                }
                return if exhausted { Step::Read } else { Step::More };
            };
            let reply = match task.await {
                Ok((reply, _)) => reply,
                Err(err) => Frame::error(format!("ERR the command failed: {err}")),
            };
            self.running.pop_front();
            reply.encode(out);
        }
    }

    /// Serves the connection until the client closes it, sends `QUIT` or breaks the protocol.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(FLUSH_AT);
        loop {
            let step = self.process(&mut out, FLUSH_AT).await;
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            match step {
                Step::Close => return stream.shutdown().await,
                Step::More => continue,
                Step::Read => {}
            }
            if stream.read_buf(self.parser.read_buffer()).await? == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
