//! `[api]`: where the HTTP API listens, whether it serves TLS, and the bounds that keep
//! unauthenticated clients from holding it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[api]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address of the HTTP API (health, status, admin).
    pub listen: Option<String>,
    /// off | generated | files
    pub tls: Option<ApiTlsMode>,
    /// PEM certificate (chain) for `tls = "files"`.
    pub tls_cert_file: Option<String>,
    /// PEM private key for `tls = "files"`.
    pub tls_key_file: Option<String>,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: Option<u32>,
    /// Connections one client address may hold; more are closed at once.
    pub max_connections_per_address: Option<u32>,
    /// Seconds a client has to send a request's headers (and the TLS handshake).
    pub header_timeout_seconds: Option<f64>,
    /// Seconds a client has to send a request's whole body.
    pub body_timeout_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiTlsMode {
    Off,
    Generated,
    Files,
}

/// How the API serves TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    Off,
    /// The agent's generated certificate, `<data_dir>/tls/server.{crt,key}`.
    Generated,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Validated `[api]` settings besides `listen` (which is `Config::api_listen`).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tls: ApiTls,
    pub max_connections: u32,
    pub max_connections_per_address: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl ApiConfig {
    /// Validates everything but `listen`, which the caller takes out first.
    pub fn from_section(section: ApiSection, base: &Path) -> Result<ApiConfig, ConfigError> {
        let ApiSection {
            listen: _,
            tls,
            tls_cert_file,
            tls_key_file,
            max_connections,
            max_connections_per_address,
            header_timeout_seconds,
            body_timeout_seconds,
        } = section;
        let path = |key: &str, value: Option<String>| match value {
            Some(p) if p.trim().is_empty() => Err(invalid(key, "must not be empty")),
            Some(p) => Ok(Some(super::normalize(&base.join(p)))),
            None => Ok(None),
        };
        let cert = path("api.tls_cert_file", tls_cert_file)?;
        let key = path("api.tls_key_file", tls_key_file)?;
        let tls = match (tls.unwrap_or(ApiTlsMode::Off), cert, key) {
            (ApiTlsMode::Files, Some(cert), Some(key)) => ApiTls::Files { cert, key },
            (ApiTlsMode::Files, None, _) => {
                return Err(invalid(
                    "api.tls_cert_file",
                    "is required when api.tls = \"files\"",
                ))
            }
            (ApiTlsMode::Files, _, None) => {
                return Err(invalid(
                    "api.tls_key_file",
                    "is required when api.tls = \"files\"",
                ))
            }
            (_, Some(_), _) => {
                return Err(invalid(
                    "api.tls_cert_file",
                    "is only used with api.tls = \"files\"",
                ))
            }
            (_, _, Some(_)) => {
                return Err(invalid(
                    "api.tls_key_file",
                    "is only used with api.tls = \"files\"",
                ))
            }
            (ApiTlsMode::Off, None, None) => ApiTls::Off,
            (ApiTlsMode::Generated, None, None) => ApiTls::Generated,
        };
        let max_connections = max_connections.unwrap_or(512);
        if !(1..=100_000).contains(&max_connections) {
            return Err(invalid(
                "api.max_connections",
                "must be between 1 and 100000",
            ));
        }
        let per_address = max_connections_per_address.unwrap_or(64);
        if per_address == 0 || per_address > max_connections {
            return Err(invalid(
                "api.max_connections_per_address",
                "must be at least 1 and at most api.max_connections",
            ));
        }
        Ok(ApiConfig {
            tls,
            max_connections,
            max_connections_per_address: per_address,
            header_timeout: timeout("api.header_timeout_seconds", header_timeout_seconds, 10.0)?,
            body_timeout: timeout("api.body_timeout_seconds", body_timeout_seconds, 30.0)?,
        })
    }

    /// `https` when the API serves TLS.
    pub fn scheme(&self) -> &'static str {
        match self.tls {
            ApiTls::Off => "http",
            ApiTls::Generated | ApiTls::Files { .. } => "https",
        }
    }
}

/// A timeout that cannot be switched off: an unbounded wait is what an attacker wants.
fn timeout(key: &str, value: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    if !value.is_finite() || !(0.1..=3600.0).contains(&value) {
        return Err(invalid(
            key,
            "must be a number of seconds between 0.1 and 3600",
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApiConfig, String> {
        let section: ApiSection = toml::from_str(text).map_err(|e| e.to_string())?;
        ApiConfig::from_section(section, Path::new("/etc/pgp")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_bounded_and_plain() {
        let api = parse("").unwrap();
        assert_eq!(api.tls, ApiTls::Off);
        assert_eq!(api.scheme(), "http");
        assert_eq!(api.max_connections, 512);
        assert_eq!(api.max_connections_per_address, 64);
        assert_eq!(api.header_timeout, Duration::from_secs(10));
        assert_eq!(api.body_timeout, Duration::from_secs(30));
    }

    #[test]
    fn tls_modes_and_their_files() {
        let api = parse("tls = \"generated\"").unwrap();
        assert_eq!(api.tls, ApiTls::Generated);
        assert_eq!(api.scheme(), "https");
        let api =
            parse("tls = \"files\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"").unwrap();
        assert_eq!(
            api.tls,
            ApiTls::Files {
                cert: PathBuf::from("/etc/pgp/c.pem"),
                key: PathBuf::from("/etc/pgp/k.pem")
            }
        );
        for (text, key) in [
            ("tls = \"files\"\ntls_key_file = \"k\"", "api.tls_cert_file"),
            ("tls = \"files\"\ntls_cert_file = \"c\"", "api.tls_key_file"),
            (
                "tls_cert_file = \"c\"\ntls_key_file = \"k\"",
                "api.tls_cert_file",
            ),
            (
                "tls = \"generated\"\ntls_key_file = \"k\"",
                "api.tls_key_file",
            ),
            (
                "tls = \"files\"\ntls_cert_file = \"\"\ntls_key_file = \"k\"",
                "api.tls_cert_file",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(parse("tls = \"on\"").is_err());
    }

    #[test]
    fn limits_cannot_be_switched_off() {
        for (text, key) in [
            ("max_connections = 0", "api.max_connections"),
            (
                "max_connections_per_address = 0",
                "api.max_connections_per_address",
            ),
            (
                "max_connections = 10\nmax_connections_per_address = 11",
                "api.max_connections_per_address",
            ),
            ("header_timeout_seconds = 0", "api.header_timeout_seconds"),
            ("body_timeout_seconds = -1", "api.body_timeout_seconds"),
            ("body_timeout_seconds = nan", "api.body_timeout_seconds"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
