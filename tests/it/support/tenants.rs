//! What tenants leave behind: secret files, and counts that prove a refused command created nothing.

use std::fs;
use std::path::PathBuf;

use super::TestAgent;

/// What can be counted from outside to prove that a refused command created nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Inventory {
    pub roles: String,
    pub databases: String,
    pub registry_rows: String,
    pub secrets_dirs: Vec<String>,
}

impl TestAgent {
    /// Counts roles, databases, registry rows and secrets directories.
    pub fn inventory(&self) -> Inventory {
        let secrets_dirs = match fs::read_dir(self.data_dir().join("secrets")) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            }
            Err(_) => Vec::new(),
        };
        Inventory {
            roles: self.admin_psql("select count(*) from pg_roles"),
            databases: self.admin_psql("select count(*) from pg_database"),
            registry_rows: self.admin_psql("select count(*) from pgplatform.tenants"),
            secrets_dirs,
        }
    }

    pub fn secrets_dir(&self, tenant: &str) -> PathBuf {
        self.data_dir().join("secrets").join(tenant)
    }

    /// The trimmed contents of `<data>/secrets/<tenant>/<file>`.
    pub fn secret(&self, tenant: &str, file: &str) -> String {
        let path = self.secrets_dir(tenant).join(file);
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        text.trim().to_owned()
    }

    /// The tenant owner's `database_url`.
    pub fn tenant_url(&self, tenant: &str) -> String {
        self.secret(tenant, "database_url")
    }

    /// The tenant's read-only role's `database_url`.
    pub fn readonly_url(&self, tenant: &str) -> String {
        self.secret(tenant, "readonly/database_url")
    }
}
