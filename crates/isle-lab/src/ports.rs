//! Free loopback ports for nodes whose addresses are not fixed.

use isle_env::{Random, SeededRandom};
use std::sync::Mutex;

/// The lowest port handed out.
const LOW: u16 = 10_000;
/// Never at or above this: 30000 and up is where tests run `isle local` on fixed ports.
const HIGH: u16 = 30_000;

static RNG: Mutex<Option<SeededRandom>> = Mutex::new(None);

/// A port nothing listens on right now, picked at random below the kernel's ephemeral range
/// (so no outgoing connection takes it between now and the node's bind, or while the node is
/// down for a restart). Random, so parallel test processes rarely collide; a node that loses a
/// race exits with "address in use" and the caller starts again on other ports.
pub fn spare_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.min(HIGH);
    let mut rng = RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rng = rng.get_or_insert_with(SeededRandom::from_os);
    if high > LOW + 1_000 {
        for _ in 0..200 {
            let port = LOW + rng.below(u64::from(high - LOW)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    // The OS's choice (in the ephemeral range): still free right now.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_or(0, |addr| addr.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn spare_ports_are_bindable() {
        for _ in 0..20 {
            let port = super::spare_port();
            assert!(port > 0);
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        }
    }
}
