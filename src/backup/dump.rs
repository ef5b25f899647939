//! Logical dumps per tenant: `backup dump TENANT` (pg_dump's custom format, compressed
//! with zstd on the way to the repository) and `restore dump TENANT`, which restores into
//! a new database and touches the live one only with `--replace` (then it swaps the two
//! by renaming, keeping the old one).

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::Stdio;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::catalog::Refused;
use super::context::Context;
use super::manifest::{self, DumpManifest, ObjectRef};
use super::tar_stream::ChunkSink;
use super::{layout, lock};
use crate::pg::sql::quote_ident;

async fn require_tenant(ctx: &Context, tenant: &str) -> anyhow::Result<()> {
    let agent = ctx.superuser(crate::pg::AGENT_DATABASE).await?;
    let found = agent
        .query_opt(
            "SELECT 1 FROM pgplatform.tenants WHERE name = $1 AND state = 'ready'",
            &[&tenant],
        )
        .await?;
    anyhow::ensure!(
        found.is_some(),
        "no tenant named `{tenant}`; see `pgplatform tenant list`"
    );
    Ok(())
}

/// pg_dump, pg_restore: connected as the tenant's agent role with the tenant's role set
/// (`connect::tenant_options`), so nothing a tenant put in its database (a CHECK
/// constraint or default calling its function, a view, an event on load) ever runs with
/// more than the tenant's rights.
fn pg_tool(ctx: &Context, tool: &str, tenant: &str) -> tokio::process::Command {
    let mut cmd = crate::pg::process::command(&ctx.binaries.path(tool), None);
    cmd.arg("-h")
        .arg(&ctx.socket_dir)
        .arg("-p")
        .arg(ctx.port.to_string())
        .arg("-U")
        .arg(crate::pg::tenant_agent_role(tenant))
        .env("PGOPTIONS", crate::pg::connect::tenant_options(tenant));
    cmd
}

pub async fn dump(ctx: &Context, tenant: &str) -> anyhow::Result<DumpManifest> {
    let _lock = lock::acquire(&ctx.data_dir.run(), &format!("dump-{tenant}"))?;
    require_tenant(ctx, tenant).await?;
    let started_at = Utc::now();
    let id = layout::new_id(started_at);
    let key = layout::dump_data_key(tenant, &id);
    let mut child = pg_tool(ctx, "pg_dump", tenant)
        .args(["--format=custom", "--compress=0", "--dbname", tenant])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start pg_dump")?;
    let stdout = File::from(
        child
            .stdout
            .take()
            .context("pg_dump stdout")?
            .into_owned_fd()?,
    );
    let stderr = child.stderr.take().context("pg_dump stderr")?;
    let errors = tokio::spawn(read_all(stderr));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let (level, workers) = (ctx.config.compress_level, ctx.config.parallel);
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64, String)> {
        let mut encoder = zstd::stream::write::Encoder::new(ChunkSink::new(tx), level)?;
        if workers > 1 {
            encoder.multithread(workers)?;
        }
        let dumped = io::copy(
            &mut io::BufReader::with_capacity(1 << 20, stdout),
            &mut encoder,
        )
        .context("read pg_dump's output")?;
        let (stored, sha) = encoder.finish()?.finish()?;
        Ok((dumped, stored, sha))
    });
    let mut writer = ctx.repo.writer(&key).await?;
    let mut upload_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.write(chunk).await {
            upload_error = Some(e);
            break;
        }
    }
    drop(rx);
    let status = child.wait().await.context("wait for pg_dump")?;
    let errors = errors.await.unwrap_or_default();
    let produced = producer.await?;
    let (dump_bytes, stored, sha256) = match (upload_error, status.success(), produced) {
        (None, true, Ok(p)) => p,
        (upload, ok, produced) => {
            writer.abort().await;
            if !ok {
                anyhow::bail!("pg_dump of {tenant} failed ({status}): {}", errors.trim());
            }
            return Err(upload
                .or(produced.err())
                .unwrap_or_else(|| anyhow::anyhow!("dump failed")));
        }
    };
    writer.finish().await?;
    let manifest = DumpManifest {
        id: id.clone(),
        tenant: tenant.to_owned(),
        started_at,
        stopped_at: Utc::now(),
        pg_version: ctx.binaries.version.text.clone(),
        object: ObjectRef {
            key,
            size: stored,
            sha256,
        },
        dump_bytes,
    };
    let key = layout::dump_manifest_key(tenant, &id);
    let sealed = manifest::seal(ctx.repo.key(), &key, &manifest)?;
    ctx.repo.put(&key, Bytes::from(sealed)).await?;
    Ok(manifest)
}

/// Every tenant's dumps, by tenant, oldest first.
pub async fn all_dumps(ctx: &Context) -> anyhow::Result<Vec<DumpManifest>> {
    Ok(scan(ctx, "dump/").await?.0)
}

/// The dumps under `prefix` whose manifests verify (HMAC, then the form of their values),
/// and those refused (`tenant/id`), which are logged.
async fn scan(ctx: &Context, prefix: &str) -> anyhow::Result<(Vec<DumpManifest>, Vec<Refused>)> {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for object in ctx.repo.list(prefix).await? {
        // dump/<tenant>/<id>/manifest
        let parts: Vec<&str> = object.key.split('/').collect();
        let ["dump", tenant, id, "manifest"] = parts.as_slice() else {
            continue;
        };
        let Some(bytes) = ctx.repo.get(&object.key).await? else {
            continue;
        };
        let opened = manifest::open::<DumpManifest>(ctx.repo.key(), &object.key, &bytes)
            .and_then(|m| m.check(tenant, id).map(|()| m));
        match opened {
            Ok(m) => out.push(m),
            Err(e) => {
                let one = Refused {
                    what: "dump",
                    id: format!("{tenant}/{id}"),
                    reason: format!("{e:#}"),
                };
                tracing::error!(dump = ?one.id, repository = %ctx.repo.describe(), "{one}");
                refused.push(one);
            }
        }
    }
    out.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
    refused.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, refused))
}

#[derive(Debug, Serialize)]
pub struct RestoredDump {
    pub tenant: String,
    pub dump_id: String,
    /// Where the data now is.
    pub database: String,
    /// With --replace: the previous live database, kept under this name.
    pub previous: Option<String>,
}

pub async fn restore_dump(
    ctx: &Context,
    tenant: &str,
    from: Option<&str>,
    as_name: Option<&str>,
    replace: bool,
) -> anyhow::Result<RestoredDump> {
    require_tenant(ctx, tenant).await?;
    let (all, refused) = scan(ctx, &format!("dump/{tenant}/")).await?;
    // A refused manifest is never used, nor silently passed over for an older dump.
    let refusal = |wanted: &dyn Fn(&str) -> bool| {
        refused
            .iter()
            .find(|r| wanted(&r.id))
            .map(|r| anyhow::anyhow!("{r}; restore another dump explicitly with --from ID"))
    };
    if let Some(id) = from {
        if let Some(e) = refusal(&|r| r == format!("{tenant}/{id}")) {
            return Err(e);
        }
    }
    let dump = match from {
        Some(id) => all
            .iter()
            .find(|d| d.id == id)
            .with_context(|| format!("no dump {id} of {tenant}"))?,
        None => match all.last() {
            Some(dump) => dump,
            None => {
                return Err(refusal(&|_| true).unwrap_or_else(|| {
                    anyhow::anyhow!(
                        "{tenant} has no dump yet; run `pgplatform backup dump {tenant}`"
                    )
                }))
            }
        },
    };
    if from.is_none() {
        let chosen = format!("{tenant}/{}", dump.id);
        if let Some(e) = refusal(&|r| r > chosen.as_str()) {
            return Err(e);
        }
    }
    let suffix = dump.id.to_ascii_lowercase();
    let target = match (replace, as_name) {
        (true, _) => format!("{tenant}_incoming_{suffix}"),
        (false, Some(name)) => {
            crate::tenants::TenantName::parse(name)
                .map_err(|e| anyhow::anyhow!("--as {name}: {e}"))?;
            name.to_owned()
        }
        (false, None) => format!("{tenant}_restored_{suffix}"),
    };
    // PostgreSQL would cut a longer name to 63 bytes, silently, and then it is not the
    // name checked below.
    let before = format!("{tenant}_before_{suffix}");
    for name in [Some(&target), replace.then_some(&before)]
        .into_iter()
        .flatten()
    {
        anyhow::ensure!(
            name.len() <= 63,
            "the database name {name} would be longer than PostgreSQL's 63 bytes (the tenant \
             name is long): restore it with --as NAME instead"
        );
    }
    let admin = ctx.superuser("postgres").await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&target])
        .await?
        .is_some();
    anyhow::ensure!(
        !exists,
        "database `{target}` already exists; choose another name with --as"
    );
    let (db, owner) = (quote_ident(&target), quote_ident(tenant));
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {db} OWNER {owner} ENCODING 'UTF8' TEMPLATE template0"
        ))
        .await?;
    let loaded = async {
        // Extensions are the superuser's to create (most are untrusted), and only the
        // ones the tenant was given, in the new, still empty database: never because
        // the dump asks. pg_restore then skips the dump's own extension entries.
        let extensions = tenant_extensions(ctx, tenant).await?;
        if !extensions.is_empty() {
            ctx.superuser(&target)
                .await?
                .batch_execute(&format!(
                    "BEGIN; {} COMMIT;",
                    crate::pg::sql::create_extensions(&extensions)
                ))
                .await
                .with_context(|| format!("create the tenant's extensions in {target}"))?;
        }
        load(ctx, dump, tenant, &target, &extensions).await?;
        admin
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT ALL ON DATABASE {db} TO {owner}"
            ))
            .await?;
        let agent = ctx.superuser(crate::pg::AGENT_DATABASE).await?;
        let readonly: Option<String> = agent
            .query_one(
                "SELECT readonly_role FROM pgplatform.tenants WHERE name = $1",
                &[&tenant],
            )
            .await?
            .try_get(0)?;
        if let Some(role) = readonly {
            admin
                .batch_execute(&format!(
                    "GRANT CONNECT ON DATABASE {db} TO {}",
                    quote_ident(&role)
                ))
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = loaded {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
            .await;
        return Err(e);
    }
    if !replace {
        return Ok(RestoredDump {
            tenant: tenant.to_owned(),
            dump_id: dump.id.clone(),
            database: target,
            previous: None,
        });
    }
    // Swap: the live database is closed to new sessions, emptied, renamed aside.
    let previous = format!("{tenant}_before_{suffix}");
    let (live, old) = (quote_ident(tenant), quote_ident(&previous));
    admin
        .batch_execute(&format!("ALTER DATABASE {live} ALLOW_CONNECTIONS false"))
        .await?;
    let aside = async {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&tenant],
            )
            .await?;
        admin
            .batch_execute(&format!("ALTER DATABASE {live} RENAME TO {old}"))
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = aside {
        let _ = admin
            .batch_execute(&format!("ALTER DATABASE {live} ALLOW_CONNECTIONS true"))
            .await;
        return Err(e.context("move the live database aside (it is unchanged)"));
    }
    let swapped = async {
        admin
            .batch_execute(&format!("ALTER DATABASE {db} RENAME TO {live}"))
            .await?;
        // Kept for the operator to inspect (pg_hba admits no tenant to it by this name).
        admin
            .batch_execute(&format!("ALTER DATABASE {old} ALLOW_CONNECTIONS true"))
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = swapped {
        // Put the live database back under its name, open again.
        let back = admin
            .batch_execute(&format!(
                "ALTER DATABASE {old} RENAME TO {live}; ALTER DATABASE {live} ALLOW_CONNECTIONS true"
            ))
            .await;
        return Err(match back {
            Ok(()) => e.context("swap the restored database in (the live one is back)"),
            Err(b) => e.context(format!(
                "swap the restored database in, AND putting {tenant} back failed ({b}): its data is in {previous}"
            )),
        });
    }
    Ok(RestoredDump {
        tenant: tenant.to_owned(),
        dump_id: dump.id.clone(),
        database: tenant.to_owned(),
        previous: Some(previous),
    })
}

/// A child's stderr, read while it runs so a chatty one never blocks on a full pipe.
async fn read_all(mut stream: tokio::process::ChildStderr) -> String {
    let mut text = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text).await;
    text
}

/// The extensions the tenant was created with (the registry's list).
async fn tenant_extensions(ctx: &Context, tenant: &str) -> anyhow::Result<Vec<String>> {
    let agent = ctx.superuser(crate::pg::AGENT_DATABASE).await?;
    Ok(agent
        .query_one(
            "SELECT extensions FROM pgplatform.tenants WHERE name = $1",
            &[&tenant],
        )
        .await?
        .try_get(0)?)
}

/// Restores the verified dump into `database` as the tenant: pg_restore reads the table
/// of contents first (`--list`), the entries that create or comment the superuser's
/// extensions are left out, then the rest is loaded in one transaction.
async fn load(
    ctx: &Context,
    dump: &DumpManifest,
    tenant: &str,
    database: &str,
    extensions: &[String],
) -> anyhow::Result<()> {
    let verified = fetch_verified(ctx, dump).await?;
    let listing = run_pg_restore(ctx, tenant, &verified, &["--list"]).await?;
    let kept: String = listing
        .lines()
        .filter(|line| !creates_extension(line, extensions))
        .map(|line| format!("{line}\n"))
        .collect();
    let list_dir = ListDir::create(&ctx.data_dir.run())?;
    let list_file = list_dir.write(&kept)?;
    let list_arg = list_file.to_string_lossy();
    let args = [
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--use-list",
        &list_arg,
        "--dbname",
        database,
    ];
    run_pg_restore(ctx, tenant, &verified, &args).await?;
    Ok(())
}

/// Runs pg_restore as the tenant with `args`, feeding it the verified dump through zstd;
/// returns what it printed.
async fn run_pg_restore(
    ctx: &Context,
    tenant: &str,
    verified: &File,
    args: &[&str],
) -> anyhow::Result<String> {
    let mut source = verified.try_clone().context("reopen the downloaded dump")?;
    io::Seek::rewind(&mut source).context("rewind the downloaded dump")?;
    let mut child = pg_tool(ctx, "pg_restore", tenant)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start pg_restore")?;
    let stdin = File::from(
        child
            .stdin
            .take()
            .context("pg_restore stdin")?
            .into_owned_fd()?,
    );
    let stdout = child.stdout.take().context("pg_restore stdout")?;
    let printed = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut { stdout }, &mut text).await;
        text
    });
    let stderr = child.stderr.take().context("pg_restore stderr")?;
    let errors = tokio::spawn(read_all(stderr));
    let feeder = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut decoder = zstd::stream::read::Decoder::new(io::BufReader::new(source))?;
        let mut stdin = io::BufWriter::new(stdin);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = decoder.read(&mut buf).context("decompress the dump")?;
            if n == 0 {
                break;
            }
            stdin.write_all(&buf[..n]).context("feed pg_restore")?;
        }
        stdin.flush().context("feed pg_restore")?;
        Ok(())
    });
    let fed = feeder.await?;
    let status = child.wait().await?;
    let errors = errors.await.unwrap_or_default();
    // pg_restore stopping early cuts the feed short: its own error explains more.
    anyhow::ensure!(
        status.success(),
        "pg_restore {} failed ({status}): {}",
        args.last().copied().unwrap_or_default(),
        errors.trim()
    );
    // `--list` stops reading once it has the table of contents: a broken pipe is fine.
    if !args.contains(&"--list") {
        fed?;
    }
    Ok(printed.await.unwrap_or_default())
}

/// Downloads the dump object into an unnamed file in `run/` and checks its size and
/// SHA-256 against the (verified) manifest before anything reads it: pg_restore runs the
/// SQL in a dump, so it must never see bytes the manifest does not vouch for.
async fn fetch_verified(ctx: &Context, dump: &DumpManifest) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let run = ctx.data_dir.run();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    let file = match options
        .clone()
        .custom_flags(nix::libc::O_TMPFILE)
        .open(&run)
    {
        Ok(file) => file,
        // Filesystems without O_TMPFILE: a fresh private name, unlinked at once.
        Err(_) => {
            let path = run.join(format!(".dump-download.{:016x}", rand::random::<u64>()));
            let file = options
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .with_context(|| format!("create {}", path.display()))?;
            let _ = std::fs::remove_file(&path);
            file
        }
    };
    let mut out = tokio::fs::File::from_std(file);
    let mut stream = ctx.repo.get_stream(&dump.object.key).await?;
    let mut sha = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        anyhow::ensure!(
            size <= dump.object.size,
            "{} is larger than its manifest says: the stored dump is corrupt",
            dump.object.key
        );
        sha.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
            .await
            .context("write the downloaded dump")?;
    }
    let digest = super::envelope::hex(&sha.finalize());
    anyhow::ensure!(
        size == dump.object.size && digest == dump.object.sha256,
        "{} does not match its checksum: the stored dump is corrupt",
        dump.object.key
    );
    let mut file = out.into_std().await;
    io::Seek::rewind(&mut file).context("rewind the downloaded dump")?;
    Ok(file)
}

/// Whether a `--list` line creates or comments one of `extensions`
/// (`…; 3079 16385 EXTENSION - vector`, `…; 0 0 COMMENT - EXTENSION vector`).
fn creates_extension(line: &str, extensions: &[String]) -> bool {
    let Some((_, entry)) = line.split_once("; ") else {
        return false;
    };
    let mut words = entry.split_whitespace().skip(2);
    let named = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("EXTENSION"), Some("-"), Some(name), _) => name,
        (Some("COMMENT"), Some("-"), Some("EXTENSION"), Some(name)) => name,
        _ => return false,
    };
    extensions.iter().any(|e| e == named)
}

/// A private directory (0700, random name, made by this call) for pg_restore's list.
struct ListDir(std::path::PathBuf);

impl ListDir {
    fn create(parent: &std::path::Path) -> anyhow::Result<ListDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = parent.join(format!(".restore-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("create {}", path.display()))?;
        Ok(ListDir(path))
    }

    fn write(&self, text: &str) -> anyhow::Result<std::path::PathBuf> {
        let path = self.0.join("list");
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for ListDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::creates_extension;

    #[test]
    fn extension_entries_are_recognised_by_name() {
        let ext = ["vector".to_owned()];
        assert!(creates_extension("2; 3079 16385 EXTENSION - vector ", &ext));
        assert!(creates_extension(
            "4203; 0 0 COMMENT - EXTENSION vector ",
            &ext
        ));
        assert!(!creates_extension(
            "2; 3079 16385 EXTENSION - hstore ",
            &ext
        ));
        assert!(!creates_extension(
            "215; 1259 16390 TABLE public vector shop",
            &ext
        ));
        assert!(!creates_extension(";", &ext));
        assert!(!creates_extension("; Archive created at 2026-12-07", &ext));
    }
}
