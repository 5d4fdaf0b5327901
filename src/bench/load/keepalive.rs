//! The keep-alive client: HTTP/1.1 through hyper's client, one connection
//! per task, reused until it fails.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Version;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Failure, Target, Template};

/// One request on the task's kept-alive connection (opened if needed).
pub(super) async fn request(
    target: &Target,
    tpl: &Template,
    conn: &mut Option<http1::SendRequest<Empty<Bytes>>>,
    bytes: &Rc<Cell<u64>>,
) -> Result<hyper::StatusCode, Failure> {
    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => {
            let io = connect(target, bytes).await?;
            let (sender, driver) = http1::handshake::<_, Empty<Bytes>>(io)
                .await
                .map_err(Failure::Http)?;
            // The driver ends when the sender is dropped or the peer closes.
            tokio::task::spawn_local(async move {
                let _ = driver.await;
            });
            conn.insert(sender)
        }
    };
    sender.ready().await.map_err(Failure::Http)?;
    let resp = sender
        .send_request(tpl.request(Version::HTTP_11))
        .await
        .map_err(Failure::Http)?;
    drain(resp).await
}

/// A socket that counts the bytes read from it into a per-thread counter.
struct Counted<T> {
    inner: T,
    read: Rc<Cell<u64>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read.set(self.read.get() + n);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn connect(
    target: &Target,
    bytes: &Rc<Cell<u64>>,
) -> Result<TokioIo<Counted<TcpStream>>, Failure> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(Failure::Connect)?;
    // Requests are one small write; no reason to let Nagle hold one back.
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(Counted {
        inner: stream,
        read: Rc::clone(bytes),
    }))
}

/// Read a response body to its end, discarding it (the bytes are counted by
/// the socket wrapper).
async fn drain(resp: hyper::Response<hyper::body::Incoming>) -> Result<hyper::StatusCode, Failure> {
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(Failure::Http)?;
    }
    Ok(status)
}
