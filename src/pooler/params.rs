//! Session parameters a client may set that PgBouncer tracks per client and re-applies on
//! whichever server connection serves it (client_encoding, DateStyle, TimeZone,
//! standard_conforming_strings, application_name, and `track_extra_parameters`, by default
//! IntervalStyle, as PgBouncer 1.20+), plus any other setting the client gave
//! at startup (`extra_float_digits`, `options=-c name=value`, …), which a pooled connection
//! must apply with SET since it cannot pass them in its own startup packet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// Always tracked. PostgreSQL's spelling; matched case-insensitively, as GUC names are.
pub const TRACKED: [&str; 5] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
];

/// `track_extra_parameters` when not set, as PgBouncer's default.
pub const DEFAULT_EXTRA: [&str; 1] = ["IntervalStyle"];

/// `None` until a config is loaded: PgBouncer's default then.
static EXTRA: RwLock<Option<Vec<&'static str>>> = RwLock::new(None);
static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// Makes `names` (validated by the config) the tracked extras, from the next ParameterStatus and login.
pub fn set_extra(names: &[String]) {
    let mut interned = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    let interned = interned.get_or_insert_with(HashSet::new);
    let names: Vec<&'static str> = names
        .iter()
        .map(|name| match interned.get(name.as_str()) {
            Some(known) => *known,
            None => {
                // Bounded by the distinct names ever configured.
                let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
                interned.insert(leaked);
                leaked
            }
        })
        .collect();
    *EXTRA.write().unwrap_or_else(|p| p.into_inner()) = Some(names);
}

/// Every tracked name: the fixed ones, then the extras (PgBouncer's default until the
/// config is loaded).
fn tracked() -> Vec<&'static str> {
    let mut names = TRACKED.to_vec();
    match EXTRA.read().unwrap_or_else(|p| p.into_inner()).as_deref() {
        Some(extra) => names.extend(extra),
        None => names.extend(DEFAULT_EXTRA),
    }
    names
}

fn canonical(name: &str) -> Option<&'static str> {
    tracked().into_iter().find(|t| t.eq_ignore_ascii_case(name))
}

/// The values one client wants, whatever server connection serves it.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// The server's values at the pool's first login, shared by all the pool's clients:
    /// what a client wants unless it said otherwise. A parameter the server does not
    /// report is left alone unless the client asks.
    defaults: Arc<HashMap<String, String>>,
    /// Tracked parameters this client set, at startup or later with SET; usually none,
    /// so that an idle client keeps no copy of the defaults.
    overrides: Vec<(&'static str, String)>,
    /// Other settings from the startup packet; the server does not report these, so the
    /// pooler remembers per server connection what it has SET (`ServerConn::settings`).
    extra: BTreeMap<String, String>,
}

/// Startup parameters that are not settings.
const NOT_SETTINGS: [&str; 3] = ["user", "database", "options"];

impl ClientParams {
    /// Server defaults for every tracked parameter, overridden by the client's startup
    /// parameters. As PgBouncer, a tracked parameter is always kept; another one named in
    /// `ignored` (ignore_startup_parameters, lower case) is dropped, and with `options`
    /// listed so is every untracked setting inside `options`.
    pub fn new(
        defaults: Arc<HashMap<String, String>>,
        startup: &[(String, String)],
        ignored: &[String],
    ) -> Result<ClientParams, String> {
        let is_ignored = |name: &str| ignored.iter().any(|i| i.eq_ignore_ascii_case(name));
        let mut given: Vec<(String, String)> = Vec::new();
        for (name, value) in startup {
            if name == "options" {
                let all_ignored = is_ignored("options");
                let settings = parse_options(value)?;
                given.extend(
                    settings
                        .into_iter()
                        .filter(|(n, _)| canonical(n).is_some() || !all_ignored),
                );
            } else if !NOT_SETTINGS.contains(&name.as_str()) && !name.starts_with("_pq_.") {
                given.push((name.clone(), value.clone()));
            }
        }
        let mut params = ClientParams {
            defaults,
            ..ClientParams::default()
        };
        for (name, value) in given {
            match canonical(&name) {
                Some(name) => params.set(name, value),
                None if is_ignored(&name) => {}
                None if is_setting_name(&name) => {
                    params.extra.insert(name.to_ascii_lowercase(), value);
                }
                None => {
                    return Err(format!(
                        "invalid startup parameter name \"{}\"",
                        name.escape_debug()
                    ))
                }
            }
        }
        Ok(params)
    }

    fn set(&mut self, name: &'static str, value: String) {
        match self.overrides.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.overrides.push((name, value)),
        }
    }

    /// Every tracked parameter the client wants a value for, in `tracked()` order.
    fn wanted(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        tracked().into_iter().filter_map(move |name| {
            let value = match self.overrides.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => value.as_str(),
                None => self.defaults.get(name)?.as_str(),
            };
            Some((name, value))
        })
    }

    /// The server reported a new value while serving this client (the client ran SET).
    pub fn reported(&mut self, name: &str, value: &str) {
        if let Some(name) = canonical(name) {
            let wanted =
                self.overrides.iter().any(|(n, _)| *n == name) || self.defaults.contains_key(name);
            if wanted {
                self.set(name, value.to_owned());
            }
        }
    }

    /// The same wants as `other`: same shared defaults, same overrides and settings.
    pub fn same_as(&self, other: &ClientParams) -> bool {
        Arc::ptr_eq(&self.defaults, &other.defaults)
            && self.overrides == other.overrides
            && self.extra == other.extra
    }

    /// What a server session has once synced with this client (see `SyncedTo`).
    pub fn synced_to(&self) -> SyncedTo {
        SyncedTo {
            defaults: self.defaults.clone(),
            overrides: self.overrides.clone(),
        }
    }

    /// True when a session last synced to `synced` (and whose applied settings are this
    /// client's extra ones) matches this client: no lookups, the usual case on every
    /// transaction.
    pub fn is_synced(&self, synced: Option<&SyncedTo>) -> bool {
        synced.is_some_and(|s| {
            Arc::ptr_eq(&s.defaults, &self.defaults) && s.overrides == self.overrides
        })
    }

    /// SET/RESET statements that make a server connection match this client, given the
    /// server's reported parameters and the extra settings the pooler applied to it
    /// before; `None` when it already matches (the usual case, costing no round trip).
    pub fn sync_sql(
        &self,
        server: &HashMap<String, String>,
        applied: &BTreeMap<String, String>,
    ) -> Option<String> {
        let mut sql = String::new();
        for (name, value) in self.wanted() {
            if server.get(name).is_some_and(|v| v == value) {
                continue;
            }
            sql.push_str(&format!("SET {name} TO {};", quote_literal(value)));
        }
        for (name, value) in &self.extra {
            if applied.get(name) != Some(value) {
                sql.push_str(&format!("SET {name} TO {};", quote_literal(value)));
            }
        }
        for name in applied.keys().filter(|n| !self.extra.contains_key(*n)) {
            sql.push_str(&format!("RESET {name};"));
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// The extra settings a server connection has once `sync_sql` ran on it.
    pub fn extra(&self) -> &BTreeMap<String, String> {
        &self.extra
    }

    /// ParameterStatus pairs for the client at login: server values with the client's own.
    /// Borrowed, not copied: every login lists a dozen.
    pub fn for_login(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .defaults
            .iter()
            .filter(|(k, _)| canonical(k).is_none())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (name, value) in self.wanted() {
            out.push((name, value));
        }
        out.sort_unstable();
        out
    }
}

/// The tracked parameters a server session was last brought in line with, as the
/// client's defaults and overrides: while the server reports no change, any client with
/// the same defaults and overrides needs no sync.
#[derive(Debug, Clone)]
pub struct SyncedTo {
    defaults: Arc<HashMap<String, String>>,
    overrides: Vec<(&'static str, String)>,
}

impl SyncedTo {
    /// A fresh session, if its reported parameters agree with the pool's `defaults` on
    /// every tracked parameter the defaults have.
    pub fn fresh(
        server: &HashMap<String, String>,
        defaults: &Arc<HashMap<String, String>>,
    ) -> Option<SyncedTo> {
        tracked()
            .into_iter()
            .all(|name| {
                defaults
                    .get(name)
                    .is_none_or(|v| server.get(name) == Some(v))
            })
            .then(|| SyncedTo {
                defaults: defaults.clone(),
                overrides: Vec::new(),
            })
    }
}

pub fn is_tracked(name: &str) -> bool {
    canonical(name).is_some()
}

fn is_setting_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The `options` startup parameter as PostgreSQL splits it (pg_split_opts: whitespace
/// separates, backslash escapes), keeping `-c name=value` and `--name=value`.
/// PgBouncer's refusal of anything but `-c name=value` and `--name=value` in `options`.
const UNSUPPORTED_OPTIONS: &str =
    "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";

fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next().unwrap_or_default()
        } else if let Some(rest) = word.strip_prefix("-c").or_else(|| word.strip_prefix("--")) {
            rest.to_owned()
        } else {
            return Err(UNSUPPORTED_OPTIONS.to_owned());
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(UNSUPPORTED_OPTIONS.to_owned());
        };
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn startup_values_override_defaults_and_differences_become_sets() {
        let defaults = server(&[
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("standard_conforming_strings", "on"),
            ("application_name", ""),
            ("server_version", "15.18"),
        ]);
        let startup = [
            ("application_name".to_owned(), "app's".to_owned()),
            ("timezone".to_owned(), "Europe/Paris".to_owned()),
        ];
        let params = ClientParams::new(Arc::new(defaults.clone()), &startup, &[]).unwrap();
        let none = BTreeMap::new();
        let sql = params.sync_sql(&defaults, &none).unwrap();
        assert_eq!(
            sql,
            "SET TimeZone TO 'Europe/Paris';SET application_name TO 'app''s';"
        );
        let mut matching = defaults.clone();
        matching.insert("TimeZone".into(), "Europe/Paris".into());
        matching.insert("application_name".into(), "app's".into());
        assert_eq!(params.sync_sql(&matching, &none), None);
        let login = params.for_login();
        assert!(login.contains(&("server_version", "15.18")));
        assert!(login.contains(&("application_name", "app's")));
    }

    #[test]
    fn a_session_synced_to_equal_parameters_needs_no_sync() {
        let defaults = Arc::new(server(&[("application_name", ""), ("TimeZone", "UTC")]));
        let fresh = SyncedTo::fresh(&defaults, &defaults);
        let app = |name: &str| [("application_name".to_owned(), name.to_owned())];
        let plain = ClientParams::new(defaults.clone(), &[], &[]).unwrap();
        let pgbench = ClientParams::new(defaults.clone(), &app("pgbench"), &[]).unwrap();
        let other = ClientParams::new(defaults.clone(), &app("other"), &[]).unwrap();
        assert!(plain.is_synced(fresh.as_ref()));
        assert!(!pgbench.is_synced(fresh.as_ref()));
        let synced = pgbench.synced_to();
        let again = ClientParams::new(defaults.clone(), &app("pgbench"), &[]).unwrap();
        assert!(again.is_synced(Some(&synced)));
        assert!(!other.is_synced(Some(&synced)));
        assert!(!plain.is_synced(Some(&synced)));
        // Other defaults (another pool's, or a copy) never match.
        let copy = ClientParams::new(Arc::new(server(&[])), &[], &[]).unwrap();
        assert!(!copy.is_synced(fresh.as_ref()));
        let changed = server(&[("application_name", ""), ("TimeZone", "Asia/Tokyo")]);
        assert!(SyncedTo::fresh(&changed, &defaults).is_none());
    }

    #[test]
    fn a_clients_set_is_remembered() {
        let defaults = server(&[("DateStyle", "ISO, MDY")]);
        let mut params = ClientParams::new(Arc::new(defaults.clone()), &[], &[]).unwrap();
        params.reported("DateStyle", "German, DMY");
        params.reported("search_path", "x");
        let sql = params.sync_sql(&defaults, &BTreeMap::new()).unwrap();
        assert!(sql.contains("SET DateStyle TO 'German, DMY';"), "{sql}");
    }

    #[test]
    fn other_startup_settings_are_set_and_reset() {
        let defaults = server(&[]);
        let startup = [
            ("extra_float_digits".to_owned(), "3".to_owned()),
            (
                "options".to_owned(),
                "-c default_transaction_read_only=off --search-path=a\\ b".to_owned(),
            ),
        ];
        let params = ClientParams::new(Arc::new(defaults.clone()), &startup, &[]).unwrap();
        let none = BTreeMap::new();
        let sql = params.sync_sql(&defaults, &none).unwrap();
        assert!(
            sql.contains("SET default_transaction_read_only TO 'off';"),
            "{sql}"
        );
        assert!(sql.contains("SET extra_float_digits TO '3';"), "{sql}");
        assert!(sql.contains("SET search_path TO 'a b';"), "{sql}");
        // The next client of that server connection, which asked for nothing, gets RESETs.
        let plain = ClientParams::new(Arc::new(defaults.clone()), &[], &[]).unwrap();
        let sql = plain.sync_sql(&defaults, params.extra()).unwrap();
        assert!(sql.contains("RESET extra_float_digits;"), "{sql}");
        assert_eq!(params.sync_sql(&defaults, params.extra()), None);
    }

    #[test]
    fn bad_options_are_refused() {
        let defaults = server(&[]);
        for options in ["-d 5", "-c nonsense"] {
            let startup = [("options".to_owned(), options.to_owned())];
            assert!(
                ClientParams::new(Arc::new(defaults.clone()), &startup, &[]).is_err(),
                "{options}"
            );
        }
        let startup = [("bad name;".to_owned(), "x".to_owned())];
        assert!(ClientParams::new(Arc::new(defaults.clone()), &startup, &[]).is_err());
    }

    #[test]
    fn ignored_startup_parameters_are_dropped_but_tracked_ones_kept() {
        let defaults = Arc::new(server(&[("TimeZone", "UTC")]));
        let startup = [
            ("extra_float_digits".to_owned(), "3".to_owned()),
            ("search_path".to_owned(), "app".to_owned()),
            ("TimeZone".to_owned(), "Europe/Paris".to_owned()),
            (
                "options".to_owned(),
                "-c statement_timeout=5s -c TimeZone=Asia/Tokyo".to_owned(),
            ),
        ];
        let all = ClientParams::new(defaults.clone(), &startup, &[]).unwrap();
        assert_eq!(all.extra().len(), 3, "{:?}", all.extra());
        let ignored = ["extra_float_digits".to_owned(), "timezone".to_owned()];
        let some = ClientParams::new(defaults.clone(), &startup, &ignored).unwrap();
        assert!(some.extra().contains_key("search_path"));
        assert!(!some.extra().contains_key("extra_float_digits"));
        assert!(
            some.for_login().contains(&("TimeZone", "Asia/Tokyo")),
            "tracked, so kept"
        );
        let options = ["options".to_owned()];
        let none = ClientParams::new(defaults, &startup, &options).unwrap();
        assert!(!none.extra().contains_key("statement_timeout"));
        assert!(
            none.extra().contains_key("extra_float_digits"),
            "only inside options"
        );
        assert!(none.for_login().contains(&("TimeZone", "Asia/Tokyo")));
    }
}
