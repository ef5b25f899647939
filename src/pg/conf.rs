//! The settings the agent manages, rendered into `pgplatform.conf` (included from
//! postgresql.conf) and written atomically, readable by the PostgreSQL user.

use std::path::Path;

use anyhow::Context;

use crate::config::{ParameterValue, Parameters};
use crate::run_as::RunAs;
use crate::safe_file;

/// File inside PGDATA holding the managed settings.
pub const MANAGED_FILE: &str = "pgplatform.conf";

/// File inside PGDATA the HA loop rewrites at run time (whom to stream from, which
/// standbys are synchronous); included last from the managed file when HA is on.
pub const HA_FILE: &str = "pgplatform.ha.conf";

/// PostgreSQL's `log_line_prefix`, owned by the agent because the log relay
/// (`supervisor/log_relay.rs`) reads it back: the pid, then (for sessions only, `%q`)
/// `<user@database>`.
pub const LOG_LINE_PREFIX: &str = "[%p] %q<%u@%d> ";

/// What goes into the managed settings file.
pub struct ManagedSettings<'a> {
    pub listen_addresses: &'a str,
    pub port: u16,
    pub socket_dir: &'a Path,
    /// Total RAM of the machine in bytes; memory settings are derived from it.
    pub memory_bytes: u64,
    /// Modules to preload (pg_stat_statements when the binaries ship it).
    pub preload: &'a [&'a str],
    /// The operator's `[postgres.parameters]`, which win over derived values.
    pub parameters: &'a Parameters,
    /// archive_command and restore_command when the agent archives WAL.
    pub wal_commands: Option<(String, String)>,
    /// A member of an HA cluster.
    pub ha: bool,
    /// Serve TLS with the agent's certificate, copied into PGDATA under these names
    /// (`pooler::tls::install_for_postgres`). pg_hba.conf lets other hosts in only over
    /// TLS (`hostssl`), so this is on whenever the agent runs.
    pub tls_files: Option<(&'a str, &'a str)>,
}

/// Renders the managed settings file.
pub fn render(settings: &ManagedSettings<'_>) -> String {
    let mut out = String::from(
        "# Managed by pgplatform: rewritten on every start and reload.\n\
         # Change settings through [postgres.parameters] in pgplatform.toml.\n",
    );
    let mut line = |name: &str, value: String| out.push_str(&format!("{name} = {value}\n"));
    line("listen_addresses", quote_value(settings.listen_addresses));
    line("port", settings.port.to_string());
    line(
        "unix_socket_directories",
        quote_value(&settings.socket_dir.to_string_lossy()),
    );
    line("password_encryption", quote_value("scram-sha-256"));
    if settings.tls_files.is_some() {
        line("ssl", "on".into());
    }
    line("logging_collector", "off".into());
    line("log_destination", quote_value("stderr"));
    line("log_line_prefix", quote_value(LOG_LINE_PREFIX));
    if let Some((archive, restore)) = &settings.wal_commands {
        // HA replicas archive what they receive too (pushing a segment twice is a no-op),
        // so the archive has no gap when a primary dies before archiving its last WAL.
        let mode = if settings.ha { "always" } else { "on" };
        line("archive_mode", mode.into());
        line("archive_command", quote_value(archive));
        line("restore_command", quote_value(restore));
    }
    let mut derived = derived_settings(settings.memory_bytes);
    if settings.ha {
        // Replicas that fall behind catch up from here before they need a new clone.
        derived.push(("wal_keep_size", quote_value("512MB")));
    }
    if settings.wal_commands.is_some() {
        // A quiet server still closes a segment a minute, bounding what PITR can lose.
        derived.push(("archive_timeout", quote_value("60s")));
    }
    if let Some((cert, key)) = settings.tls_files {
        derived.push(("ssl_cert_file", quote_value(cert)));
        derived.push(("ssl_key_file", quote_value(key)));
    }
    derived.push((
        "shared_preload_libraries",
        quote_value(&settings.preload.join(",")),
    ));
    for (name, value) in &derived {
        if settings.parameters.iter().all(|(k, _)| k != *name) {
            line(name, value.clone());
        }
    }
    for (name, value) in settings.parameters.iter() {
        line(name, render_value(value));
    }
    if settings.ha {
        out.push_str(&format!("include_if_exists '{HA_FILE}'\n"));
    }
    out
}

/// Defaults the agent chooses, each overridable in `[postgres.parameters]`.
fn derived_settings(memory_bytes: u64) -> Vec<(&'static str, String)> {
    const MIB: u64 = 1024 * 1024;
    let ram_mib = memory_bytes / MIB;
    // The usual starting points: a quarter of RAM for shared buffers (capped, as larger
    // values rarely help), three quarters as the cache estimate.
    let shared_buffers = (ram_mib / 4).clamp(128, 8 * 1024);
    let effective_cache = (ram_mib * 3 / 4).max(256);
    let maintenance = (ram_mib / 16).clamp(64, 2 * 1024);
    let work_mem = (ram_mib / 4 / 100 / 4).clamp(4, 256);
    vec![
        (
            "shared_preload_libraries",
            quote_value("pg_stat_statements"),
        ),
        // Slow statements reach the agent's log as JSON with duration, user, database.
        ("log_min_duration_statement", quote_value("1s")),
        ("cluster_name", quote_value("pgplatform")),
        ("shared_buffers", format!("'{shared_buffers}MB'")),
        ("effective_cache_size", format!("'{effective_cache}MB'")),
        ("maintenance_work_mem", format!("'{maintenance}MB'")),
        ("work_mem", format!("'{work_mem}MB'")),
    ]
}

/// An operator's value in postgresql.conf syntax (strings quoted per guc-file.l).
fn render_value(value: &ParameterValue) -> String {
    match value {
        ParameterValue::Text(s) => quote_value(s),
        ParameterValue::Integer(i) => i.to_string(),
        ParameterValue::Float(f) => f.to_string(),
        ParameterValue::Bool(b) => if *b { "on" } else { "off" }.to_owned(),
    }
}

/// Quotes a string value for postgresql.conf (guc-file.l: `''` for a quote, `\\` for a
/// backslash).
pub fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Total RAM from /proc/meminfo, or 1 GiB if it cannot be read.
pub fn machine_memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(1 << 30, |kib| kib * 1024)
}

/// Writes the managed file and makes sure postgresql.conf includes it. Returns whether
/// anything changed.
pub fn write(pgdata: &Path, content: &str, run_as: Option<&RunAs>) -> anyhow::Result<bool> {
    let mut changed = write_if_changed(&pgdata.join(MANAGED_FILE), content, run_as)?;
    let main = pgdata.join("postgresql.conf");
    let text =
        safe_file::read_to_string(&main).with_context(|| format!("read {}", main.display()))?;
    let include = format!("include '{MANAGED_FILE}'");
    if !text.lines().any(|l| l.trim() == include) {
        // Rewritten whole rather than appended to: nothing planted at the name is opened.
        let with_include = format!(
            "{text}\n# Added by pgplatform; keep it last so managed settings apply.\n{include}\n"
        );
        safe_file::replace(&main, with_include.as_bytes(), 0o600, run_as)?;
        changed = true;
    }
    Ok(changed)
}

/// Replaces `path` (0600, owned by `run_as`) when its content differs. Safe in PGDATA,
/// which the PostgreSQL user can write: see `safe_file`.
pub fn write_if_changed(
    path: &Path,
    content: &str,
    run_as: Option<&RunAs>,
) -> anyhow::Result<bool> {
    // A link or anything but a regular file at `path` is not ours: it is replaced.
    if safe_file::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(false);
    }
    safe_file::replace(path, content.as_bytes(), 0o600, run_as)?;
    Ok(true)
}

/// pg_ident.conf as the agent writes it before it reads the registry: the agent's OS user
/// and PostgreSQL's may log in as the agent's superuser. `Tenants::sync_hba` adds the
/// tenants' agent roles.
pub fn render_own_ident(run_as: Option<&RunAs>) -> anyhow::Result<String> {
    let os_users = super::hba::agent_os_users(run_as)?;
    let os_users: Vec<&str> = os_users.iter().map(String::as_str).collect();
    Ok(super::hba::render_ident(&os_users, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn tls_is_on_with_the_copied_certificate() {
        let parameters = Parameters::from_toml(BTreeMap::new()).unwrap();
        let text = render(&ManagedSettings {
            listen_addresses: "*",
            port: 5432,
            socket_dir: Path::new("/data/run/socket"),
            memory_bytes: 1 << 30,
            preload: &[],
            parameters: &parameters,
            wal_commands: None,
            ha: false,
            tls_files: Some(("server.crt", "server.key")),
        });
        assert!(text.contains("ssl = on\n"), "{text}");
        assert!(text.contains("ssl_cert_file = 'server.crt'\n"), "{text}");
        assert!(text.contains("ssl_key_file = 'server.key'\n"), "{text}");
    }

    #[test]
    fn operator_values_render_in_postgresql_conf_syntax() {
        let raw: BTreeMap<String, toml::Value> =
            toml::from_str("shared_buffers = \"1GB\"\nmax_connections = 200\njit = false\n")
                .unwrap();
        let parameters = Parameters::from_toml(raw).unwrap();
        let rendered: Vec<_> = parameters
            .iter()
            .map(|(k, v)| format!("{k}={}", render_value(v)))
            .collect();
        assert_eq!(
            rendered,
            ["jit=off", "max_connections=200", "shared_buffers='1GB'"]
        );
    }

    #[test]
    fn values_are_escaped_per_the_conf_grammar() {
        assert_eq!(quote_value("plain"), "'plain'");
        assert_eq!(quote_value("it's"), "'it''s'");
        assert_eq!(quote_value(r"C:\dir"), r"'C:\\dir'");
    }

    #[test]
    fn memory_settings_follow_the_machine() {
        let s = derived_settings(24 * 1024 * 1024 * 1024);
        let get = |n: &str| s.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get("shared_buffers"), "'6144MB'");
        assert_eq!(get("effective_cache_size"), "'18432MB'");
        let small = derived_settings(512 * 1024 * 1024);
        let get = |n: &str| small.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get("shared_buffers"), "'128MB'");
        assert_eq!(get("work_mem"), "'4MB'");
    }

    #[test]
    fn operator_parameters_replace_derived_ones() {
        let raw: BTreeMap<String, toml::Value> =
            toml::from_str("shared_buffers = \"1GB\"\nmax_connections = 300").unwrap();
        let parameters = Parameters::from_toml(raw).unwrap();
        let text = render(&ManagedSettings {
            listen_addresses: "127.0.0.1",
            port: 5433,
            socket_dir: Path::new("/data/run/socket"),
            memory_bytes: 8 << 30,
            preload: &["pg_stat_statements"],
            parameters: &parameters,
            wal_commands: Some((
                "'/bin/pgp' wal push %p".into(),
                "'/bin/pgp' wal fetch %f %p".into(),
            )),
            ha: true,
            tls_files: None,
        });
        assert!(!text.contains("ssl"), "{text}");
        assert!(
            text.ends_with("include_if_exists 'pgplatform.ha.conf'\n"),
            "{text}"
        );
        assert!(text.contains("archive_mode = always\n"), "{text}");
        assert!(
            text.contains("archive_command = '''/bin/pgp'' wal push %p'\n"),
            "{text}"
        );
        assert!(text.contains("archive_timeout = '60s'\n"), "{text}");
        assert_eq!(text.matches("shared_buffers").count(), 1, "{text}");
        assert!(text.contains("shared_buffers = '1GB'\n"), "{text}");
        assert!(text.contains("max_connections = 300\n"), "{text}");
        assert!(text.contains("port = 5433\n"), "{text}");
        assert!(
            text.contains("unix_socket_directories = '/data/run/socket'\n"),
            "{text}"
        );
        assert!(
            text.contains("password_encryption = 'scram-sha-256'\n"),
            "{text}"
        );
    }

    #[test]
    fn postgresql_conf_gets_the_include_once_and_links_are_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("postgresql.conf");
        std::fs::write(&main, "max_connections = 100").unwrap();
        assert!(write(dir.path(), "port = 1\n", None).unwrap());
        let text = std::fs::read_to_string(&main).unwrap();
        assert!(
            text.starts_with("max_connections = 100\n")
                && text.ends_with("\ninclude 'pgplatform.conf'\n"),
            "{text}"
        );
        assert_eq!(std::fs::metadata(&main).unwrap().mode() & 0o777, 0o600);
        assert!(!write(dir.path(), "port = 1\n", None).unwrap());
        assert_eq!(std::fs::read_to_string(&main).unwrap(), text);

        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::remove_file(&main).unwrap();
        std::os::unix::fs::symlink(&victim, &main).unwrap();
        let err = write(dir.path(), "port = 1\n", None).unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
