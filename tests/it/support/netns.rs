//! A network namespace joined to this one by a veth pair, for partition tests: the
//! namespace side is `inside` (10.231.N.2), this side `outside` (10.231.N.1). `cut` takes
//! the link down, both ways; `heal` brings it back. Deleted (with the pair) on drop.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{command, skip};

pub struct NetNs {
    pub name: String,
    host_if: String,
    pub inside: String,
    pub outside: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> bool {
    command("/usr/sbin/ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl NetNs {
    /// Fails the test without root or iproute2 (`None`, saying why, if skipping is allowed).
    pub fn create() -> Option<NetNs> {
        let root = nix::unistd::Uid::effective().is_root();
        if !root || !std::path::Path::new("/usr/sbin/ip").exists() {
            let reason = "partition tests need root and iproute2 (network namespaces); skipped";
            skip(reason);
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() % 100_000) * 10 + n;
        let subnet = 10 + (tag % 240);
        let ns = NetNs {
            name: format!("pgpit{tag}"),
            host_if: format!("pgh{tag}"),
            inside: format!("10.231.{subnet}.2"),
            outside: format!("10.231.{subnet}.1"),
        };
        let peer = format!("pgn{tag}");
        let inside_cidr = format!("{}/24", ns.inside);
        let outside_cidr = format!("{}/24", ns.outside);
        let ok = ip(&["netns", "add", &ns.name])
            && ip(&[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])
            && ip(&["link", "set", &peer, "netns", &ns.name])
            && ip(&["addr", "add", &outside_cidr, "dev", &ns.host_if])
            && ip(&["link", "set", &ns.host_if, "up"])
            && ip(&[
                "netns",
                "exec",
                &ns.name,
                "ip",
                "addr",
                "add",
                &inside_cidr,
                "dev",
                &peer,
            ])
            && ip(&["netns", "exec", &ns.name, "ip", "link", "set", &peer, "up"])
            && ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        assert!(ok, "could not set up network namespace {}", ns.name);
        Some(ns)
    }

    pub fn cut(&self) {
        assert!(
            ip(&["link", "set", &self.host_if, "down"]),
            "cut {}",
            self.name
        );
    }

    pub fn heal(&self) {
        assert!(
            ip(&["link", "set", &self.host_if, "up"]),
            "heal {}",
            self.name
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
