//! Parsing the admin console's commands (PgBouncer 1.25's syntax: `SHOW POOLS;`,
//! `PAUSE db`, `SET key = value`, …).

/// One admin console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Show(Show),
    Pause(Option<String>),
    Resume(Option<String>),
    Reload,
    /// `KILL` (every database) or `KILL db`.
    Kill(Option<String>),
    /// `KILL_CLIENT id`: the `id` column of SHOW CLIENTS.
    KillClient(u64),
    Reconnect(Option<String>),
    Disable(String),
    Enable(String),
    WaitClose(Option<String>),
    Suspend,
    /// `SET key = value`; the value unquoted (`'a''b'` → `a'b`).
    Set {
        key: String,
        value: String,
    },
    Shutdown(ShutdownMode),
}

/// `SHUTDOWN`, `SHUTDOWN WAIT_FOR_SERVERS`, `SHUTDOWN WAIT_FOR_CLIENTS` (PgBouncer 1.23+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    Immediate,
    WaitForServers,
    WaitForClients,
}

/// What `SHOW` can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Help,
    Pools,
    Stats,
    StatsTotals,
    StatsAverages,
    Totals,
    Clients,
    Servers,
    Databases,
    Users,
    Config,
    Version,
    Lists,
    State,
    Sockets,
}

impl AdminCommand {
    /// Whether a stats-only user may run it (SHOW only; PgBouncer's stats_users).
    pub fn is_read_only(&self) -> bool {
        matches!(self, AdminCommand::Show(_))
    }
}

/// Parses one statement; the error is the text PgBouncer-style clients are shown.
pub fn parse(sql: &str) -> Result<AdminCommand, String> {
    let text = sql.trim().trim_end_matches(';').trim();
    if let Some(set) = parse_set(text) {
        return set;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let arg = |i: usize| words.get(i).map(|w| unquote(w));
    let command = match upper.as_slice() {
        ["SHOW", what] => AdminCommand::Show(match *what {
            "HELP" => Show::Help,
            "POOLS" => Show::Pools,
            "STATS" => Show::Stats,
            "STATS_TOTALS" => Show::StatsTotals,
            "STATS_AVERAGES" => Show::StatsAverages,
            "TOTALS" => Show::Totals,
            "CLIENTS" => Show::Clients,
            "SERVERS" => Show::Servers,
            "DATABASES" => Show::Databases,
            "USERS" => Show::Users,
            "CONFIG" => Show::Config,
            "VERSION" => Show::Version,
            "LISTS" => Show::Lists,
            "STATE" => Show::State,
            "SOCKETS" => Show::Sockets,
            _ => return Err(format!("unknown SHOW subcommand: {}", words[1])),
        }),
        ["PAUSE"] => AdminCommand::Pause(None),
        ["PAUSE", _] => AdminCommand::Pause(arg(1)),
        ["RESUME"] => AdminCommand::Resume(None),
        ["RESUME", _] => AdminCommand::Resume(arg(1)),
        ["RELOAD"] => AdminCommand::Reload,
        ["KILL"] => AdminCommand::Kill(None),
        ["KILL", _] => AdminCommand::Kill(arg(1)),
        // PgBouncer's message for an id that is not a number.
        ["KILL_CLIENT", _] => AdminCommand::KillClient(
            words[1]
                .parse()
                .map_err(|_| "invalid client pointer supplied".to_owned())?,
        ),
        ["RECONNECT"] => AdminCommand::Reconnect(None),
        ["RECONNECT", _] => AdminCommand::Reconnect(arg(1)),
        ["DISABLE", _] => AdminCommand::Disable(arg(1).unwrap_or_default()),
        ["ENABLE", _] => AdminCommand::Enable(arg(1).unwrap_or_default()),
        ["DISABLE"] | ["ENABLE"] => return Err("a database is required".to_owned()),
        ["WAIT_CLOSE"] => AdminCommand::WaitClose(None),
        ["WAIT_CLOSE", _] => AdminCommand::WaitClose(arg(1)),
        ["SUSPEND"] => AdminCommand::Suspend,
        ["SHUTDOWN"] => AdminCommand::Shutdown(ShutdownMode::Immediate),
        ["SHUTDOWN", "WAIT_FOR_SERVERS"] => AdminCommand::Shutdown(ShutdownMode::WaitForServers),
        ["SHUTDOWN", "WAIT_FOR_CLIENTS"] => AdminCommand::Shutdown(ShutdownMode::WaitForClients),
        [] => return Err("empty command".to_owned()),
        _ => return Err(format!("unknown command: {text}")),
    };
    Ok(command)
}

/// Errors a parse can give that PgBouncer answers with its own text rather than
/// "invalid command".
pub fn is_specific_error(message: &str) -> bool {
    message == "a database is required" || message == "invalid client pointer supplied"
}

/// `SET key = value` or `SET key TO value`, the value a word or a '…' string (PgBouncer's
/// grammar); `None` when the statement is not a SET at all.
fn parse_set(text: &str) -> Option<Result<AdminCommand, String>> {
    let head = text.get(..4)?;
    if !head.eq_ignore_ascii_case("set ") {
        return None;
    }
    let rest = text[4..].trim_start();
    let key_end = rest
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(rest.len());
    let (key, rest) = rest.split_at(key_end);
    let rest = rest.trim_start();
    let rest = if let Some(r) = rest.strip_prefix('=') {
        r
    } else if rest.len() > 2
        && rest[..2].eq_ignore_ascii_case("to")
        && rest[2..].starts_with(char::is_whitespace)
    {
        &rest[2..]
    } else {
        return Some(Err(format!("SET needs `key = value`: {text}")));
    };
    if key.is_empty() {
        return Some(Err(format!("SET needs a key: {text}")));
    }
    let raw = rest.trim();
    let quoted = raw
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .filter(|_| raw.len() >= 2);
    let value = match quoted {
        Some(inner) if !inner.replace("''", "").contains('\'') => inner.replace("''", "'"),
        Some(_) => return Some(Err(format!("badly quoted SET value: {raw}"))),
        None if !raw.is_empty() && !raw.contains(char::is_whitespace) && !raw.contains('\'') => {
            unquote(raw)
        }
        None => return Some(Err(format!("SET needs one value: {text}"))),
    };
    Some(Ok(AdminCommand::Set {
        key: unquote(key).to_ascii_lowercase(),
        value,
    }))
}

/// `"My Db"` → `My Db`; bare words as written.
fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => word.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively_with_optional_semicolon() {
        assert_eq!(parse("show pools;"), Ok(AdminCommand::Show(Show::Pools)));
        assert_eq!(
            parse("  SHOW   Stats  "),
            Ok(AdminCommand::Show(Show::Stats))
        );
        assert_eq!(
            parse("PAUSE shop;"),
            Ok(AdminCommand::Pause(Some("shop".into())))
        );
        assert_eq!(parse("pause"), Ok(AdminCommand::Pause(None)));
        assert_eq!(
            parse("RESUME \"shop\""),
            Ok(AdminCommand::Resume(Some("shop".into())))
        );
        assert_eq!(
            parse("kill shop"),
            Ok(AdminCommand::Kill(Some("shop".into())))
        );
        assert_eq!(parse("KILL;"), Ok(AdminCommand::Kill(None)));
        assert_eq!(parse("RECONNECT"), Ok(AdminCommand::Reconnect(None)));
        assert_eq!(parse("reload;"), Ok(AdminCommand::Reload));
        assert_eq!(
            parse("SHUTDOWN"),
            Ok(AdminCommand::Shutdown(ShutdownMode::Immediate))
        );
    }

    #[test]
    fn pgbouncer_1_25_commands_parse() {
        assert_eq!(parse("SHOW HELP;"), Ok(AdminCommand::Show(Show::Help)));
        assert_eq!(
            parse("disable shop"),
            Ok(AdminCommand::Disable("shop".into()))
        );
        assert_eq!(
            parse("ENABLE \"shop\";"),
            Ok(AdminCommand::Enable("shop".into()))
        );
        assert_eq!(parse("DISABLE").unwrap_err(), "a database is required");
        assert!(is_specific_error(&parse("ENABLE").unwrap_err()));
        assert_eq!(parse("kill_client 42"), Ok(AdminCommand::KillClient(42)));
        assert_eq!(
            parse("KILL_CLIENT 0x2a").unwrap_err(),
            "invalid client pointer supplied"
        );
        assert!(parse("KILL_CLIENT").is_err());
        assert_eq!(parse("WAIT_CLOSE"), Ok(AdminCommand::WaitClose(None)));
        assert_eq!(
            parse("wait_close shop;"),
            Ok(AdminCommand::WaitClose(Some("shop".into())))
        );
        assert_eq!(parse("suspend"), Ok(AdminCommand::Suspend));
        assert!(parse("SUSPEND shop").is_err());
        assert_eq!(
            parse("shutdown wait_for_servers"),
            Ok(AdminCommand::Shutdown(ShutdownMode::WaitForServers))
        );
        assert_eq!(
            parse("SHUTDOWN WAIT_FOR_CLIENTS;"),
            Ok(AdminCommand::Shutdown(ShutdownMode::WaitForClients))
        );
        assert!(parse("SHUTDOWN NOW").is_err());
    }

    #[test]
    fn set_takes_a_word_or_a_quoted_string() {
        let set = |key: &str, value: &str| {
            Ok(AdminCommand::Set {
                key: key.into(),
                value: value.into(),
            })
        };
        assert_eq!(
            parse("SET default_pool_size = 5;"),
            set("default_pool_size", "5")
        );
        assert_eq!(
            parse("set Query_Wait_Timeout to 0.5"),
            set("query_wait_timeout", "0.5")
        );
        assert_eq!(
            parse("SET server_check_query = 'select ''x'''"),
            set("server_check_query", "select 'x'")
        );
        assert_eq!(parse("SET pool_mode=session"), set("pool_mode", "session"));
        assert!(parse("SET default_pool_size").is_err());
        assert!(parse("SET default_pool_size = 5 6").is_err());
        assert!(parse("SET server_check_query = 'a'b'").is_err());
        assert!(parse("SET = 5").is_err());
        assert!(parse("SET x = '").is_err());
    }

    #[test]
    fn unknown_commands_are_errors() {
        assert!(parse("SHOW tables").unwrap_err().contains("tables"));
        assert!(parse("DROP DATABASE shop").is_err());
        assert!(parse("").is_err());
        assert!(parse("KILL shop now").is_err());
    }

    #[test]
    fn only_show_is_read_only() {
        assert!(parse("SHOW POOLS").unwrap().is_read_only());
        assert!(parse("SHOW HELP").unwrap().is_read_only());
        assert!(!parse("PAUSE").unwrap().is_read_only());
        assert!(!parse("SET default_pool_size = 1").unwrap().is_read_only());
        assert!(!parse("KILL_CLIENT 1").unwrap().is_read_only());
    }
}
