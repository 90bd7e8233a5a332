//! Detects request heads that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper resolves that conflict itself (Transfer-Encoding wins, the connection is
//! closed afterwards) and drops `Content-Length` before the service sees the
//! request, so the proxy cannot tell. This reader wrapper looks at the raw bytes
//! of each request head (never at bodies) and flags the conflict, so the proxy
//! can answer 400 as RFC 9112 section 6.3 allows and the project requires.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the connection's reader and the request handler.
#[derive(Debug)]
pub struct HeadFlags {
    in_head: AtomicBool,
    ambiguous: AtomicBool,
}

impl HeadFlags {
    /// Whether the head just read had both length headers; clears the flag.
    pub fn take_ambiguous(&self) -> bool {
        self.ambiguous.swap(false, Ordering::AcqRel)
    }
}

/// Resets the reader to "expecting a head" when dropped (at the end of a request body).
#[derive(Debug)]
pub struct HeadReset(pub Arc<HeadFlags>);

impl Drop for HeadReset {
    fn drop(&mut self) {
        self.0.in_head.store(true, Ordering::Release);
    }
}

/// The wrapper.
#[derive(Debug)]
pub struct Sniffer<T> {
    inner: T,
    flags: Arc<HeadFlags>,
    /// Start of the current line, lower-cased, up to 20 bytes.
    line: [u8; 20],
    line_len: usize,
    line_bytes: usize,
    saw_cl: bool,
    saw_te: bool,
}

impl<T> Sniffer<T> {
    /// Wrap a connection.
    pub fn new(inner: T) -> Self {
        Sniffer {
            inner,
            flags: Arc::new(HeadFlags {
                in_head: AtomicBool::new(true),
                ambiguous: AtomicBool::new(false),
            }),
            line: [0; 20],
            line_len: 0,
            line_bytes: 0,
            saw_cl: false,
            saw_te: false,
        }
    }

    /// The flags to hand to the request handler.
    pub fn flags(&self) -> Arc<HeadFlags> {
        self.flags.clone()
    }

    /// The wrapped connection.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Scan bytes just read, if they belong to a head. Only this function
    /// clears `in_head` (at the blank line ending a head), so one check per
    /// read is enough.
    fn scan(&mut self, mut data: &[u8]) {
        if !self.flags.in_head.load(Ordering::Acquire) {
            return;
        }
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let segment = &data[..newline.unwrap_or(data.len())];
            // Only a line's first bytes can name a header; past them it is
            // enough to know that the line is not blank.
            let mut bytes = segment.iter();
            while self.line_len < self.line.len() {
                let Some(&b) = bytes.next() else { break };
                if b != b'\r' {
                    self.line[self.line_len] = b.to_ascii_lowercase();
                    self.line_len += 1;
                    self.line_bytes += 1;
                }
            }
            self.line_bytes += bytes.len();
            let Some(at) = newline else { return };
            // `line_bytes` counts the line without its CR.
            if self.line_bytes == 0 {
                if self.saw_cl && self.saw_te {
                    self.flags.ambiguous.store(true, Ordering::Release);
                }
                self.saw_cl = false;
                self.saw_te = false;
                self.line_len = 0;
                self.flags.in_head.store(false, Ordering::Release);
                return;
            }
            let name = &self.line[..self.line_len];
            if name.starts_with(b"content-length:") || name.starts_with(b"content-length ") {
                self.saw_cl = true;
            }
            if name.starts_with(b"transfer-encoding:") || name.starts_with(b"transfer-encoding ") {
                self.saw_te = true;
            }
            self.line_len = 0;
            self.line_bytes = 0;
            data = &data[at + 1..];
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniffer<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.scan(&buf.filled()[before..]);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniffer<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(chunks: &[&[u8]]) -> bool {
        let mut s = Sniffer::new(());
        for c in chunks {
            s.scan(c);
        }
        s.flags.take_ambiguous()
    }

    #[test]
    fn both_length_headers_are_flagged_even_split_across_reads() {
        assert!(sniff(&[
            b"POST / HTTP/1.1\r\nContent-Len",
            b"gth: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!sniff(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        ]));
        assert!(!sniff(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn long_lines_and_crs_split_anywhere_do_not_confuse_the_scan() {
        let head = b"POST / HTTP/1.1\r\nX-Very-Long-Header-Name-Beyond-Twenty: \r\n\
                     CONTENT-LENGTH : 5\r\ntransfer-encoding: chunked\r\n\r\n";
        // Every split point, one byte at a time, and whole.
        for at in 0..head.len() {
            assert!(sniff(&[&head[..at], &head[at..]]), "split at {at}");
        }
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert!(sniff(&bytes));
        // A line holding only a CR, split from its LF, still ends the head.
        assert!(!sniff(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r",
            b"\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    /// The rule, stated over a whole message at once: the head ends at the
    /// first line that is empty once CRs are dropped; it is ambiguous if any
    /// of its lines starts (case-insensitively, CRs dropped) with both names.
    fn reference(message: &[u8]) -> bool {
        let (mut cl, mut te) = (false, false);
        // Only lines ended by LF count: what follows the last one is unfinished.
        let mut lines: Vec<&[u8]> = message.split(|&b| b == b'\n').collect();
        lines.pop();
        for line in lines {
            let line: Vec<u8> = line
                .iter()
                .filter(|&&b| b != b'\r')
                .map(u8::to_ascii_lowercase)
                .collect();
            if line.is_empty() {
                return cl && te;
            }
            cl |= line.starts_with(b"content-length:") || line.starts_with(b"content-length ");
            te |=
                line.starts_with(b"transfer-encoding:") || line.starts_with(b"transfer-encoding ");
        }
        false // no end of head yet: nothing flagged
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_any_head_is_judged_like_the_whole(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    "GET http://a.test/ HTTP/1.1", "Content-Length: 5", "content-LENGTH : 1",
                    "Transfer-Encoding: chunked", "TRANSFER-ENCODING:x", "X-Content-Length: 1",
                    "X-A-Header-Name-Longer-Than-Twenty-Bytes: transfer-encoding:", "\r", "",
                    "Content-Length", "hello",
                ]),
                0..8,
            ),
            crlf in proptest::bool::ANY,
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let message: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
            let bytes = message.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts {
                chunks.push(&bytes[from..c]);
                from = c;
            }
            chunks.push(&bytes[from..]);
            proptest::prop_assert_eq!(sniff(&chunks), reference(bytes), "{:?} in {:?}", message, chunks);
        }
    }

    #[test]
    fn bodies_are_not_scanned() {
        // After the blank line the body mentions both names: not a head, not flagged.
        assert!(!sniff(&[b"POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"]));
    }
}
