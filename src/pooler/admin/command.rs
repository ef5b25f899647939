//! Parsing the admin console's commands (PgBouncer's syntax: `SHOW POOLS;`, `PAUSE db`, …).

/// One admin console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Show(Show),
    Pause(Option<String>),
    Resume(Option<String>),
    Reload,
    Kill(String),
    Reconnect(Option<String>),
    Shutdown,
}

/// What `SHOW` can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
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
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let arg = |i: usize| words.get(i).map(|w| unquote(w));
    let command = match upper.as_slice() {
        ["SHOW", what] => AdminCommand::Show(match *what {
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
            _ => return Err(format!("unknown SHOW subcommand: {}", words[1])),
        }),
        ["PAUSE"] => AdminCommand::Pause(None),
        ["PAUSE", _] => AdminCommand::Pause(arg(1)),
        ["RESUME"] => AdminCommand::Resume(None),
        ["RESUME", _] => AdminCommand::Resume(arg(1)),
        ["RELOAD"] => AdminCommand::Reload,
        ["KILL", _] => AdminCommand::Kill(arg(1).unwrap_or_default()),
        ["RECONNECT"] => AdminCommand::Reconnect(None),
        ["RECONNECT", _] => AdminCommand::Reconnect(arg(1)),
        ["SHUTDOWN"] => AdminCommand::Shutdown,
        [] => return Err("empty command".to_owned()),
        _ => return Err(format!("unknown command: {text}")),
    };
    Ok(command)
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
        assert_eq!(parse("kill shop"), Ok(AdminCommand::Kill("shop".into())));
        assert_eq!(parse("RECONNECT"), Ok(AdminCommand::Reconnect(None)));
        assert_eq!(parse("reload;"), Ok(AdminCommand::Reload));
        assert_eq!(parse("SHUTDOWN"), Ok(AdminCommand::Shutdown));
    }

    #[test]
    fn unknown_commands_are_errors() {
        assert!(parse("SHOW tables").unwrap_err().contains("tables"));
        assert!(parse("DROP DATABASE shop").is_err());
        assert!(parse("").is_err());
        assert!(parse("KILL").is_err());
    }

    #[test]
    fn only_show_is_read_only() {
        assert!(parse("SHOW POOLS").unwrap().is_read_only());
        assert!(!parse("PAUSE").unwrap().is_read_only());
    }
}
