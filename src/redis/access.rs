//! How an application reaches its tenant's Redis: `redis_url`, `redis_password` and the
//! `REDIS_*` lines of `env`, as `tenants::secrets` writes them.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Where and as whom a tenant logs in to its redis-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAccess {
    pub host: String,
    pub port: u16,
    /// The tenant's ACL user (the tenant's name).
    pub user: String,
    pub password: String,
    /// The server speaks TLS only (`rediss://`).
    pub tls: bool,
}

/// Everything but unreserved characters (RFC 3986) is percent-encoded.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl RedisAccess {
    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "rediss"
        } else {
            "redis"
        }
    }

    /// `redis://user:password@host:port/0` (`rediss://` with TLS), as redis-cli -u and
    /// client libraries read it.
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}@{}:{}/0",
            self.scheme(),
            utf8_percent_encode(&self.user, URL_COMPONENT),
            utf8_percent_encode(&self.password, URL_COMPONENT),
            self.host_for_url(),
            self.port
        )
    }

    /// The URL without the password, safe to print.
    pub fn url_redacted(&self) -> String {
        format!(
            "{}://{}@{}:{}/0",
            self.scheme(),
            utf8_percent_encode(&self.user, URL_COMPONENT),
            self.host_for_url(),
            self.port
        )
    }

    /// The `REDIS_*` lines of the tenant's `env` file.
    pub fn env(&self) -> String {
        format!(
            "REDIS_URL={}\nREDIS_HOST={}\nREDIS_PORT={}\nREDIS_USERNAME={}\nREDIS_PASSWORD={}\n",
            self.url(),
            self.host,
            self.port,
            self.user,
            self.password
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_env_carry_user_and_encoded_password() {
        let access = RedisAccess {
            host: "127.0.0.1".into(),
            port: 6380,
            user: "shop".into(),
            password: "a/b+c".into(),
            tls: false,
        };
        assert_eq!(access.url(), "redis://shop:a%2Fb%2Bc@127.0.0.1:6380/0");
        assert_eq!(access.url_redacted(), "redis://shop@127.0.0.1:6380/0");
        assert!(access
            .env()
            .contains("REDIS_PORT=6380\nREDIS_USERNAME=shop\nREDIS_PASSWORD=a/b+c\n"));
        let v6 = RedisAccess {
            host: "::1".into(),
            ..access
        };
        assert!(v6.url().contains("@[::1]:6380/0"));
        let tls = RedisAccess { tls: true, ..v6 };
        assert!(tls.url().starts_with("rediss://shop:"));
        assert!(tls.url_redacted().starts_with("rediss://shop@"));
    }
}
