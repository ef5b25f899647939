//! A tenant's redis.conf, rendered whole from the agent's settings (pure), and the ACL
//! rules it carries: the `default` user off, the agent's admin user, and the tenant's
//! user with every command but the dangerous ones. Passwords appear only as SHA-256
//! hashes (`#<hex>`), so the file and the server's memory never hold them in clear.

use std::net::IpAddr;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The user the agent itself logs in as (over the unix socket).
pub const ADMIN_USER: &str = "pgplatform";

/// Commands a tenant may not run on its own server: they reconfigure, stop, replicate,
/// dump or watch the server, or change users (the list, plus the replication
/// handshake that streams the whole dataset).
pub const DENIED_COMMANDS: &[&str] = &[
    "config",
    "debug",
    "shutdown",
    "module",
    "replicaof",
    "slaveof",
    "acl",
    "monitor",
    "save",
    "bgsave",
    "bgrewriteaof",
    "failover",
    "migrate",
    "sync",
    "psync",
];

/// What one tenant's server is.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub tenant: String,
    pub listen_addr: IpAddr,
    pub port: u16,
    pub maxmemory: u64,
    pub maxmemory_policy: String,
    pub appendfsync: String,
    /// SHA-256 (hex) of the tenant user's password.
    pub tenant_password_sha256: String,
    /// SHA-256 (hex) of the agent's admin password.
    pub admin_password_sha256: String,
    /// Serve TLS only on `port` (certificate and key in the server's directory as
    /// `tls.crt`, `tls.key`); the unix socket stays plain.
    pub tls: bool,
}

/// Lowercase hex SHA-256, as Redis's ACL `#<hash>` wants it.
pub fn password_sha256(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tenant user's rules after `on` and its password: every key, channel and command
/// but the denied ones.
pub fn tenant_rules() -> String {
    let denied: Vec<String> = DENIED_COMMANDS.iter().map(|c| format!("-{c}")).collect();
    format!("~* &* +@all {}", denied.join(" "))
}

/// redis.conf for `spec`, its files in `dir` (the server's working directory).
pub fn render(spec: &ServerSpec, dir: &Path) -> String {
    let dir = dir.display();
    let listen = if spec.tls {
        format!(
            "port 0
tls-port {port}
tls-cert-file \"{dir}/tls.crt\"
tls-key-file \"{dir}/tls.key\"
tls-auth-clients no
tls-protocols \"TLSv1.2 TLSv1.3\"",
            port = spec.port
        )
    } else {
        format!("port {}", spec.port)
    };
    format!(
        "# Written by pgplatform for tenant {tenant}; rewritten at every start: edit
# pgplatform.toml's [redis] instead.
bind {addr}
{listen}
protected-mode yes
unixsocket \"{dir}/redis.sock\"
unixsocketperm 700
dir \"{dir}\"
pidfile \"{dir}/redis.pid\"
daemonize no
supervised no
logfile \"\"
always-show-logo no
maxmemory {maxmemory}
maxmemory-policy {policy}
appendonly yes
appendfsync {appendfsync}
save \"\"
enable-debug-command no
enable-module-command no
enable-protected-configs no
user default off resetpass resetkeys resetchannels -@all
user {admin} on #{admin_hash} ~* &* +@all
user {tenant} on #{tenant_hash} {rules}
",
        tenant = spec.tenant,
        addr = spec.listen_addr,
        maxmemory = spec.maxmemory,
        policy = spec.maxmemory_policy,
        appendfsync = spec.appendfsync,
        admin = ADMIN_USER,
        admin_hash = spec.admin_password_sha256,
        tenant_hash = spec.tenant_password_sha256,
        rules = tenant_rules(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServerSpec {
        ServerSpec {
            tenant: "shop".into(),
            listen_addr: "127.0.0.1".parse().unwrap(),
            port: 6380,
            maxmemory: 1 << 20,
            maxmemory_policy: "noeviction".into(),
            appendfsync: "everysec".into(),
            tenant_password_sha256: password_sha256("secret"),
            admin_password_sha256: password_sha256("admin"),
            tls: false,
        }
    }

    #[test]
    fn config_holds_hashes_only_and_locks_the_tenant_out_of_admin_commands() {
        let text = render(&spec(), Path::new("/data/redis/shop"));
        assert!(!text.contains("secret\n") && !text.contains(" >"), "{text}");
        assert!(text.contains(&format!(
            "user shop on #{} ~* &* +@all -config",
            password_sha256("secret")
        )));
        assert!(text.contains("user default off "));
        assert!(text.contains("bind 127.0.0.1\nport 6380\nprotected-mode yes\n"));
        assert!(text.contains("maxmemory 1048576\nmaxmemory-policy noeviction\n"));
        assert!(text.contains("appendonly yes\nappendfsync everysec\n"));
        for command in [
            "config",
            "shutdown",
            "acl",
            "monitor",
            "replicaof",
            "migrate",
        ] {
            assert!(
                tenant_rules().contains(&format!(" -{command}")),
                "{command}"
            );
        }
        // sha256("") as Redis documents it.
        assert_eq!(
            password_sha256(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn with_tls_the_port_speaks_tls_only() {
        let with_tls = ServerSpec {
            tls: true,
            ..spec()
        };
        let text = render(&with_tls, Path::new("/d/redis/shop"));
        assert!(text.contains("port 0\ntls-port 6380\ntls-cert-file \"/d/redis/shop/tls.crt\"\n"));
        assert!(text.contains("tls-auth-clients no\n"));
        assert!(!render(&spec(), Path::new("/d")).contains("tls-"));
    }
}
