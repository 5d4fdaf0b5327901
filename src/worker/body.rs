//! Response bodies: one concrete type (no boxing) for the two shapes the worker
//! sends, a buffer already in memory or a file streamed from disk.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from disk per frame when streaming.
const CHUNK: u64 = 256 * 1024;

#[derive(Debug)]
pub(super) enum Body {
    /// Sent in one frame; `None` once sent (and for HEAD and empty bodies).
    Full(Option<Bytes>),
    File(FileBody),
}

impl Body {
    pub(super) fn empty() -> Self {
        Body::Full(None)
    }

    pub(super) fn full(bytes: Bytes) -> Self {
        Body::Full(Some(bytes))
    }
}

/// Exactly `remaining` bytes of a file. The length was promised in
/// `Content-Length`, so a file that shrinks under us is an error (hyper then
/// aborts the connection rather than send a short body) and one that grows is
/// cut at the promised length.
#[derive(Debug)]
pub(super) struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    /// Reused across polls: a read that returns `Pending` keeps its buffer.
    buf: Vec<u8>,
}

impl FileBody {
    pub(super) fn new(file: tokio::fs::File, len: u64) -> Self {
        FileBody {
            file,
            remaining: len,
            buf: Vec::new(),
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(self.remaining.min(CHUNK)).unwrap_or(usize::MAX);
        if self.buf.len() != want {
            self.buf = vec![0; want];
        }
        let mut read = ReadBuf::new(&mut self.buf);
        ready!(Pin::new(&mut self.file).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being sent",
            ))));
        }
        self.remaining -= n as u64;
        let mut chunk = std::mem::take(&mut self.buf);
        chunk.truncate(n);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::File(file) => file.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Body::File(file) => file.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::File(file) => SizeHint::with_exact(file.remaining),
        }
    }
}
