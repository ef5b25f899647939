//! `TenantName`: the only way to name a tenant, validated once so bad names change nothing.

/// A validated tenant name: `^[a-z][a-z0-9_]{0,47}$`, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantName(String);

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("tenant name must not be empty")]
    Empty,
    #[error("tenant name is {0} characters long; the limit is {MAX_LEN}")]
    TooLong(usize),
    #[error("tenant name `{0}` is invalid: use lowercase letters, digits and `_`, starting with a letter")]
    Invalid(String),
    #[error("tenant name `{0}` is reserved")]
    Reserved(String),
}

const MAX_LEN: usize = 48;

/// Names PostgreSQL, pg_hba.conf or the agent already give a meaning to.
const RESERVED: &[&str] = &[
    "postgres",
    "template0",
    "template1",
    "pgplatform",
    "pgbouncer",
    "public",
    "none",
    "all",
    "sameuser",
    "samerole",
    "samegroup",
    "replication",
    "current_user",
    "current_role",
    "session_user",
];

impl TenantName {
    pub fn parse(name: &str) -> Result<TenantName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        let length = name.chars().count();
        if length > MAX_LEN {
            return Err(NameError::TooLong(length));
        }
        let mut chars = name.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_ok {
            return Err(NameError::Invalid(printable(name)));
        }
        if RESERVED.contains(&name) || name.starts_with("pg_") || name.starts_with("pgplatform_") {
            return Err(NameError::Reserved(name.to_owned()));
        }
        Ok(TenantName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant's read-only role.
    pub fn readonly_role(&self) -> String {
        format!("{}_ro", self.0)
    }
}

impl std::fmt::Display for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keeps control characters of a refused name out of error messages and logs.
fn printable(name: &str) -> String {
    name.chars().flat_map(char::escape_debug).take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for name in ["shop", "a", "crm_2", &"x".repeat(48)] {
            assert_eq!(TenantName::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(
            TenantName::parse("shop").unwrap().readonly_role(),
            "shop_ro"
        );
    }

    #[test]
    fn bad_names_fail_with_the_reason() {
        assert_eq!(TenantName::parse(""), Err(NameError::Empty));
        assert_eq!(
            TenantName::parse(&"x".repeat(49)),
            Err(NameError::TooLong(49))
        );
        assert_eq!(
            TenantName::parse(&"x".repeat(64)),
            Err(NameError::TooLong(64))
        );
        for name in [
            "Robert'); DROP",
            "Shop",
            "1shop",
            "_shop",
            "shop-db",
            "shöp",
            "a b",
            "a\"b",
        ] {
            assert!(
                matches!(TenantName::parse(name), Err(NameError::Invalid(_))),
                "{name}"
            );
        }
        for name in [
            "postgres",
            "template1",
            "pgplatform",
            "pg_x",
            "public",
            "all",
        ] {
            assert_eq!(
                TenantName::parse(name),
                Err(NameError::Reserved(name.into())),
                "{name}"
            );
        }
    }

    #[test]
    fn control_characters_are_escaped_in_errors() {
        let err = TenantName::parse("a\nb").unwrap_err().to_string();
        assert!(err.contains("a\\nb"), "{err}");
    }
}
