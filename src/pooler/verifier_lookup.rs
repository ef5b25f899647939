//! The connection the verifier lookup runs on: the agent's superuser, peer-authenticated
//! over PostgreSQL's unix socket, speaking the extended protocol directly. One lookup is
//! one Bind/Execute/Sync of a statement prepared when the connection opened: no client
//! library task, channel or row decoding between a login and its verifier, which made
//! the lookup about a fifth of the pooler's CPU per connection (README, Performance).

use std::path::Path;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::protocol::backend::{self, tag, BackendMessage};
use super::protocol::frontend::encode;
use super::protocol::startup::encode_startup_message;
use super::protocol::{split_frame, Frame};

/// The verifier of a role that may log in through the pooler.
const LOOKUP: &[u8] = b"SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 \
                        AND rolcanlogin AND NOT rolsuper \
                        AND (rolvaliduntil IS NULL OR rolvaliduntil > now())";

const STATEMENT: &[u8] = b"pgplatform_verifier";

/// Replies larger than this are not a verifier: the connection is dropped.
const MAX_REPLY: usize = 64 * 1024;

pub struct LookupConn {
    stream: UnixStream,
    read: BytesMut,
    write: BytesMut,
    broken: bool,
}

impl LookupConn {
    /// Connects as `user` to `dbname` with `options` (the pinned search_path) and
    /// prepares the lookup.
    pub async fn open(
        socket: &Path,
        user: &str,
        dbname: &str,
        options: &str,
    ) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connect to {}", socket.display()))?;
        let mut conn = LookupConn {
            stream,
            read: BytesMut::with_capacity(1024),
            write: BytesMut::with_capacity(256),
            broken: false,
        };
        let params = [
            ("user", user),
            ("database", dbname),
            ("options", options),
            ("application_name", "pgplatform-pooler-auth"),
        ];
        encode_startup_message(&mut conn.write, 0, &params);
        conn.send().await?;
        conn.until_ready(|frame| match frame.tag() {
            tag::AUTHENTICATION if frame.body().get(..4) != Some(&[0, 0, 0, 0]) => {
                bail!("PostgreSQL asked the verifier lookup for a password: it expects peer authentication over the socket")
            }
            _ => Ok(()),
        })
        .await
        .context("log in for the verifier lookup")?;
        encode::parse(&mut conn.write, STATEMENT, LOOKUP, &[]);
        encode::sync(&mut conn.write);
        conn.send().await?;
        conn.until_ready(|_| Ok(()))
            .await
            .context("prepare the verifier lookup")?;
        Ok(conn)
    }

    /// False once a read, a write or a reply failed: the caller opens a new connection.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// `rolpassword` of `role` if it may log in (NULL and no row both give `None`).
    pub async fn verifier(&mut self, role: &str) -> anyhow::Result<Option<String>> {
        let mut rest = BytesMut::with_capacity(16 + role.len());
        rest.put_i16(0); // parameters in text
        rest.put_i16(1);
        rest.put_i32(i32::try_from(role.len()).context("role name too long")?);
        rest.put_slice(role.as_bytes());
        rest.put_i16(0); // results in text
        encode::bind(&mut self.write, b"", STATEMENT, &rest);
        encode::execute(&mut self.write, b"", 0);
        encode::sync(&mut self.write);
        self.send().await?;
        let mut value = None;
        self.until_ready(|frame| {
            if frame.tag() == tag::DATA_ROW {
                value = first_column(frame.body())?;
            }
            Ok(())
        })
        .await?;
        Ok(value)
    }

    async fn send(&mut self) -> anyhow::Result<()> {
        let written = self.stream.write_all(&self.write).await;
        self.write.clear();
        if written.is_err() {
            self.broken = true;
        }
        written.context("write to PostgreSQL")
    }

    /// Reads replies up to ReadyForQuery, handing each to `each`; an ErrorResponse
    /// becomes the error (after ReadyForQuery, so the connection stays in step).
    async fn until_ready(
        &mut self,
        mut each: impl FnMut(&Frame) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut failure = None;
        loop {
            let frame = match self.next_frame().await {
                Ok(frame) => frame,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            match frame.tag() {
                tag::READY_FOR_QUERY => break,
                tag::ERROR_RESPONSE => {
                    let message = match backend::decode(&frame) {
                        Ok(BackendMessage::ErrorResponse(fields)) => {
                            fields.message().unwrap_or("unknown error").to_string()
                        }
                        _ => "malformed ErrorResponse".to_string(),
                    };
                    failure.get_or_insert(anyhow::anyhow!("PostgreSQL: {message}"));
                }
                _ => {
                    if let Err(e) = each(&frame) {
                        failure.get_or_insert(e);
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = split_frame(&mut self.read, MAX_REPLY)? {
                return Ok(frame);
            }
            if self.read.capacity() - self.read.len() < 512 {
                self.read.reserve(4096);
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                bail!("PostgreSQL closed the verifier lookup's connection");
            }
        }
    }
}

/// The first column of a DataRow body as text; `None` for NULL.
fn first_column(mut body: &[u8]) -> anyhow::Result<Option<String>> {
    if body.remaining() < 6 {
        bail!("malformed DataRow");
    }
    let _columns = body.get_i16();
    let length = body.get_i32();
    let Ok(length) = usize::try_from(length) else {
        return Ok(None);
    };
    let value = body.get(..length).context("malformed DataRow")?;
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::first_column;

    #[test]
    fn data_rows_give_text_or_null_and_truncation_is_an_error() {
        let row = [0, 1, 0, 0, 0, 3, b'a', b'b', b'c'];
        assert_eq!(first_column(&row).unwrap().as_deref(), Some("abc"));
        assert_eq!(first_column(&[0, 1, 255, 255, 255, 255]).unwrap(), None);
        assert!(first_column(&row[..7]).is_err());
        assert!(first_column(&[0, 1]).is_err());
    }
}
