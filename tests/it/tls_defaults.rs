//! TLS where the network can reach: tenants' URLs require it once the pooler listens
//! beyond loopback, PostgreSQL serves the agent's certificate (and pg_hba.conf lets other
//! hosts in only over TLS), the generated certificate verifies with `verify-full`, and the
//! API can serve TLS with the CLI trusting exactly the agent's certificate.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::support::psql::{query, query_fails};
use crate::support::{mode, TestAgent};

#[test]
fn tenant_urls_require_tls_beyond_loopback_and_postgres_serves_it() {
    let agent = TestAgent::start_with("[pooler]\nlisten_addr = \"0.0.0.0\"\n");
    agent.cli_ok(&["tenant", "create", "shop"]);

    // The URL an application is given refuses to fall back to clear text…
    let url = agent.tenant_url("shop");
    assert!(url.ends_with("?sslmode=require"), "database_url: {url}");
    assert!(
        agent.secret("shop", "env").contains("PGSSLMODE=require"),
        "env file"
    );
    assert!(agent
        .secret("shop", "jdbc_url")
        .ends_with("&sslmode=require"));
    // …and works, over TLS.
    let conninfo = query(&url, "\\conninfo");
    assert!(conninfo.contains("SSL connection"), "{conninfo}");
    assert_eq!(query(&url, "select current_user"), "shop");

    // The generated certificate is its own issuer: verify-full with it as the root.
    let root = agent.data_dir().join("tls/server.crt");
    let verified = format!(
        "{}&sslmode=verify-full&sslrootcert={}",
        url.trim_end_matches("&sslmode=require")
            .trim_end_matches("?sslmode=require"),
        root.display()
    )
    .replacen("&sslmode=verify-full", "?sslmode=verify-full", 1);
    assert_eq!(query(&verified, "select current_user"), "shop");
    // Another certificate as the root: refused, so verify-full really checks.
    let other = agent.dir().join("other.crt");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    fs::write(&other, certified.cert.pem()).unwrap();
    let wrong_root = verified.replace(&root.display().to_string(), &other.display().to_string());
    let refused = query_fails(&wrong_root, "select 1");
    assert!(refused.contains("certificate"), "{refused}");

    // PostgreSQL serves TLS with a copy of the same certificate, private to its user.
    assert_eq!(agent.admin_psql("show ssl"), "on");
    let pgdata = agent.pgdata();
    let copied = pgdata.join("pgplatform-server.crt");
    assert_eq!(
        fs::read(&copied).unwrap(),
        fs::read(&root).unwrap(),
        "PostgreSQL serves the agent's certificate"
    );
    let key = pgdata.join("pgplatform-server.key");
    assert_eq!(mode(&key), 0o600, "{}", key.display());
    assert_eq!(
        fs::metadata(&key).unwrap().uid(),
        fs::metadata(&pgdata).unwrap().uid(),
        "the key belongs to PostgreSQL's user"
    );

    // Straight to PostgreSQL's TCP port with sslmode=require: TLS, and it works.
    let password = agent.secret("shop", "password");
    let direct = format!(
        "postgresql://shop:{}@127.0.0.1:{}/shop?sslmode=require",
        urlencode(&password),
        agent.pg_port()
    );
    assert_eq!(
        query(
            &direct,
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
        ),
        "t"
    );
    let direct_verified = format!(
        "{}&sslmode=verify-full&sslrootcert={}",
        direct.trim_end_matches("?sslmode=require"),
        root.display()
    )
    .replacen("&sslmode=verify-full", "?sslmode=verify-full", 1);
    assert_eq!(query(&direct_verified, "select current_user"), "shop");

    // A client at another address (127.0.0.2 is not one of this host's interface
    // addresses, so PostgreSQL's `samehost` does not cover it) is refused in clear text;
    // the same login from this host's own address gets in.
    let refused = plain_login_from([127, 0, 0, 2], agent.pg_port(), "shop", &password)
        .expect_err("a clear-text login from another address got in");
    assert!(
        refused.contains("pg_hba.conf rejects") && refused.contains("no encryption"),
        "{refused}"
    );
    plain_login_from([127, 0, 0, 1], agent.pg_port(), "shop", &password)
        .expect("a clear-text login from this host's own address");

    // Other hosts reach the tenant only over TLS: no line admits them in clear text.
    let hba = fs::read_to_string(pgdata.join("pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .any(|l| l.starts_with("hostssl") && l.contains("\"shop\"")),
        "{hba}"
    );
    for line in hba.lines().filter(|l| l.starts_with("host ")) {
        assert!(
            line.contains(" samehost ") || line.trim_end().ends_with("reject"),
            "a clear-text line for other hosts: {line}\n{hba}"
        );
    }
}

#[test]
fn the_api_serves_tls_and_the_cli_trusts_only_the_agents_certificate() {
    let agent = TestAgent::start_with("[api]\ntls = \"generated\"\nheader_timeout_seconds = 4\n");
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(agent.data_dir().join("run/agent.json")).unwrap())
            .unwrap();
    let api_url = info["api_url"].as_str().unwrap_or_default().to_owned();
    assert!(api_url.starts_with("https://"), "agent.json: {info}");
    let cert = agent.data_dir().join("tls/server.crt");
    assert_eq!(info["api_cert_file"], cert.display().to_string());

    // The log names the certificate's fingerprint (what HA member records pin).
    let der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(&cert).unwrap()
    };
    let fingerprint: String = {
        use sha2::Digest;
        sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert!(
        agent.log_contents().contains(&fingerprint),
        "the log does not show the API certificate's SHA-256 {fingerprint}"
    );

    // The CLI speaks TLS to it, pinned to that certificate.
    agent.cli_ok(&["tenant", "create", "shop"]);
    assert!(agent.cli_ok(&["tenant", "list"]).contains("shop"));

    // Clear text is not served.
    let plain = api_url.replacen("https://", "http://", 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
            .get(format!("{plain}/health"))
            .send()
            .await
    });
    assert!(
        answer.is_err(),
        "plain HTTP answered: {:?}",
        answer.map(|r| r.status())
    );

    // A client that never starts its TLS handshake is closed after the header timeout.
    let address = api_url.trim_start_matches("https://").to_owned();
    let closed_after = runtime.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), silent.read(&mut buf))
            .await
            .expect("the server closed the silent connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        started.elapsed()
    });
    assert!(
        closed_after >= std::time::Duration::from_millis(3500),
        "closed after {closed_after:?}, before the header timeout"
    );

    // A CLI told to trust another certificate refuses the agent (a man in the middle
    // looks just like this to it).
    let info_path = agent.data_dir().join("run/agent.json");
    let original = fs::read_to_string(&info_path).unwrap();
    let other = agent.dir().join("other.crt");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    fs::write(&other, certified.cert.pem()).unwrap();
    let mut forged = info.clone();
    forged["api_cert_file"] = other.display().to_string().into();
    fs::write(&info_path, forged.to_string()).unwrap();
    let refused = agent.cli_err(&["tenant", "list"]);
    assert!(refused.contains("certificate"), "{refused}");
    fs::write(&info_path, original).unwrap();
    assert!(agent.cli_ok(&["tenant", "list"]).contains("shop"));
}

/// Logs in to PostgreSQL without TLS from `source` (tokio-postgres over a socket bound
/// there); the server's error text if it refuses.
fn plain_login_from(source: [u8; 4], port: u16, user: &str, password: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut config = tokio_postgres::Config::new();
        config.user(user).password(password).dbname(user);
        let (client, connection) = config
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            })?;
        tokio::spawn(connection);
        client
            .simple_query("select 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
