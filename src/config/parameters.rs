//! `[postgres.parameters]`: free-form postgresql.conf settings, checked (`pg::conf` renders them).

use std::collections::BTreeMap;

use super::{invalid, ConfigError};

/// Settings the agent owns; changing them through `[postgres.parameters]` would break it.
const OWNED_BY_AGENT: &[(&str, &str)] = &[
    ("port", "set postgres.port instead"),
    ("listen_addresses", "set postgres.listen_addresses instead"),
    (
        "unix_socket_directories",
        "the agent keeps the socket in <data_dir>/run/socket",
    ),
    ("data_directory", "set data_dir instead"),
    ("config_file", "the agent manages the configuration files"),
    ("hba_file", "the agent generates pg_hba.conf"),
    ("ident_file", "the agent generates pg_ident.conf"),
    (
        "password_encryption",
        "tenants' passwords are always SCRAM-SHA-256",
    ),
    (
        "logging_collector",
        "the agent captures PostgreSQL's log itself",
    ),
    (
        "log_destination",
        "the agent captures PostgreSQL's log from stderr",
    ),
    (
        "log_line_prefix",
        "the agent parses it to put pid, user and database into its own log fields",
    ),
];

/// One setting's value as written in TOML.
#[derive(Debug, Clone, PartialEq)]
pub enum ParameterValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

/// Validated `[postgres.parameters]`, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(BTreeMap<String, ParameterValue>);

impl Parameters {
    pub fn from_toml(raw: BTreeMap<String, toml::Value>) -> Result<Parameters, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let key = format!("postgres.parameters.{name}");
            let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
            if !valid_name {
                return Err(invalid(
                    &key,
                    "is not a PostgreSQL setting name (lowercase letters, digits, `_`, `.`)",
                ));
            }
            if let Some((_, why)) = OWNED_BY_AGENT.iter().find(|(owned, _)| *owned == name) {
                return Err(invalid(&key, format!("is managed by pgplatform: {why}")));
            }
            let value = match value {
                toml::Value::String(s) if s.contains(['\n', '\r', '\0']) => {
                    return Err(invalid(&key, "must be on one line"));
                }
                toml::Value::String(s) => ParameterValue::Text(s),
                toml::Value::Integer(i) => ParameterValue::Integer(i),
                toml::Value::Float(f) if f.is_finite() => ParameterValue::Float(f),
                toml::Value::Boolean(b) => ParameterValue::Bool(b),
                other => {
                    return Err(invalid(
                        &key,
                        format!(
                            "must be a string, number or boolean, not {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            out.insert(name, value);
        }
        Ok(Parameters(out))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParameterValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Result<Parameters, String> {
        let raw: BTreeMap<String, toml::Value> = toml::from_str(text).unwrap();
        Parameters::from_toml(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn agent_owned_and_malformed_settings_are_refused() {
        let err = params("port = 5433\n").unwrap_err();
        assert!(err.contains("postgres.parameters.port"), "{err}");
        assert!(err.contains("postgres.port"), "{err}");
        let err = params("\"Bad Name\" = 1\n").unwrap_err();
        assert!(err.contains("postgres.parameters.Bad Name"), "{err}");
        let err = params("work_mem = \"4MB\\nport = 1\"\n").unwrap_err();
        assert!(err.contains("one line"), "{err}");
        let err = params("work_mem = [1]\n").unwrap_err();
        assert!(err.contains("array"), "{err}");
    }
}
