//! What this node knows of its last backup and drill, in `run/backups.json` and
//! `run/drill.json`, so `/metrics` and `status` answer without listing the repository.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::manifest::BaseManifest;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupState {
    pub last_success: Option<LastBackup>,
    pub last_failure: Option<LastFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastBackup {
    pub id: String,
    pub stopped_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub stored_bytes: u64,
    pub data_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastFailure {
    pub at: DateTime<Utc>,
    pub error: String,
}

const FILE: &str = "backups.json";

pub fn read(run_dir: &Path) -> BackupState {
    std::fs::read_to_string(run_dir.join(FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Records a backup's outcome; a failure to record is logged, never fatal.
pub fn record(run_dir: &Path, outcome: Result<&BaseManifest, &anyhow::Error>) {
    let mut state = read(run_dir);
    match outcome {
        Ok(m) => {
            state.last_success = Some(LastBackup {
                id: m.id.clone(),
                stopped_at: m.stopped_at,
                duration_seconds: (m.stopped_at - m.started_at).num_milliseconds() as f64 / 1000.0,
                stored_bytes: m.object.size,
                data_bytes: m.data_bytes,
            })
        }
        Err(e) => {
            state.last_failure = Some(LastFailure {
                at: Utc::now(),
                error: format!("{e:#}"),
            })
        }
    }
    let path = run_dir.join(FILE);
    let written = serde_json::to_vec_pretty(&state)
        .map_err(anyhow::Error::from)
        .and_then(|bytes| crate::safe_file::replace(&path, &bytes, 0o644, None));
    if let Err(e) = written {
        tracing::warn!("record the backup state in {}: {e:#}", path.display());
    }
}
