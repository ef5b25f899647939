//! A client between its login and the task that serves it: the logged-in `Session`
//! that `login` hands to `client` (the relay) or `admin` (the console), the count it
//! carries, and the FATAL error any stage may end it with. Below all three, so that
//! none of them imports another's internals.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cancel::ClientInfo;
use super::pool_key::PoolKey;
use super::protocol::backend::encode as be;
use super::protocol::error_fields::{ErrorReport, Severity};
use super::protocol::sql_state::SqlState;
use super::stream::ClientStream;
use super::Pooler;

/// What a client may do on the admin console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminLevel {
    Stats,
    Admin,
}

/// An error for the client: sent as a FATAL ErrorResponse, then the connection closes.
#[derive(Debug)]
pub struct Fatal {
    pub code: SqlState,
    pub message: String,
}

pub fn fatal(code: SqlState, message: impl Into<String>) -> Fatal {
    Fatal {
        code,
        message: message.into(),
    }
}

/// How much of what a client still sends after its FATAL is read and dropped, and for
/// how long at most.
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Writes a FATAL error and closes; errors while doing so no longer matter.
pub async fn send_fatal(stream: &mut ClientStream, error: &Fatal) {
    let mut out = BytesMut::new();
    be::error_response(
        &mut out,
        &ErrorReport::new(Severity::Fatal, error.code, &error.message),
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
    linger(stream).await;
}

/// A client refused in the middle of sending (a message over `max_packet_size`) is still
/// writing it; closing now would fail its write, and many drivers then report a broken
/// pipe instead of reading the error. So what it still sends is read and dropped, up to
/// a bound, until it reads the error and hangs up.
async fn linger(stream: &mut ClientStream) {
    let mut scratch = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Ok(n @ 1..) = stream.read(&mut scratch).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// A logged-in client, handed to `client::start` or `admin::run`.
pub struct Session {
    pub stream: ClientStream,
    pub buf: BytesMut,
    pub key: Arc<PoolKey>,
    pub startup_params: Vec<(String, String)>,
    pub info: Arc<ClientInfo>,
    pub admin: Option<AdminLevel>,
    /// Counted against its database's max_db_client_connections (not console clients).
    pub admitted: Option<super::db_limits::AdmittedClient>,
}

/// Keeps `client_count` right however the client ends; a logged-in client carries it
/// from task to task.
pub struct Counted(pub Arc<Pooler>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.client_count.fetch_sub(1, Ordering::Relaxed);
    }
}
impl std::ops::Deref for Counted {
    type Target = Arc<Pooler>;
    fn deref(&self) -> &Arc<Pooler> {
        &self.0
    }
}
