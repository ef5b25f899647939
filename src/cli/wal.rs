//! `pgplatform wal push|fetch`: the commands PostgreSQL runs as its archive_command and
//! restore_command (the agent configures both). Quiet on success; one line on failure.

use std::path::PathBuf;

use crate::backup::repo::Repo;
use crate::backup::wal::{self, FetchError};
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum WalCommand {
    /// Archive one WAL file (archive_command = '… wal push %p'). Succeeds only once the
    /// repository holds it durably; pushing the same file again succeeds; a different
    /// file under the same name fails.
    Push {
        /// The file, relative to PGDATA as PostgreSQL passes it.
        path: PathBuf,
    },
    /// Restore one WAL file (restore_command = '… wal fetch %f %p'). Exits 1 when the
    ///repository does not have it, and 255 — which stops recovery — when the stored
    /// object is corrupt or the repository cannot be read.
    Fetch {
        /// The WAL file's name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
    },
}

/// Exit status 255: PostgreSQL treats it as fatal for recovery instead of "end of WAL".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StopRecovery(pub String);

/// A quiet "not found" for restore_command.
#[derive(Debug, thiserror::Error)]
#[error("not found")]
pub struct QuietFailure;

pub async fn run(config: &Config, command: WalCommand) -> anyhow::Result<()> {
    let repo = Repo::open(&config.backup)?;
    match command {
        WalCommand::Push { path } => {
            wal::push(&repo, &path, config.backup.compress_level)
                .await
                .map_err(|e| e.context(format!("wal push {}", path.display())))?;
            Ok(())
        }
        WalCommand::Fetch { name, dest } => match wal::fetch(&repo, &name, &dest).await {
            Ok(()) => Ok(()),
            Err(FetchError::NotFound(_)) => Err(QuietFailure.into()),
            Err(FetchError::Corrupt(message)) => {
                Err(StopRecovery(format!("wal fetch {name}: {message}")).into())
            }
            // An unreachable repository is not the end of the archive: stop recovery
            // rather than promote early and lose what comes after.
            Err(FetchError::Other(e)) => {
                Err(StopRecovery(format!("wal fetch {name}: {e:#}")).into())
            }
        },
    }
}
