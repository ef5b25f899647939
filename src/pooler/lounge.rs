//! Where idle clients wait without a task of their own. A task costs an idle client about
//! a kilobyte (tokio's task header, cache-line aligned, and the largest state of its
//! future); in a lounge it costs its `Client` and a `FuturesUnordered` entry. A few
//! lounge tasks (one per worker thread) each wait on many clients at once; when a
//! client's socket has bytes (or it times out, is killed, or the pooler drains), its
//! lounge spawns a task that serves it (`client::resume`), and that task puts the client
//! back into a lounge once it has been idle for a while.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use super::client::{self, Client, Woke, IDLE_READ};
use super::Pooler;

/// A client handed to a lounge, and when its client_idle_timeout ends.
pub struct Resting {
    pub client: Client,
    pub deadline: Option<Instant>,
}

pub type Inbox = mpsc::UnboundedReceiver<Resting>;
pub type Door = mpsc::UnboundedSender<Resting>;

/// One idle client's wait. `Unpin`, so that a lounge can take its waits out and put them
/// back (after a KILL) without boxing each.
struct Wait {
    client: Option<Client>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for Wait {
    type Output = (Client, Woke);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(client) = this.client.as_mut() else {
            // Already finished; FuturesUnordered never polls it again.
            return Poll::Pending;
        };
        let woke = if client.pooler().is_draining() {
            Woke::Draining
        } else if client.is_killed() {
            Woke::Killed
        } else if this
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            Woke::IdleTimeout
        } else {
            let read = client
                .stream
                .poll_read_when_ready(cx, &mut client.buf, IDLE_READ);
            match read {
                Poll::Ready(read) => Woke::Read(read),
                Poll::Pending => return Poll::Pending,
            }
        };
        match this.client.take() {
            Some(client) => Poll::Ready((client, woke)),
            None => Poll::Pending,
        }
    }
}

/// A lounge: waits on its clients until the pooler drains and the last one is gone.
pub async fn run(pooler: Arc<Pooler>, mut inbox: Inbox) {
    let mut kills = pooler.kills.subscribe();
    let mut waits = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            resting = inbox.recv(), if open => match resting {
                Some(Resting { client, deadline }) => waits.push(Wait {
                    client: Some(client),
                    timer: deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into()))),
                }),
                None => open = false,
            },
            Some((client, woke)) = waits.next() => {
                pooler.tracker.spawn(client::resume(client, woke));
            }
            changed = kills.changed() => {
                if changed.is_err() {
                    return;
                }
                // KILL or draining: every wait is polled again and sees whether it ends.
                waits = std::mem::take(&mut waits).into_iter().collect();
                if pooler.is_draining() {
                    // Clients still on their way in are taken, then the door stays shut.
                    inbox.close();
                }
            }
        }
        if !open && waits.is_empty() {
            return;
        }
    }
}
