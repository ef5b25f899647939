//! The few Redis commands the agent sends to a tenant's server (AUTH, PING, ACL SETUSER,
//! INFO), spoken in RESP2 over the server's unix socket. Replies are bounded: a line of
//! at most 64 KiB, a bulk string of at most 4 MiB, arrays at most two deep.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const MAX_LINE: usize = 64 << 10;
const MAX_BULK: usize = 4 << 20;
const MAX_ARRAY: usize = 4096;
/// How long one command may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, or the server's error as an error.
    pub fn text(self) -> anyhow::Result<String> {
        match self {
            Reply::Status(s) => Ok(s),
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Integer(n) => Ok(n.to_string()),
            Reply::Error(e) => bail!("redis answered: {e}"),
            other => bail!("unexpected reply from redis: {other:?}"),
        }
    }
}

/// A connection authenticated as the agent's admin user.
pub struct Connection {
    stream: BufReader<UnixStream>,
}

impl Connection {
    /// Connects to `socket` and authenticates as `user`.
    pub async fn open(socket: &Path, user: &str, password: &str) -> anyhow::Result<Connection> {
        let stream = tokio::time::timeout(TIMEOUT, UnixStream::connect(socket))
            .await
            .with_context(|| format!("connect to {}: timed out", socket.display()))?
            .with_context(|| format!("connect to {}", socket.display()))?;
        let mut connection = Connection {
            stream: BufReader::new(stream),
        };
        connection
            .command(&["AUTH", user, password])
            .await
            .context("authenticate to redis")?
            .text()
            .context("authenticate to redis")?;
        Ok(connection)
    }

    /// Sends one command and reads its reply (a Redis error is a `Reply::Error`).
    pub async fn command(&mut self, args: &[&str]) -> anyhow::Result<Reply> {
        tokio::time::timeout(TIMEOUT, async {
            self.stream.get_mut().write_all(&encode(args)).await?;
            read_reply(&mut self.stream, 0).await
        })
        .await
        .context("redis did not answer in time")?
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> anyhow::Result<String> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        bail!("redis closed the connection");
    }
    if !line.ends_with(b"\r\n") {
        bail!("redis sent a line longer than {MAX_LINE} bytes or cut short");
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).context("redis sent a line that is not UTF-8")
}

fn read_reply<'a, R: AsyncBufReadExt + Unpin + Send>(
    reader: &'a mut R,
    depth: usize,
) -> futures::future::BoxFuture<'a, anyhow::Result<Reply>> {
    Box::pin(async move {
        let line = read_line(reader).await?;
        let (kind, rest) = line.split_at(line.chars().next().map_or(0, char::len_utf8));
        let number = || -> anyhow::Result<i64> {
            rest.parse()
                .with_context(|| format!("redis sent a bad number: {rest:?}"))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(number()?),
            "$" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > MAX_BULK {
                    bail!("redis sent a reply of {len} bytes, more than {MAX_BULK}");
                }
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).await?;
                if !body.ends_with(b"\r\n") {
                    bail!("redis sent a bulk reply without its end");
                }
                body.truncate(len);
                Reply::Bulk(Some(body))
            }
            "*" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > MAX_ARRAY || depth >= 2 {
                    bail!("redis sent an array too large or too deep to read");
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(read_reply(reader, depth + 1).await?);
                }
                Reply::Array(Some(items))
            }
            _ => bail!("redis sent a reply of unknown type: {line:?}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> anyhow::Result<Reply> {
        let mut reader = BufReader::new(bytes);
        read_reply(&mut reader, 0).await
    }

    #[tokio::test]
    async fn replies_are_read_and_bounded() {
        assert_eq!(parse(b"+OK\r\n").await.unwrap(), Reply::Status("OK".into()));
        assert_eq!(
            parse(b"-WRONGPASS invalid\r\n").await.unwrap(),
            Reply::Error("WRONGPASS invalid".into())
        );
        assert_eq!(parse(b":42\r\n").await.unwrap(), Reply::Integer(42));
        assert_eq!(
            parse(b"$5\r\nhello\r\n").await.unwrap(),
            Reply::Bulk(Some(b"hello".to_vec()))
        );
        assert_eq!(parse(b"$-1\r\n").await.unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"*2\r\n:1\r\n$1\r\nx\r\n").await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(b"x".to_vec()))
            ]))
        );
        for bad in [
            &b"$999999999\r\n"[..],
            b"*3\r\n*1\r\n*1\r\n:1\r\n",
            b"?\r\n",
            b"+no end",
            b"$3\r\nab",
            b"",
        ] {
            assert!(parse(bad).await.is_err(), "{bad:?}");
        }
        assert_eq!(
            encode(&["AUTH", "u", "p w"]),
            b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\np w\r\n"
        );
    }
}
