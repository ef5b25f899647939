//! SQL text helpers: identifier and literal quoting, SCRAM verifiers, generated passwords.

use base64::Engine;
use rand::RngCore;

/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal (standard_conforming_strings is on since PostgreSQL 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// SQL (inside a transaction) that creates `extensions` in schema `public`, as their
/// control files allow. Run it as the superuser only in a database no tenant has been in
/// yet: the extensions' scripts resolve names through `public`.
pub fn create_extensions(extensions: &[String]) -> String {
    let mut sql = String::from("SET LOCAL search_path = public;\n");
    for extension in extensions {
        sql.push_str(&format!(
            "CREATE EXTENSION IF NOT EXISTS {} CASCADE;\n",
            quote_ident(extension)
        ));
    }
    sql.push_str("SET LOCAL search_path = pg_catalog, pg_temp;\n");
    sql
}

/// A new password: 32 bytes from the OS CSPRNG, URL-safe base64 (43 characters), so it
/// needs no escaping in URLs, env files or .pgpass.
pub fn generate_password() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores; sending it instead of the password keeps
/// the plaintext out of the server's statement log.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident("shop"), "\"shop\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn passwords_are_long_unique_and_url_safe() {
        let a = generate_password();
        let b = generate_password();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn verifiers_are_scram_and_hide_the_password() {
        let v = scram_verifier("secret-pass");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(!v.contains("secret-pass"));
    }
}
