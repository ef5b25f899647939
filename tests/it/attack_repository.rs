//! Attack: whoever can write to the backup repository (the bucket, or here the local
//! repository directory) but does not hold the repository key tries to get code run as
//! PostgreSQL's OS user, or files written outside the restore, through what a drill,
//! restore, verify or dump restore reads from it: a manifest with an injected
//! `counts_lsn`, a changed checksum or an extra file, a manifest forged from scratch, a
//! backup tar with `../` and symlink entries and its own postgresql.auto.conf, a forged
//! WAL segment, a swapped dump. Each is refused with an error naming the backup, and
//! nothing runs and nothing lands outside.

use std::fs;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::psql::query;
use crate::support::{stdout_of, TestAgent};

const NO_SCHEDULES: &str = "[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n";

/// A file the attack's commands would create (PostgreSQL's user can write /tmp).
fn marker(name: &str) -> PathBuf {
    let path = PathBuf::from(format!(
        "/tmp/pgplatform-attack-repository-{}-{name}",
        std::process::id()
    ));
    let _ = fs::remove_file(&path);
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header line and JSON of a stored manifest.
fn read_manifest(path: &Path) -> (String, Value) {
    let text = fs::read_to_string(path).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    (header.to_owned(), serde_json::from_str(body).unwrap())
}

fn write_manifest(path: &Path, header: &str, body: &Value) {
    let body = serde_json::to_string_pretty(body).unwrap();
    fs::write(path, format!("{header}\n{body}")).unwrap();
}

/// What an attacker without the key can put on the header line: an HMAC under a key of
/// their own, claiming this repository's key fingerprint (copied from a real manifest).
fn attacker_header(genuine_header: &str, body: &Value) -> String {
    let fingerprint = genuine_header.split(' ').nth(1).unwrap();
    let body = serde_json::to_string_pretty(body).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"the attacker's own key").unwrap();
    mac.update(body.as_bytes());
    format!(
        "pgplatform-manifest-v2 {fingerprint} hmac-sha256={}",
        hex(&mac.finalize().into_bytes())
    )
}

/// The old, self-checking format: a SHA-256 anybody can compute.
fn checksum_header(body: &Value) -> String {
    let body = serde_json::to_string_pretty(body).unwrap();
    format!("sha256:{}", hex(&Sha256::digest(body.as_bytes())))
}

fn assert_drill_refuses(agent: &TestAgent, id: &str, why: &str) {
    let out = agent.cli(&["backup", "drill", "--json"]);
    assert!(!out.status.success(), "{why}: the drill passed");
    let drill: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(drill["ok"], false, "{why}: {drill}");
    assert_eq!(drill["backup_id"], id, "{why}: {drill}");
    let errors = drill["errors"].to_string();
    assert!(
        errors.contains("is refused") && errors.contains(id),
        "{why}: {drill}"
    );
}

fn assert_restore_refuses(agent: &TestAgent, id: &str, why: &str) {
    for by_name in [false, true] {
        let dir = agent.restore_dir(&format!("refused-{by_name}"));
        let dir_arg = dir.to_string_lossy().into_owned();
        let mut args = vec!["restore", "--target-dir", &dir_arg];
        if by_name {
            args.extend(["--backup", id]);
        }
        let err = agent.cli_err(&args);
        assert!(
            err.contains("is refused") && err.contains(id),
            "{why}: {err}"
        );
        assert!(!dir.exists(), "{why}: a refused restore created {dir:?}");
    }
}

#[test]
fn tampered_and_forged_manifests_are_refused_by_drill_restore_verify_and_list() {
    let agent = TestAgent::start_with_shop(NO_SCHEDULES);
    let url = agent.tenant_url("shop");
    query(
        &url,
        "CREATE TABLE orders AS SELECT generate_series(1, 100) AS id",
    );
    let id = agent.cli_json(&["backup", "run", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent.switch_and_archive();
    let repo = agent.data_dir().join("backups");
    let path = repo.join(format!("base/{id}/manifest"));
    let genuine = fs::read(&path).unwrap();
    let (header, body) = read_manifest(&path);
    assert!(body["counts_lsn"].is_string(), "{body}");
    let pwned = marker("counts-lsn");
    let injection = format!("0/0'\nrestore_command = 'touch {}'", pwned.display());

    let mut attacks: Vec<(&str, String, Value)> = Vec::new();
    let mut injected = body.clone();
    injected["counts_lsn"] = Value::String(injection.clone());
    attacks.push((
        "counts_lsn injection, HMAC line kept",
        header.clone(),
        injected.clone(),
    ));
    attacks.push((
        "counts_lsn injection, old checksum line",
        checksum_header(&injected),
        injected.clone(),
    ));
    attacks.push((
        "counts_lsn injection, attacker's HMAC",
        attacker_header(&header, &injected),
        injected,
    ));
    let mut checksum = body.clone();
    checksum["object"]["sha256"] = Value::String("0".repeat(64));
    attacks.push(("changed data checksum", header.clone(), checksum));
    let mut extra = body.clone();
    extra["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"path": "base/1/99999", "size": 1, "crc32c": 0}));
    attacks.push(("added file entry", header.clone(), extra));

    for (why, forged_header, forged_body) in &attacks {
        write_manifest(&path, forged_header, forged_body);
        assert_drill_refuses(&agent, &id, why);
        assert_restore_refuses(&agent, &id, why);
        let err = agent.cli_err(&["backup", "verify", &id]);
        assert!(err.contains("is refused"), "{why}: {err}");
        let listed = agent.cli_ok(&["backup", "list"]);
        assert!(
            listed.contains("REFUSED") && listed.contains(&id),
            "{why}: {listed}"
        );
        assert!(!pwned.exists(), "{why}: the injected command ran");
    }

    // A whole backup made up by the attacker, newer than the real one, with a tar that
    // tries to escape and to configure commands: refused by name, its tar never read.
    fs::write(&path, &genuine).unwrap();
    let fake_id = "29990101T000000Z";
    let fake_dir = repo.join(format!("base/{fake_id}"));
    fs::create_dir_all(&fake_dir).unwrap();
    let escaped = agent.dir().join("escaped");
    let tar = hostile_tar(&[
        ("postgresql.auto.conf", &archive_command(&pwned)),
        ("../../escaped", b"pwned\n"),
    ]);
    fs::write(fake_dir.join("pgdata.tar.zst"), &tar).unwrap();
    let mut fake = body.clone();
    fake["id"] = Value::String(fake_id.into());
    fake["object"] = serde_json::json!({
        "key": format!("base/{fake_id}/pgdata.tar.zst"),
        "size": tar.len(),
        "sha256": hex(&Sha256::digest(&tar)),
    });
    fake["files"] = serde_json::json!([]);
    write_manifest(
        &fake_dir.join("manifest"),
        &attacker_header(&header, &fake),
        &fake,
    );
    assert_drill_refuses(&agent, fake_id, "forged newer backup");
    let dir = agent.restore_dir("forged");
    let err = agent.cli_err(&["restore", "--target-dir", dir.to_str().unwrap()]);
    assert!(
        err.contains(fake_id) && err.contains("not falling back"),
        "{err}"
    );
    assert!(!dir.exists());
    let err = agent.cli_err(&["backup", "verify", fake_id]);
    assert!(err.contains("is refused"), "{err}");
    assert!(!escaped.exists(), "the forged tar was unpacked");
    assert!(!pwned.exists(), "the forged configuration ran");

    // The genuine backup, named, is still usable.
    let verified = agent.cli_json(&["backup", "verify", &id, "--json"]);
    assert_eq!(verified["failures"], serde_json::json!([]), "{verified}");
}

#[test]
fn a_swapped_backup_tar_writes_nothing_outside_and_no_configuration_of_its_own() {
    let agent = TestAgent::start_with_shop(NO_SCHEDULES);
    let id = agent.cli_json(&["backup", "run", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent.switch_and_archive();
    let object = agent
        .data_dir()
        .join(format!("backups/base/{id}/pgdata.tar.zst"));
    let pwned = marker("tar");
    let outside = agent.dir().join("escaped");
    let hostile: [(&str, Vec<u8>); 3] = [
        (
            "auto.conf and ../",
            hostile_tar(&[
                ("postgresql.auto.conf", &archive_command(&pwned)),
                ("../escaped", b"pwned\n"),
            ]),
        ),
        ("absolute path", hostile_tar(&[("/tmp/escaped-abs", b"x")])),
        ("symlink escape", symlink_tar(agent.dir(), "escaped")),
    ];
    for (why, tar) in &hostile {
        // The manifest stays genuine: only the data object is swapped.
        fs::write(&object, tar).unwrap();
        let dir = agent.restore_dir("swapped");
        let err = agent.cli_err(&["restore", "--target-dir", dir.to_str().unwrap()]);
        assert!(err.contains(&id), "{why}: {err}");
        let left: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{why}: left behind {left:?}");
        let out = agent.cli(&["backup", "drill", "--json"]);
        assert!(!out.status.success(), "{why}: the drill passed");
        let verify = agent.cli(&["backup", "verify", &id]);
        assert!(!verify.status.success(), "{why}: verify passed");
        assert!(!outside.exists(), "{why}: a tar entry escaped the restore");
        assert!(!Path::new("/tmp/escaped-abs").exists(), "{why}");
        assert!(!pwned.exists(), "{why}: the archive's archive_command ran");
    }
}

#[test]
fn forged_wal_is_never_replayed() {
    let agent = TestAgent::start_with_shop(NO_SCHEDULES);
    let backup = agent.cli_json(&["backup", "run", "--json"]);
    let id = backup["id"].as_str().unwrap().to_owned();
    agent.switch_and_archive();
    let manifest = read_manifest(&agent.data_dir().join(format!("backups/base/{id}/manifest"))).1;
    let start_wal = manifest["start_wal"].as_str().unwrap();
    let stored = agent
        .data_dir()
        .join(format!("backups/wal/{start_wal}.zst"));
    let genuine = fs::read(&stored).unwrap();
    let (header, raw) = open_wal_object(&genuine);
    for (why, forged) in [
        (
            "old self-checking format",
            wal_object(b"PGPLWAL1", &header, None, &raw),
        ),
        (
            "attacker's HMAC",
            wal_object(b"PGPLWAL2", &header, Some([7u8; 32]), &raw),
        ),
    ] {
        fs::write(&stored, &forged).unwrap();
        let out = agent.cli(&["backup", "verify", &id]);
        let text = stdout_of(&out);
        assert!(!out.status.success(), "{why}: verify passed: {text}");
        assert!(
            text.contains(&format!("FAILED wal/{start_wal}.zst")),
            "{why}: {text}"
        );
        let out = agent.cli(&["backup", "drill", "--json"]);
        assert!(
            !out.status.success(),
            "{why}: the drill replayed forged WAL"
        );
        let dest = agent.dir().join("fetched");
        let fetch = agent.cli(&["wal", "fetch", start_wal, dest.to_str().unwrap()]);
        assert_eq!(fetch.status.code(), Some(255), "{why}: recovery must stop");
        assert!(!dest.exists(), "{why}: forged WAL was handed to PostgreSQL");
    }
    fs::write(&stored, &genuine).unwrap();
    let dest = agent.dir().join("fetched");
    agent.cli_ok(&["wal", "fetch", start_wal, dest.to_str().unwrap()]);
    assert_eq!(fs::read(&dest).unwrap(), raw);
}

#[test]
fn a_swapped_dump_never_reaches_pg_restore() {
    let agent = TestAgent::start_with_shop(NO_SCHEDULES);
    let url = agent.tenant_url("shop");
    query(&url, "CREATE TABLE t AS SELECT 1 AS id");
    let genuine = agent.cli_json(&["backup", "dump", "shop", "--json"]);
    let genuine_id = genuine["id"].as_str().unwrap().to_owned();
    // The attacker's dump: restoring it as a superuser writes a file as PostgreSQL's user.
    let pwned = marker("dump");
    query(
        &url,
        &format!(
            "CREATE FUNCTION trap(int) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
               IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                 COPY (SELECT 1) TO '{}';
               END IF;
               RETURN true;
             END $$;
             CREATE TABLE bait (id int CHECK (trap(id)));
             INSERT INTO bait VALUES (1);",
            pwned.display()
        ),
    );
    let hostile = agent.cli_json(&["backup", "dump", "shop", "--json"]);
    let hostile_id = hostile["id"].as_str().unwrap();
    let dump = |id: &str| {
        agent
            .data_dir()
            .join(format!("backups/dump/shop/{id}/shop.pgdump.zst"))
    };
    fs::copy(dump(hostile_id), dump(&genuine_id)).unwrap();
    let err = agent.cli_err(&["restore", "dump", "shop", "--from", &genuine_id]);
    assert!(err.contains("the stored dump is corrupt"), "{err}");
    assert!(!pwned.exists(), "pg_restore ran the swapped dump");
    let databases = agent.admin_psql("SELECT string_agg(datname, ',') FROM pg_database");
    assert!(!databases.contains("restored"), "{databases}");

    // A dump manifest rewritten to vouch for the attacker's object is refused.
    let manifest = agent
        .data_dir()
        .join(format!("backups/dump/shop/{genuine_id}/manifest"));
    let (header, mut body) = read_manifest(&manifest);
    let object = fs::read(dump(&genuine_id)).unwrap();
    body["object"]["size"] = Value::from(object.len());
    body["object"]["sha256"] = Value::String(hex(&Sha256::digest(&object)));
    write_manifest(&manifest, &header, &body);
    let err = agent.cli_err(&["restore", "dump", "shop", "--from", &genuine_id]);
    assert!(
        err.contains("is refused") && err.contains(&genuine_id),
        "{err}"
    );
    assert!(!pwned.exists(), "pg_restore ran the swapped dump");
}

#[test]
fn commands_in_the_backed_up_auto_conf_never_run_in_a_drill_or_restore() {
    let agent = TestAgent::start_with_shop(NO_SCHEDULES);
    // Set by whoever was superuser once: harmless on the primary (it only runs when an
    // archive recovery ends), it would run in every drill, restore and clone.
    let pwned = marker("auto-conf");
    agent.admin_psql(&format!(
        "ALTER SYSTEM SET recovery_end_command = 'touch {}'",
        pwned.display()
    ));
    agent.cli_json(&["backup", "run", "--json"]);
    agent.admin_psql("ALTER SYSTEM RESET recovery_end_command");
    agent.switch_and_archive();
    let drill = agent.cli_json(&["backup", "drill", "--json"]);
    assert_eq!(drill["ok"], true, "{drill}");
    assert!(
        !pwned.exists(),
        "the drill ran the backup's recovery_end_command"
    );
    let dir = agent.restore_dir("copy");
    agent.cli_ok(&["restore", "--target-dir", dir.to_str().unwrap()]);
    let auto = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("recovery_end_command"), "{auto}");
    assert!(auto.contains("restore_command"), "{auto}");
    // This node's own access rules, not the archive's.
    assert_eq!(
        fs::read(dir.join("pg_hba.conf")).unwrap(),
        fs::read(agent.pgdata().join("pg_hba.conf")).unwrap()
    );
    let restored = crate::support::backup::RestoredPg::start(&dir);
    assert_eq!(restored.query("shop", "SELECT 1"), "1");
    drop(restored);
    assert!(
        !pwned.exists(),
        "the restore ran the backup's recovery_end_command"
    );
}

#[test]
fn a_new_replica_never_clones_from_a_tampered_backup() {
    let _turn = crate::support::cluster::one_cluster_at_a_time();
    let Some(etcd) = crate::support::etcd::EtcdServer::start() else {
        return;
    };
    let shared = crate::support::cluster::SharedRepository::new();
    let toml = |name: &str| shared.node_toml(&etcd, name);
    let node1 = TestAgent::start_with(&toml("node1"));
    crate::support::cluster::wait_leads(&node1, "node1");
    node1.cli_ok(&["tenant", "create", "shop"]);
    let id = node1.cli_json(&["backup", "run", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The bucket writer points the backup's data at a file list of their own.
    let path = shared.path().join(format!("repo/base/{id}/manifest"));
    let (header, mut body) = read_manifest(&path);
    body["files"].as_array_mut().unwrap().clear();
    write_manifest(&path, &header, &body);

    let node2 = TestAgent::start_with(&toml("node2"));
    let log = node2.log_contents();
    assert!(
        !log.contains("cloned from the backup repository"),
        "{}",
        node2.log_tail(30)
    );
    assert!(
        log.contains("is refused") && log.contains(&id),
        "{}",
        node2.log_tail(30)
    );
    crate::support::wait_for(
        std::time::Duration::from_secs(60),
        "node2 streams from the primary instead",
        || {
            let status = node1.cli_json(&["cluster", "status", "--json"]);
            (crate::support::cluster::streaming_replicas(&status) == 1).then_some(())
        },
    );
    drop((node2, node1));
}

// ---- what the attacker builds ----

fn archive_command(marker: &Path) -> Vec<u8> {
    format!(
        "archive_mode = 'on'\narchive_command = 'touch {0}'\nrestore_command = 'touch {0}'\n",
        marker.display()
    )
    .into_bytes()
}

/// A zstd tar whose entry names are written raw (the tar crate's own setters refuse
/// `..` and absolute paths; an attacker's tool does not).
fn hostile_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    zstd::bulk::compress(&builder.into_inner().unwrap(), 3).unwrap()
}

/// `base` → `outside_dir`, then a file through it.
fn symlink_tar(outside_dir: &Path, file: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, "base", outside_dir)
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(6);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, format!("base/{file}"), &b"pwned\n"[..])
        .unwrap();
    zstd::bulk::compress(&builder.into_inner().unwrap(), 3).unwrap()
}

/// A stored WAL object's header JSON and original bytes (the payload is plain zstd).
fn open_wal_object(object: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(&object[..8], b"PGPLWAL2");
    let len = u32::from_le_bytes(object[8..12].try_into().unwrap()) as usize;
    let header = object[12..12 + len].to_vec();
    let payload = &object[12 + len + 32..];
    let raw = zstd::stream::decode_all(payload).unwrap();
    (header, raw)
}

fn wal_object(magic: &[u8; 8], header: &[u8], tag: Option<[u8; 32]>, raw: &[u8]) -> Vec<u8> {
    let payload = zstd::bulk::compress(raw, 3).unwrap();
    let mut header: Value = serde_json::from_slice(header).unwrap();
    header["zstd_sha256"] = Value::String(hex(&Sha256::digest(&payload)));
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = magic.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    if let Some(tag) = tag {
        out.extend_from_slice(&tag);
    }
    out.extend_from_slice(&payload);
    out
}
