//! A server connection's socket: PostgreSQL's unix socket on this node, or TCP to the
//! primary on another node (HA). Same methods as tokio's streams, so callers do not care.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

pub enum ServerStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

pub enum ServerReadHalf<'a> {
    Unix(unix::ReadHalf<'a>),
    Tcp(tcp::ReadHalf<'a>),
}

pub enum ServerWriteHalf<'a> {
    Unix(unix::WriteHalf<'a>),
    Tcp(tcp::WriteHalf<'a>),
}

impl ServerStream {
    /// Borrowed halves, to read and write in one `select!` without locking.
    pub fn split(&mut self) -> (ServerReadHalf<'_>, ServerWriteHalf<'_>) {
        match self {
            ServerStream::Unix(s) => {
                let (r, w) = s.split();
                (ServerReadHalf::Unix(r), ServerWriteHalf::Unix(w))
            }
            ServerStream::Tcp(s) => {
                let (r, w) = s.split();
                (ServerReadHalf::Tcp(r), ServerWriteHalf::Tcp(w))
            }
        }
    }

    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Unix(s) => s.try_write(buf),
            ServerStream::Tcp(s) => s.try_write(buf),
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        match self {
            ServerStream::Unix(s) => s.as_raw_fd(),
            ServerStream::Tcp(s) => s.as_raw_fd(),
        }
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Unix(s) => s.try_read(buf),
            ServerStream::Tcp(s) => s.try_read(buf),
        }
    }
}

macro_rules! delegate_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Unix(s) => Pin::new(s).poll_flush(cx),
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(ServerStream);
delegate_read!(ServerReadHalf<'_>);
delegate_write!(ServerStream);
delegate_write!(ServerWriteHalf<'_>);
