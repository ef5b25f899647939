//! Pooler helpers: tokio-postgres clients with deadlines, the `pgbouncer` admin console, URLs
//! built from a tenant's secrets, and raw sockets for bad input.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, SimpleQueryMessage};

use super::TestAgent;

/// How long any one pooler round trip may take in these tests before they fail.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A runtime for one test: two workers, so a blocked helper never starves the clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Awaits `fut`, failing the test (naming `what`) if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// Runs blocking test code (psql, the CLI) from inside the runtime without stalling it.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Connects with tokio-postgres (no TLS; `sslmode=prefer` then stays plain).
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let config: Config = url.parse().unwrap();
    try_connect_config(&config).await
}

pub async fn try_connect_config(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let attempt = config.connect(NoTls);
    let (client, connection) = within(DEADLINE, "tokio-postgres login", attempt).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects or fails the test with the login error.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("login to {url}: {e:?}"))
}

/// Connects and forwards every NOTICE's message text to the returned channel.
pub async fn connect_with_notices(url: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let config: Config = url.parse().unwrap();
    let (client, mut connection) = within(DEADLINE, "tokio-postgres login", config.connect(NoTls))
        .await
        .unwrap_or_else(|e| panic!("login to {url}: {e:?}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    let _ = tx.send(notice.message().to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    (client, rx)
}

/// The SQLSTATE of an error, or `no sqlstate: …` when the server sent none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map_or_else(|| format!("no sqlstate: {e:?}"), |c| c.code().to_owned())
}

/// The server's error message (or the error's text when it is not a server error).
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// A result set from the simple query protocol, values as text.
#[derive(Debug)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn index(&self, column: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.columns))
    }

    /// The value of `column` in `row`.
    pub fn get<'a>(&self, row: &'a [Option<String>], column: &str) -> &'a str {
        row[self.index(column)].as_deref().unwrap_or("")
    }

    /// The rows whose `column` equals `value`.
    pub fn rows_where(&self, column: &str, value: &str) -> Vec<&Vec<Option<String>>> {
        let i = self.index(column);
        self.rows
            .iter()
            .filter(|r| r[i].as_deref() == Some(value))
            .collect()
    }
}

/// Runs one statement with the simple query protocol and returns its last result set.
pub async fn table(client: &Client, sql: &str) -> Result<Table, tokio_postgres::Error> {
    let messages = within(DEADLINE, sql, client.simple_query(sql)).await?;
    let mut table = Table {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                table.columns = columns.iter().map(|c| c.name().to_owned()).collect();
                table.rows.clear();
            }
            SimpleQueryMessage::Row(row) => table.rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => {}
        }
    }
    Ok(table)
}

/// The first column of the first row of `sql`'s result ("" for NULL); panics on error.
pub async fn one(client: &Client, sql: &str) -> String {
    let t = table(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let row = t.rows.first().unwrap_or_else(|| panic!("{sql}: no rows"));
    row[0].clone().unwrap_or_default()
}

/// Runs `sql` (simple protocol, no result wanted); panics on error.
pub async fn exec(client: &Client, sql: &str) {
    within(DEADLINE, sql, client.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// What a raw socket got back: the bytes, and whether the pooler closed the connection.
#[derive(Debug)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    pub closed: bool,
    pub elapsed: Duration,
}

impl RawReply {
    /// Whether the reply is (or starts with) an ErrorResponse.
    pub fn is_error(&self) -> bool {
        self.bytes.first() == Some(&b'E')
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Sends `bytes` on a fresh TCP connection to the pooler and reads until it closes or `wait`
/// has passed.
pub fn raw_exchange(port: u16, bytes: &[u8], wait: Duration) -> RawReply {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The pooler may close before reading everything: a failed write is an answer too.
    let _ = stream.write_all(bytes);
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while started.elapsed() < wait {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return RawReply {
                    bytes: received,
                    closed: true,
                    elapsed: started.elapsed(),
                }
            }
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return RawReply {
                    bytes: received,
                    closed: true,
                    elapsed: started.elapsed(),
                }
            }
        }
    }
    RawReply {
        bytes: received,
        closed: false,
        elapsed: started.elapsed(),
    }
}

/// A StartupMessage for protocol `major.minor` with `params`.
pub fn startup_packet(major: u16, minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&major.to_be_bytes());
    body.extend_from_slice(&minor.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// The pooler as the agent's tenants, their password and the admin console reach it.
impl TestAgent {
    /// Starts an agent with `extra_toml` and creates tenant `shop`.
    pub fn start_with_shop(extra_toml: &str) -> TestAgent {
        let agent = TestAgent::start_with(extra_toml);
        agent.cli_ok(&["tenant", "create", "shop"]);
        agent
    }

    /// A URL to the pooler over TCP with explicit credentials.
    pub fn pooler_url(&self, user: &str, password: &str, database: &str, sslmode: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}?sslmode={sslmode}",
            enc(user),
            enc(password),
            self.pooler_port(),
            enc(database)
        )
    }

    /// Where PostgreSQL's and the pooler's unix sockets live.
    pub fn socket_dir(&self) -> std::path::PathBuf {
        self.data_dir().join("run/socket")
    }

    /// The admin console over the unix socket, as the agent's OS user (peer-trusted).
    pub fn console_config(&self) -> Config {
        let mut config = Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.pooler_port())
            .user("pgplatform")
            .dbname("pgbouncer");
        config
    }

    /// PostgreSQL itself as the agent's superuser over the unix socket (peer-trusted).
    pub fn superuser_config(&self) -> Config {
        let mut config = Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.pg_port())
            .user("pgplatform")
            .dbname("pgplatform");
        config
    }

    /// The pooler over its unix socket as `user` with `password`, in `database`.
    pub fn pooler_unix_config(&self, user: &str, password: &str, database: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.pooler_port())
            .user(user)
            .password(password)
            .dbname(database);
        config
    }
}

/// Opens the admin console over the unix socket.
pub async fn console(agent: &TestAgent) -> Client {
    try_connect_config(&agent.console_config())
        .await
        .unwrap_or_else(|e| panic!("admin console login: {e:?}"))
}
