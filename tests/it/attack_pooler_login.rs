//! Attacks on the pooler's login, as an unauthenticated network client or a local user
//! would try them: huge messages before authentication, running the agent out of file
//! descriptors, enumerating roles by timing or by salt (across a restart), forging log
//! lines through a user name, and the unix socket's mode and a symlink planted at its path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::pooler::{runtime, sqlstate, startup_packet, try_connect, try_connect_config};
use crate::support::psql::PSQL;
use crate::support::{command, run, stderr_of, stdout_of, wait_for, TestAgent};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect_raw(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads one tagged message: (tag, body).
fn read_message(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
        .unwrap_or_default()
}

/// Sends the startup packet for `user` and reads the AuthenticationSASL request.
fn start_login(port: u16, user: &str) -> TcpStream {
    let mut stream = connect_raw(port);
    stream
        .write_all(&startup_packet(
            3,
            0,
            &[("user", user), ("database", "shop")],
        ))
        .unwrap();
    let (tag, body) = read_message(&mut stream).unwrap();
    assert_eq!(tag, b'R', "expected an authentication request");
    assert_eq!(
        &body[..4],
        &10i32.to_be_bytes(),
        "expected AuthenticationSASL"
    );
    stream
}

fn sasl_initial_response(client_first: &str) -> Vec<u8> {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(client_first.len() as i32).to_be_bytes());
    body.extend_from_slice(client_first.as_bytes());
    let mut message = vec![b'p'];
    message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

/// One probe as a role-enumerating attacker runs it: the time from the startup packet to
/// the server-first message, and that message.
fn probe_server_first(port: u16, user: &str) -> (Duration, String) {
    let mut stream = connect_raw(port);
    let started = Instant::now();
    stream
        .write_all(&startup_packet(
            3,
            0,
            &[("user", user), ("database", "shop")],
        ))
        .unwrap();
    let (tag, _) = read_message(&mut stream).unwrap();
    assert_eq!(tag, b'R');
    stream
        .write_all(&sasl_initial_response("n,,n=,r=probeprobeprobeprobe"))
        .unwrap();
    let (tag, body) = read_message(&mut stream).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &11i32.to_be_bytes(), "expected SASLContinue");
    (elapsed, String::from_utf8(body[4..].to_vec()).unwrap())
}

/// The `s=` and `i=` attributes of a server-first message.
fn salt_and_iterations(server_first: &str) -> (String, String) {
    let attribute = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {server_first}"))
            .to_owned()
    };
    (attribute("s="), attribute("i="))
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends the header of a message announcing `len` bytes, then streams up to 64 MiB of body.
/// Returns how many body bytes went out before the pooler shut the connection, and the
/// reply it sent.
fn send_huge(stream: &mut TcpStream, tag: u8, len: u32) -> (usize, Option<(u8, Vec<u8>)>) {
    let mut header = vec![tag];
    header.extend_from_slice(&len.to_be_bytes());
    stream.write_all(&header).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..64 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    (sent, read_message(stream).ok())
}

#[test]
fn before_authentication_no_large_or_unexpected_message_is_buffered() {
    let agent = TestAgent::start_with_shop("");
    let port = agent.pooler_port();
    let pid = agent.pid().unwrap();
    let rss_before = rss_kib(pid);

    // A 1 GiB Query (then a 1 GiB "password") before authentication: refused from the
    // header, so the body never piles up in the agent.
    for (tag, what) in [(b'Q', "Query"), (b'p', "password message")] {
        let mut stream = start_login(port, "shop");
        let (sent, reply) = send_huge(&mut stream, tag, 1 << 30);
        let (reply_tag, body) = reply.unwrap_or_else(|| panic!("no reply to a 1 GiB {what}"));
        assert_eq!(reply_tag, b'E', "a 1 GiB {what} was not refused");
        assert_eq!(error_code(&body), "08P01", "{what}");
        assert!(
            sent < 64 << 20,
            "the pooler kept reading a 1 GiB {what} ({sent} bytes taken)"
        );
    }
    // Small messages of the wrong kind are refused too.
    for tag in [b'Q', b'S', b'X', b'd'] {
        let mut stream = start_login(port, "shop");
        stream.write_all(&[tag, 0, 0, 0, 4]).unwrap();
        let (reply_tag, body) = read_message(&mut stream).unwrap();
        assert_eq!(
            (reply_tag, error_code(&body)),
            (b'E', "08P01".to_owned()),
            "{}",
            char::from(tag)
        );
    }
    // A startup packet over PostgreSQL's 10,000-byte limit is refused from its length.
    let mut stream = connect_raw(port);
    stream.write_all(&(10_001u32).to_be_bytes()).unwrap();
    stream.write_all(&[0, 3, 0, 0]).unwrap();
    let (reply_tag, body) = read_message(&mut stream).unwrap();
    assert_eq!((reply_tag, error_code(&body)), (b'E', "08P01".to_owned()));

    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "the agent's RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Nothing changed for tenants.
    let rt = runtime();
    rt.block_on(async {
        let client = try_connect(&agent.tenant_url("shop")).await.unwrap();
        client.simple_query("select 1").await.unwrap();
    });
}

fn nofile_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

fn set_nofile(pid: i32, soft: &str, hard: &str) {
    let out = run(
        command("/usr/bin/prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={soft}:{hard}")),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "prlimit: {}", stderr_of(&out));
}

fn accept_error_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("accept") && (l.contains("os error 24") || l.contains("Too many open files"))
        })
        .count()
}

#[test]
fn out_of_descriptors_the_pooler_pauses_logs_rarely_and_recovers() {
    let agent = TestAgent::start_with_shop("");
    let port = agent.pooler_port();
    let pid = agent.pid().unwrap();
    let (soft, hard) = nofile_limits(pid);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let log_start = agent.log_contents().len();
    set_nofile(pid, &(open + 30).to_string(), &hard);
    // Put the limit back however the test ends, so the agent can shut down cleanly.
    let _restore = RestoreNofile { pid, soft, hard };

    // More connections than descriptors left: the rest wait in the listen queue (128
    // deep) and every accept fails with EMFILE until some close.
    let hogs: Vec<TcpStream> = (0..100).map(|_| connect_raw(port)).collect();
    // The passage of time is under test: how many log lines 4 s of failing accepts make.
    std::thread::sleep(Duration::from_secs(4));
    let log = agent.log_contents()[log_start..].to_owned();
    let lines = accept_error_lines(&log);
    assert!(
        lines >= 1,
        "the agent never ran out of descriptors, so nothing was tested:\n{log}"
    );
    assert!(
        lines <= 2,
        "{lines} log lines about failed accepts in 4 s; expected one per interval:\n{}",
        log.lines()
            .filter(|l| l.contains("accept"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Once the connections close, the pooler serves again (under the same low limit).
    drop(hogs);
    let rt = runtime();
    let url = agent.tenant_url("shop");
    wait_for(
        Duration::from_secs(20),
        "a tenant login after the flood",
        || {
            rt.block_on(async {
                let client = try_connect(&url).await.ok()?;
                client.simple_query("select 1").await.ok()
            })
        },
    );
    assert!(
        agent.log_contents()[log_start..].contains("accepting connections again"),
        "no recovery line in the log"
    );
}

struct RestoreNofile {
    pid: i32,
    soft: String,
    hard: String,
}

impl Drop for RestoreNofile {
    fn drop(&mut self) {
        set_nofile(self.pid, &self.soft, &self.hard);
    }
}

#[test]
fn roles_cannot_be_enumerated_by_timing_salt_or_error_and_logs_cannot_be_forged() {
    let mut agent = TestAgent::start_with_shop("");
    let port = agent.pooler_port();
    let known = "shop";
    let unknown = "no_such_role_x";

    // Salts: an unknown role's is stable, shaped like a real one, and survives a restart.
    let (_, known_first) = probe_server_first(port, known);
    let (_, unknown_first) = probe_server_first(port, unknown);
    let known_salt = salt_and_iterations(&known_first);
    let unknown_salt = salt_and_iterations(&unknown_first);
    assert_eq!(
        salt_and_iterations(&probe_server_first(port, unknown).1),
        unknown_salt,
        "an unknown role's salt changes between tries"
    );
    assert_eq!(
        known_salt.0.len(),
        unknown_salt.0.len(),
        "salt lengths differ"
    );
    assert_eq!(known_salt.1, unknown_salt.1, "iteration counts differ");
    let key_file = agent.data_dir().join("run/scram_mock_key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    agent.restart();
    let port = agent.pooler_port();
    assert_eq!(
        salt_and_iterations(&probe_server_first(port, unknown).1),
        unknown_salt,
        "an unknown role's salt changed across a restart (a real role's does not)"
    );
    assert_eq!(
        salt_and_iterations(&probe_server_first(port, known).1),
        known_salt
    );

    // Timing: interleaved probes after a warm-up; medians within 10%.
    for _ in 0..20 {
        probe_server_first(port, known);
        probe_server_first(port, unknown);
    }
    let (mut known_times, mut unknown_times) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        known_times.push(probe_server_first(port, known).0);
        unknown_times.push(probe_server_first(port, unknown).0);
    }
    known_times.sort();
    unknown_times.sort();
    let (k, u) = (known_times[100], unknown_times[100]);
    println!("median time to server-first: known {k:?}, unknown {u:?}");
    let (fast, slow) = if k < u { (k, u) } else { (u, k) };
    assert!(
        slow.as_secs_f64() <= fast.as_secs_f64() * 1.10,
        "medians differ by more than 10%: known {k:?}, unknown {u:?}"
    );

    // Errors: the same SQLSTATE and message for a wrong password and an unknown role.
    let rt = runtime();
    rt.block_on(async {
        let wrong = agent.pooler_url(known, "not-the-password", "shop", "disable");
        let nobody = agent.pooler_url(unknown, "not-the-password", "shop", "disable");
        let answer = |url: String| async move {
            match try_connect(&url).await {
                Ok(_) => panic!("login to {url} succeeded"),
                Err(e) => (sqlstate(&e), crate::support::pooler::message(&e)),
            }
        };
        let (wrong_code, wrong_text) = answer(wrong).await;
        let (nobody_code, nobody_text) = answer(nobody).await;
        assert_eq!(
            (wrong_code.as_str(), nobody_code.as_str()),
            ("28P01", "28P01")
        );
        assert_eq!(
            wrong_text.replace(known, "ROLE"),
            nobody_text.replace(unknown, "ROLE")
        );
    });

    // Log injection: a user name carrying a newline and a forged log line.
    let log_start = agent.log_contents().len();
    let forged = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"tenant created","tenant":"pwned"}"#;
    rt.block_on(async {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user(format!("evil\n{forged}"))
            .password("x")
            .dbname("shop");
        assert!(try_connect_config(&config).await.is_err());
    });
    let log = wait_for(
        Duration::from_secs(10),
        "the failed login in the log",
        || {
            let log = agent.log_contents()[log_start..].to_owned();
            log.contains("evil\\n").then_some(log)
        },
    );
    for line in log.lines() {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not one JSON object ({e}): {line}"));
        assert_ne!(parsed["tenant"], "pwned", "a forged log line: {line}");
        assert!(!line.starts_with(forged), "a forged log line: {line}");
    }
}

/// `runuser -u postgres -- psql …` over the pooler's unix socket.
fn psql_as_postgres(
    agent: &TestAgent,
    user: &str,
    database: &str,
    sql: &str,
) -> std::process::Output {
    let mut cmd: Command = command("/usr/sbin/runuser");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSWORD", agent.secret("shop", "password"))
        .args([
            "-u",
            "postgres",
            "--",
            PSQL,
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
        ])
        .arg(agent.socket_dir())
        .arg("-p")
        .arg(agent.pooler_port().to_string())
        .args(["-U", user, "-d", database, "-c", sql]);
    run(&mut cmd, Duration::from_secs(30))
}

#[test]
fn the_postgres_user_reaches_the_pooler_socket_and_a_planted_symlink_is_not_followed() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (PostgreSQL runs as the postgres OS user)"
    );
    let mut agent = TestAgent::start_with_shop("");
    let socket = agent
        .socket_dir()
        .join(format!(".s.PGSQL.{}", agent.pooler_port()));
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o777, "socket mode");

    let tenant = psql_as_postgres(&agent, "shop", "shop", "select current_user");
    assert!(
        tenant.status.success(),
        "tenant over the socket: {}",
        stderr_of(&tenant)
    );
    assert_eq!(stdout_of(&tenant).trim(), "shop");
    // The postgres OS user is a platform operator on the socket (peer identity).
    let console = psql_as_postgres(&agent, "pgplatform", "pgbouncer", "SHOW VERSION");
    assert!(
        console.status.success(),
        "console over the socket: {}",
        stderr_of(&console)
    );

    // The postgres user plants a symlink where the pooler's socket goes, pointing at a
    // root-only file; the next start must neither chmod nor replace that file.
    agent.stop();
    let victim = agent.dir().join("victim");
    std::fs::write(&victim, b"root only").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _ = std::fs::remove_file(&socket);
    let out = run(
        command("/usr/sbin/runuser")
            .args(["-u", "postgres", "--", "ln", "-s"])
            .arg(&victim)
            .arg(&socket),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "plant the symlink: {}",
        stderr_of(&out)
    );
    agent.start_again();
    let victim_meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        victim_meta.permissions().mode() & 0o777,
        0o600,
        "the victim was chmodded"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"root only");
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    let again = psql_as_postgres(&agent, "shop", "shop", "select 1");
    assert!(
        again.status.success(),
        "after restart: {}",
        stderr_of(&again)
    );
}
