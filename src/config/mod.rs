//! Configuration: the raw TOML (`file`) validated into the `Config` the rest of the agent reads.

mod api;
mod backup;
mod file;
mod ha;
mod parameters;
mod pooler;
mod redis;
pub mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::api::{ApiConfig, ApiTls};
pub use self::backup::{BackupConfig, RepositoryConfig, S3Config, Schedule};
pub use self::file::ConfigFile;
pub use self::ha::{EtcdSecurity, HaConfig, ReplicationTls, SyncMode};
pub use self::parameters::{ParameterValue, Parameters};
pub use self::pooler::{ClientTls, PinOnSessionState, PoolMode, PoolerConfig};
pub use self::redis::{parse_memory, RedisConfig};
use crate::logging::LogFormat;

/// PostgreSQL major versions pgplatform supports (`pg::bin` refuses others).
pub const SUPPORTED_MAJORS: std::ops::RangeInclusive<u32> = 13..=18;

/// The commented example that `pgplatform init` writes; it must parse to the defaults.
pub const EXAMPLE: &str = include_str!("example.toml");

/// Name of the config file looked for in the current directory.
pub const DEFAULT_FILE_NAME: &str = "pgplatform.toml";

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Validated configuration. Runtime code only ever sees this.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the data directory.
    pub data_dir: PathBuf,
    pub postgres: PostgresConfig,
    pub api_listen: SocketAddr,
    /// The API's TLS and connection bounds.
    pub api: ApiConfig,
    /// Host written into tenants' connection URLs.
    pub tenant_host: String,
    pub pooler: PoolerConfig,
    pub backup: BackupConfig,
    /// `None`: a single node without etcd.
    pub ha: Option<HaConfig>,
    /// Tenants' Redis servers.
    pub redis: RedisConfig,
    pub metrics: MetricsConfig,
    pub status: StatusConfig,
    pub log_format: LogFormat,
    /// The file this came from, if any (reloads read it again).
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub bin_dir: Option<PathBuf>,
    pub user: String,
    pub listen_addresses: String,
    pub port: u16,
    pub stop_timeout: Duration,
    pub parameters: Parameters,
    /// Install PostgreSQL when none is found (`up --install-postgres` does too).
    pub install: bool,
    /// The major version to install; `None` = the newest the OS offers.
    pub install_version: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// A dedicated `/metrics` listener besides the API's; `None` = off.
    pub listen: Option<SocketAddr>,
    pub scrape_timeout: Duration,
    pub statements_top: u32,
}

/// Thresholds for the warnings `pgplatform status` shows.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub connections_warn_percent: u32,
    pub archive_failing_warn: Duration,
    pub backup_max_age: Duration,
}

impl Config {
    /// Loads `explicit`, else `./pgplatform.toml` if present, else the built-in defaults;
    /// `data_dir`, when given, replaces the file's `data_dir`.
    pub fn discover(
        explicit: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().map_err(|source| ConfigError::Read {
            path: PathBuf::from("."),
            source,
        })?;
        let path = match explicit {
            Some(p) => Some(cwd.join(p)),
            None => Some(cwd.join(DEFAULT_FILE_NAME)).filter(|p| p.exists()),
        };
        let data_dir = data_dir.map(|d| cwd.join(d).display().to_string());
        match path {
            Some(path) => Config::load_with(&path, data_dir),
            None => {
                let file = ConfigFile {
                    data_dir,
                    ..ConfigFile::default()
                };
                Config::from_file(file, &cwd, None)
            }
        }
    }

    /// Reads and validates one config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, None)
    }

    fn load_with(path: &Path, data_dir: Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut file = parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        if data_dir.is_some() {
            file.data_dir = data_dir;
        }
        let base = path.parent().unwrap_or(Path::new("/"));
        Config::from_file(file, base, Some(path.to_owned()))
    }

    /// Validates a parsed file; `base` is where relative paths start.
    pub fn from_file(
        file: ConfigFile,
        base: &Path,
        source: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let ConfigFile {
            data_dir,
            postgres,
            api,
            tenants,
            pooler,
            backup,
            ha,
            redis,
            metrics,
            status,
            log,
        } = file;
        let file::PostgresSection {
            bin_dir,
            user,
            listen_addresses,
            port,
            stop_timeout_seconds,
            parameters,
            install,
            version: install_version,
        } = postgres;

        let data_dir = data_dir.unwrap_or_else(|| "./pgplatform-data".to_owned());
        if data_dir.trim().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let data_dir = normalize(&base.join(data_dir));

        let bin_dir = match bin_dir {
            Some(dir) if dir.trim().is_empty() => None,
            Some(dir) => Some(normalize(&base.join(dir))),
            None => None,
        };
        let user = user.unwrap_or_else(|| "postgres".to_owned());
        if user.is_empty() || user == "root" {
            return Err(invalid(
                "postgres.user",
                "must name an unprivileged OS user (PostgreSQL refuses to run as root)",
            ));
        }
        let listen_addresses = listen_addresses.unwrap_or_else(|| "127.0.0.1".to_owned());
        if listen_addresses.contains(['\'', '\n', '\\']) {
            return Err(invalid(
                "postgres.listen_addresses",
                "must be a comma-separated list of host names or addresses",
            ));
        }
        let port = port.unwrap_or(5432);
        if port == 0 {
            return Err(invalid("postgres.port", "must be between 1 and 65535"));
        }
        let stop_timeout = Duration::from_secs(stop_timeout_seconds.unwrap_or(60));
        let install = install.unwrap_or(false);
        if let Some(major) = install_version {
            if !SUPPORTED_MAJORS.contains(&major) {
                return Err(invalid(
                    "postgres.version",
                    format!(
                        "must be a PostgreSQL major version from {} to {}",
                        SUPPORTED_MAJORS.start(),
                        SUPPORTED_MAJORS.end()
                    ),
                ));
            }
        }
        let parameters = Parameters::from_toml(parameters)?;
        if parameters.iter().any(|(k, _)| k == "ssl") {
            return Err(invalid(
                "postgres.parameters.ssl",
                "is managed by pgplatform: PostgreSQL always serves TLS, and connections \
                 from other hosts must use it (pg_hba.conf lists them as hostssl)",
            ));
        }

        let listen = api
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8008".to_owned());
        let api_listen: SocketAddr = listen.parse().map_err(|_| {
            invalid(
                "api.listen",
                format!("`{listen}` is not an address like 127.0.0.1:8008"),
            )
        })?;
        let api = ApiConfig::from_section(api, base)?;

        let backup = BackupConfig::from_section(backup, base, &data_dir)?;
        if backup.archive {
            for key in [
                "archive_mode",
                "archive_command",
                "restore_command",
                "archive_library",
            ] {
                if parameters.iter().any(|(k, _)| k == key) {
                    return Err(invalid(
                        &format!("postgres.parameters.{key}"),
                        "is managed by pgplatform while backup.archive = true \
                         (set backup.archive = false to archive WAL yourself)",
                    ));
                }
            }
        }
        let mut ha = HaConfig::from_section(ha, base)?;
        if let Some(ha) = &ha {
            let reachable = listen_addresses
                .split(',')
                .map(str::trim)
                .any(|a| a == "*" || a == "0.0.0.0" || a == "::" || a == ha.advertise_host);
            if !reachable {
                return Err(invalid(
                    "postgres.listen_addresses",
                    format!(
                        "must include ha.advertise_host ({}) or \"*\" so the other nodes \
                         can replicate from this one",
                        ha.advertise_host
                    ),
                ));
            }
        }
        let redis = RedisConfig::from_section(redis, base)?;
        let metrics = metrics_config(metrics)?;
        let status = status_config(status)?;

        let pooler = PoolerConfig::from_section(pooler)?;
        if pooler.enabled
            && pooler.client_tls == ClientTls::Disable
            && beyond_loopback(&pooler.listen_addr)
        {
            return Err(invalid(
                "pooler.client_tls",
                format!(
                    "\"disable\" would send tenants' traffic in clear text to other hosts \
                     (pooler.listen_addr is {}); use \"allow\" or \"require\", or listen on \
                     127.0.0.1",
                    pooler.listen_addr
                ),
            ));
        }
        if let Some(ha) = &mut ha {
            ha.read_only_port = match ha.read_only_port {
                Some(0) => None,
                Some(port) => Some(port),
                None if pooler.listen_port == 6432 => Some(6433),
                None => None,
            };
            if ha.read_only_port == Some(pooler.listen_port) {
                return Err(invalid(
                    "ha.read_only_port",
                    "must differ from pooler.listen_port",
                ));
            }
        }
        let tenant_host = match tenants.host {
            Some(host) if host.trim().is_empty() || host.contains(['/', '@', '?', '#', ' ']) => {
                return Err(invalid("tenants.host", "must be a host name or address"));
            }
            Some(host) => host,
            None => default_tenant_host(&listen_addresses),
        };

        Ok(Config {
            data_dir,
            postgres: PostgresConfig {
                bin_dir,
                user,
                listen_addresses,
                port,
                stop_timeout,
                parameters,
                install,
                install_version,
            },
            api_listen,
            api,
            tenant_host,
            pooler,
            backup,
            ha,
            redis,
            metrics,
            status,
            log_format: log.format.unwrap_or(LogFormat::Auto),
            source,
        })
    }
}

fn metrics_config(section: file::MetricsSection) -> Result<MetricsConfig, ConfigError> {
    let file::MetricsSection {
        listen,
        scrape_timeout_seconds,
        statements_top,
    } = section;
    let listen = match listen {
        None => None,
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("`{text}` is not an address like 127.0.0.1:9187"),
            )
        })?),
    };
    let timeout = scrape_timeout_seconds.unwrap_or(5.0);
    if !(0.1..=300.0).contains(&timeout) {
        return Err(invalid(
            "metrics.scrape_timeout_seconds",
            "must be between 0.1 and 300",
        ));
    }
    let statements_top = statements_top.unwrap_or(0);
    if statements_top > 1000 {
        return Err(invalid("metrics.statements_top", "must be at most 1000"));
    }
    Ok(MetricsConfig {
        listen,
        scrape_timeout: Duration::from_secs_f64(timeout),
        statements_top,
    })
}

fn status_config(section: file::StatusSection) -> Result<StatusConfig, ConfigError> {
    let file::StatusSection {
        connections_warn_percent,
        archive_failing_warn_seconds,
        backup_max_age_seconds,
    } = section;
    let percent = connections_warn_percent.unwrap_or(85);
    if !(1..=100).contains(&percent) {
        return Err(invalid(
            "status.connections_warn_percent",
            "must be between 1 and 100",
        ));
    }
    Ok(StatusConfig {
        connections_warn_percent: percent,
        archive_failing_warn: Duration::from_secs(archive_failing_warn_seconds.unwrap_or(300)),
        backup_max_age: Duration::from_secs(backup_max_age_seconds.unwrap_or(26 * 3600)),
    })
}

/// Parses TOML, naming the full key path of any unknown or mistyped key.
fn parse(text: &str) -> Result<ConfigFile, String> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_owned();
        // serde reports an unknown field at its parent; name the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or_default();
            let key = if path == "." || path.is_empty() {
                field.to_owned()
            } else if path == field || path.ends_with(&format!(".{field}")) {
                path
            } else {
                format!("{path}.{field}")
            };
            return format!("unknown key `{key}`");
        }
        let at = match inner.span() {
            Some(span) => format!(" (line {})", line_of(text, span.start)),
            None => String::new(),
        };
        if path == "." || path.is_empty() {
            format!("{message}{at}")
        } else {
            format!("key `{path}`: {message}{at}")
        }
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.lines().count().max(1))
}

/// Makes a path absolute and drops `.` components, without touching the filesystem.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// Whether a listen list (`127.0.0.1`, `*`, `10.0.0.5,::1`, …) reaches beyond this
/// machine's loopback interface: anything but loopback addresses and `localhost` does.
pub fn beyond_loopback(addresses: &str) -> bool {
    addresses.split(',').map(str::trim).any(|a| {
        let loopback = a == "localhost"
            || a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        !loopback
    })
}

fn default_tenant_host(listen_addresses: &str) -> String {
    let first = listen_addresses
        .split(',')
        .map(str::trim)
        .next()
        .unwrap_or("");
    match first {
        "" | "*" | "0.0.0.0" | "::" => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned()),
        host => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_str(text: &str) -> Result<Config, String> {
        let file = parse(text)?;
        Config::from_file(file, Path::new("/etc/pgp"), None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_need_no_file() {
        let config = from_str("").unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/etc/pgp/pgplatform-data"));
        assert_eq!(config.postgres.port, 5432);
        assert_eq!(config.postgres.user, "postgres");
        assert_eq!(config.api_listen.to_string(), "127.0.0.1:8008");
        assert_eq!(config.tenant_host, "127.0.0.1");
    }

    #[test]
    fn postgres_install_keys_are_read_and_the_version_checked() {
        let config = from_str("[postgres]\ninstall = true\nversion = 17\n").unwrap();
        assert!(config.postgres.install);
        assert_eq!(config.postgres.install_version, Some(17));
        let error = from_str("[postgres]\nversion = 12\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("postgres.version"), "{error}");
    }

    #[test]
    fn example_file_is_the_defaults() {
        let config = from_str(EXAMPLE).unwrap();
        let defaults = from_str("").unwrap();
        assert_eq!(config.data_dir, defaults.data_dir);
        assert_eq!(config.postgres.port, defaults.postgres.port);
        assert_eq!(config.api_listen, defaults.api_listen);
        assert!(config.postgres.parameters.is_empty());
        assert_eq!(config.pooler.listen_port, defaults.pooler.listen_port);
        assert_eq!(config.pooler.default_pool_size, 20);
        assert_eq!(config.pooler.pool_mode, PoolMode::Transaction);
        assert_eq!(
            config.pooler.query_wait_timeout,
            defaults.pooler.query_wait_timeout
        );
        assert_eq!(config.backup, defaults.backup);
        assert!(config.backup.archive);
        assert_eq!(
            config.backup.repository,
            RepositoryConfig::Local {
                path: defaults.data_dir.join("backups")
            }
        );
        assert_eq!(config.metrics.listen, None);
        assert_eq!(config.metrics.scrape_timeout, Duration::from_secs(5));
        assert_eq!(config.metrics.statements_top, 0);
        assert_eq!(config.status.connections_warn_percent, 85);
        assert_eq!(config.status.archive_failing_warn, Duration::from_secs(300));
    }

    #[test]
    fn worker_threads_default_to_half_the_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let config = from_str("").unwrap();
        assert_eq!(config.pooler.worker_threads, (cpus / 2).max(1));
        let config = from_str("[pooler]\nworker_threads = \"auto\"\n").unwrap();
        assert_eq!(config.pooler.worker_threads, (cpus / 2).max(1));
        let config = from_str("[pooler]\nworker_threads = 3\n").unwrap();
        assert_eq!(config.pooler.worker_threads, 3);
        for bad in ["0", "-1", "5000", "\"many\"", "2.5"] {
            let err = from_str(&format!("[pooler]\nworker_threads = {bad}\n")).unwrap_err();
            assert!(err.contains("pooler.worker_threads"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let err = from_str("[postgres]\nprot = 1\n").unwrap_err();
        assert!(err.contains("`postgres.prot`"), "{err}");
        let err = from_str("colour = 1\n").unwrap_err();
        assert!(err.contains("`colour`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for text in [
            "[postgres]\nport = \"abc\"\n",
            "[postgres]\nport = 70000\n",
            "[postgres]\nport = 0\n",
        ] {
            let err = from_str(text).unwrap_err();
            assert!(err.contains("postgres.port"), "{text}: {err}");
        }
        let err = from_str("[api]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(err.contains("api.listen"), "{err}");
        let err = from_str("[postgres]\nuser = \"root\"\n").unwrap_err();
        assert!(err.contains("postgres.user"), "{err}");
        let err = from_str("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(err.contains("log.format"), "{err}");
        let err = from_str("[pooler]\npool_mode = \"statement\"\n").unwrap_err();
        assert!(err.contains("pooler.pool_mode"), "{err}");
        let err = from_str("[pooler]\nquery_wait_timeout = -1\n").unwrap_err();
        assert!(err.contains("pooler.query_wait_timeout"), "{err}");
        let err = from_str("[backup]\nrepository = \"ftp\"\n").unwrap_err();
        assert!(err.contains("backup.repository"), "{err}");
        let err = from_str("[backup]\nrepository = \"s3\"\n").unwrap_err();
        assert!(err.contains("backup.s3.bucket"), "{err}");
        let err = from_str("[backup]\nschedule = \"every day\"\n").unwrap_err();
        assert!(err.contains("backup.schedule"), "{err}");
        let err = from_str("[postgres.parameters]\narchive_command = \"cp %p /x\"\n").unwrap_err();
        assert!(err.contains("postgres.parameters.archive_command"), "{err}");
        assert!(from_str(
            "[backup]\narchive = false\n[postgres.parameters]\narchive_command = \"true\"\n"
        )
        .is_ok());
        let err = from_str("[metrics]\nlisten = \"9187\"\n").unwrap_err();
        assert!(err.contains("metrics.listen"), "{err}");
        let err = from_str("[metrics]\nscrape_timeout_seconds = 0\n").unwrap_err();
        assert!(err.contains("metrics.scrape_timeout_seconds"), "{err}");
        let err = from_str("[status]\nconnections_warn_percent = 120\n").unwrap_err();
        assert!(err.contains("status.connections_warn_percent"), "{err}");
        let err = from_str("[pooler]\ndefault_pool_size = 5\nmin_pool_size = 6\n").unwrap_err();
        assert!(err.contains("pooler.min_pool_size"), "{err}");
    }

    #[test]
    fn loopback_is_told_apart_from_the_network() {
        for local in [
            "127.0.0.1",
            "localhost",
            "::1",
            "127.0.0.1, ::1",
            "127.0.0.2",
        ] {
            assert!(!beyond_loopback(local), "{local}");
        }
        for network in [
            "*",
            "0.0.0.0",
            "::",
            "10.0.0.5",
            "127.0.0.1,10.0.0.5",
            "db.example",
        ] {
            assert!(beyond_loopback(network), "{network}");
        }
    }

    #[test]
    fn plain_text_beyond_loopback_and_ssl_off_are_refused() {
        let err = from_str("[pooler]\nlisten_addr = \"0.0.0.0\"\nclient_tls = \"disable\"\n")
            .unwrap_err();
        assert!(err.contains("pooler.client_tls"), "{err}");
        assert!(from_str("[pooler]\nclient_tls = \"disable\"\n").is_ok());
        assert!(from_str("[pooler]\nlisten_addr = \"0.0.0.0\"\n").is_ok());
        let err = from_str("[postgres.parameters]\nssl = \"off\"\n").unwrap_err();
        assert!(err.contains("postgres.parameters.ssl"), "{err}");
    }

    #[test]
    fn database_overrides_apply_to_their_database_only() {
        let config = from_str(
            "[pooler]\ndefault_pool_size = 10\n[pooler.databases.shop]\npool_mode = \"session\"\npool_size = 3\n",
        )
        .unwrap();
        assert_eq!(config.pooler.for_database("shop"), (PoolMode::Session, 3));
        assert_eq!(
            config.pooler.for_database("crm"),
            (PoolMode::Transaction, 10)
        );
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let config = from_str("data_dir = \"data\"\n[postgres]\nbin_dir = \"../bin\"\n").unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/etc/pgp/data"));
        assert_eq!(
            config.postgres.bin_dir,
            Some(PathBuf::from("/etc/pgp/../bin"))
        );
    }
}
