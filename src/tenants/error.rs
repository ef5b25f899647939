//! What can go wrong with a tenant operation, in terms the operator can act on.

use super::name::NameError;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("{0}")]
    InvalidOption(String),
    #[error("tenant `{0}` already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no tenant named `{0}`")]
    NotFound(String),
    #[error("extension {missing} is not available on this PostgreSQL ({version}){install}; available: {available}")]
    ExtensionUnavailable {
        missing: String,
        /// "; install the package … on the database host", when a package is known.
        install: String,
        version: String,
        available: String,
    },
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}
