//! `isle_env::Network` on turmoil's simulated TCP, so the real transport (`isle_net::Transport`)
//! and the real node run unchanged inside a turmoil host.
//!
//! turmoil resolves host names registered with `Sim::host` ("n1:7000") when dialling, but a
//! listener may only bind the unspecified address or loopback: nodes therefore listen on
//! `0.0.0.0:PORT` and advertise `nX:PORT`.
//!
//! turmoil's TCP does not retransmit: a segment dropped by a random link failure leaves a gap
//! that stalls the stream for good, much like a connection stuck behind a silent network. The
//! node's detector declares the peer dead and resets the link, which is the recovery path a real
//! deployment takes too.

use std::io;

use isle_env::{Listener, Network};
use turmoil::net::{TcpListener, TcpStream};

/// turmoil's simulated TCP. Only usable from inside a turmoil host or client.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNetwork;

/// A listener bound on the current turmoil host.
pub struct TurmoilListener {
    inner: TcpListener,
}

impl Network for TurmoilNetwork {
    type Stream = TcpStream;
    type Listener = TurmoilListener;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }

    async fn bind(&self, addr: &str) -> io::Result<TurmoilListener> {
        let inner = TcpListener::bind(addr).await?;
        Ok(TurmoilListener { inner })
    }
}

impl Listener for TurmoilListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, String)> {
        let (stream, remote) = self.inner.accept().await?;
        Ok((stream, remote.to_string()))
    }

    fn local_addr(&self) -> io::Result<String> {
        Ok(self.inner.local_addr()?.to_string())
    }
}
