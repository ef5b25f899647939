//! `pgplatform init [DIR]`: write the commented example config.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::config::{DEFAULT_FILE_NAME, EXAMPLE};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write pgplatform.toml into.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Overwrite an existing pgplatform.toml.
    #[arg(long)]
    force: bool,
}

pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let path = args.dir.join(DEFAULT_FILE_NAME);
    if path.exists() && !args.force {
        bail!(
            "{} already exists; use --force to overwrite it",
            path.display()
        );
    }
    std::fs::write(&path, EXAMPLE).with_context(|| format!("write {}", path.display()))?;
    super::output::line(&format!(
        "wrote {}; start the platform with `pgplatform --config {} up`",
        path.display(),
        path.display()
    ));
    Ok(())
}
