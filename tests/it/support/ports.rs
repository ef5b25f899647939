//! Free TCP ports for the agent under test: bind 127.0.0.1:0, read the port, close.
//!
//! Another process can take a port between our close and the agent's bind; `TestAgent` detects
//! that from the agent's log and retries with new ports instead of pretending the race away.

use std::net::TcpListener;

/// The ports one agent listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub postgres: u16,
    pub api: u16,
    pub pooler: u16,
}

impl Ports {
    /// Distinct free ports (all are held open while picking, so they differ).
    pub fn pick() -> Ports {
        let postgres = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let pooler = TcpListener::bind("127.0.0.1:0").unwrap();
        Ports {
            postgres: port_of(&postgres),
            api: port_of(&api),
            pooler: port_of(&pooler),
        }
    }
}

/// One free port on 127.0.0.1 (closed again at once).
pub fn free_port() -> u16 {
    port_of(&TcpListener::bind("127.0.0.1:0").unwrap())
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}
