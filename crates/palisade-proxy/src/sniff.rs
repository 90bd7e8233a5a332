//! Judges every request head on a client connection for ambiguous framing.
//!
//! hyper resolves a request that carries both `Content-Length` and
//! `Transfer-Encoding` itself: Transfer-Encoding wins, `Content-Length` is
//! dropped before the service sees the request, and the connection is closed
//! after the response (hyper 1.x, `proto/h1/role.rs`, `Server::parse`). The
//! proxy could not tell, yet the project answers such requests with 400 (RFC
//! 9112 section 6.3 allows it). So this reader wrapper follows the raw byte
//! stream the way hyper frames it: it skips the empty lines httparse skips
//! before a request line (RFC 9112 section 2.2), reads each head's length
//! headers, and skips each body by its `Content-Length` or by its chunked
//! framing, with the states of hyper's chunked decoder (`proto/h1/decode.rs`).
//! Every head is thus judged where it starts, however the bytes are split
//! across reads and however many heads one read holds (a pipelining client).
//!
//! hyper hands the requests of a connection to the service one at a time, in
//! the order of their heads, and only after reading the whole head. So the
//! handler asks about "the next head" by counting, and the verdict is always
//! ready when it asks.
//!
//! This runs on every byte a client sends, so it stays linear and
//! allocation-free: a whole header line is found with one search for LF and
//! its name compared in place (a line split across reads or holding a stray
//! CR goes through the byte-by-byte states once, names kept in a 17-byte
//! buffer), and body bytes are skipped by count, never looked at. If the stream stops making sense (a chunk-size line
//! hyper would refuse as well), nobody can tell where the next request starts:
//! every later request on the connection is refused.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the connection's reader and the request handler.
#[derive(Debug)]
pub struct HeadFlags {
    /// Index of the first head to refuse (`u64::MAX`: none so far).
    first_bad: AtomicU64,
    /// Requests handed to the service so far.
    taken: AtomicU64,
}

impl HeadFlags {
    fn new() -> Self {
        HeadFlags {
            first_bad: AtomicU64::new(u64::MAX),
            taken: AtomicU64::new(0),
        }
    }

    /// Whether the next request of the connection must be refused for
    /// ambiguous framing. Call exactly once per request, in order.
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.taken.fetch_add(1, Ordering::AcqRel);
        index >= self.first_bad.load(Ordering::Acquire)
    }
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
/// Longer names are neither of the two.
const NAME_MAX: usize = TRANSFER_ENCODING.len();

/// Where the scanner is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: CR and LF are skipped, as httparse does.
    Idle,
    /// The request line, up to its LF.
    RequestLine,
    /// Start of a header line: the name, lower-cased, until `:`.
    Name,
    /// Blanks after a name (hyper refuses those; still judged, to be safe).
    NameBlank,
    /// The rest of a line that does not matter, up to its LF.
    SkipLine,
    /// A `Content-Length` value.
    Length(Digits),
    /// Body bytes left.
    Body(u64),
    // Chunked body, named after hyper's `ChunkedState`.
    ChunkStart,
    ChunkSize,
    ChunkBlank,
    ChunkExtension,
    ChunkSizeLf,
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    /// A head was refused or the framing was lost: nothing more is judged.
    Stopped,
}

/// Progress through a `Content-Length` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digits {
    Before,
    In,
    After,
    Invalid,
}

/// The pure part: feed it the bytes of a client connection in order.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    state: State,
    /// Heads seen completely.
    heads: u64,
    first_bad: Option<u64>,
    name: [u8; NAME_MAX],
    name_len: usize,
    /// The current head's `Content-Length`, `Transfer-Encoding`, and whether
    /// its lengths were unreadable or differed.
    length: Option<u64>,
    chunked: bool,
    bad_length: bool,
    /// The number being read (a length value or a chunk size).
    number: u64,
}

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner {
            state: State::Idle,
            heads: 0,
            first_bad: None,
            name: [0; NAME_MAX],
            name_len: 0,
            length: None,
            chunked: false,
            bad_length: false,
            number: 0,
        }
    }
}

impl HeadScanner {
    /// Request heads seen completely so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Index (from 0) of the first head to refuse: ambiguous itself, or
    /// following a body whose framing could not be followed. Every later head
    /// is refused too.
    pub fn first_bad(&self) -> Option<u64> {
        self.first_bad
    }

    /// Scan the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some((&b, rest)) = data.split_first() {
            match self.state {
                State::Stopped => return,
                State::RequestLine | State::SkipLine => {
                    let Some(at) = data.iter().position(|&c| c == b'\n') else {
                        return;
                    };
                    self.line_start();
                    data = &data[at + 1..];
                }
                State::Body(left) | State::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = match (self.state, left - n) {
                        (State::Body(_), 0) => State::Idle,
                        (State::Body(_), rest) => State::Body(rest),
                        (_, 0) => State::ChunkDataCr,
                        (_, rest) => State::ChunkData(rest),
                    };
                }
                State::Name if self.name_len == 0 => {
                    // The usual case: a whole line in this read, judged in one
                    // go. Otherwise byte by byte to the end of the line (or of
                    // the read), so no byte is searched twice more.
                    let end = match data.iter().position(|&c| c == b'\n') {
                        Some(at) if self.header_line(&data[..at]) => {
                            data = &data[at + 1..];
                            continue;
                        }
                        Some(at) => at + 1,
                        None => data.len(),
                    };
                    for &c in &data[..end] {
                        self.step(c);
                    }
                    data = &data[end..];
                }
                _ => {
                    self.step(b);
                    data = rest;
                }
            }
        }
    }

    /// A whole line of a head, without its LF: what `step` would make of it
    /// byte by byte, in fewer steps. Returns false, having changed nothing,
    /// for a line with a CR where it matters, which `step` must then take.
    fn header_line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A line of CRs only is blank; only one starting with a CR can be.
        if line.first() == Some(&b'\r') {
            return false;
        }
        if line.is_empty() {
            self.end_of_head();
            return true;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            self.line_start();
            return true;
        };
        // Blanks may follow the name, not start or split it.
        let mut name = &line[..colon];
        while let [rest @ .., b' ' | b'\t'] = name {
            name = rest;
        }
        let value = &line[colon + 1..];
        let length = name.eq_ignore_ascii_case(CONTENT_LENGTH);
        if line[..colon].contains(&b'\r') || (length && value.contains(&b'\r')) {
            return false;
        }
        self.line_start();
        if name.iter().any(|&c| c == b' ' || c == b'\t') {
            return true;
        }
        if length {
            self.number = 0;
            self.state = State::Length(Digits::Before);
            for &c in value.iter().chain(b"\n") {
                if let State::Length(digits) = self.state {
                    self.length_byte(digits, c);
                }
            }
        } else if name.eq_ignore_ascii_case(TRANSFER_ENCODING) {
            self.chunked = true;
        }
        true
    }

    fn line_start(&mut self) {
        self.name_len = 0;
        self.state = State::Name;
    }

    /// One byte in a state that looks at every byte.
    fn step(&mut self, b: u8) {
        use State::*;
        self.state = match (self.state, b) {
            (Idle, b'\r' | b'\n') => Idle,
            (Idle, _) => RequestLine,
            (RequestLine | SkipLine, b'\n') => return self.line_start(),
            (RequestLine | SkipLine, _) => self.state,
            // CRs never count inside a head.
            (Name | NameBlank, b'\r') => self.state,
            (Name, b'\n') if self.name_len == 0 => return self.end_of_head(),
            (Name | NameBlank, b'\n') => return self.line_start(),
            (Name | NameBlank, b':') => self.name_done(),
            // A line starting with a blank (obsolete folding) names nothing.
            (Name, b' ' | b'\t') if self.name_len == 0 => SkipLine,
            (Name | NameBlank, b' ' | b'\t') => NameBlank,
            (Name, _) if self.name_len < NAME_MAX => {
                self.name[self.name_len] = b.to_ascii_lowercase();
                self.name_len += 1;
                Name
            }
            (Name | NameBlank, _) => SkipLine,
            (Length(digits), _) => return self.length_byte(digits, b),
            // `feed` skips bodies in bulk; byte by byte they count down.
            (Body(n), _) if n > 1 => Body(n - 1),
            (Body(_), _) => Idle,
            (ChunkData(n), _) if n > 1 => ChunkData(n - 1),
            (ChunkData(_), _) => ChunkDataCr,
            (Stopped, _) => Stopped,
            (ChunkStart | ChunkSize, _) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                let base = if self.state == ChunkStart {
                    0
                } else {
                    self.number
                };
                match base.checked_mul(16).and_then(|n| n.checked_add(digit)) {
                    Some(n) => {
                        self.number = n;
                        ChunkSize
                    }
                    None => return self.lose_framing(),
                }
            }
            (ChunkSize | ChunkBlank, b' ' | b'\t') => ChunkBlank,
            (ChunkSize | ChunkBlank, b';') => ChunkExtension,
            (ChunkSize | ChunkBlank | ChunkExtension, b'\r') => ChunkSizeLf,
            (ChunkExtension, b'\n') => return self.lose_framing(),
            (ChunkExtension, _) => ChunkExtension,
            (ChunkSizeLf, b'\n') if self.number == 0 => EndCr,
            (ChunkSizeLf, b'\n') => ChunkData(self.number),
            (ChunkDataCr, b'\r') => ChunkDataLf,
            (ChunkDataLf, b'\n') => ChunkStart,
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer,
            (EndLf, b'\n') => Idle,
            (
                ChunkStart | ChunkSize | ChunkBlank | ChunkSizeLf | ChunkDataCr | ChunkDataLf
                | TrailerLf | EndLf,
                _,
            ) => return self.lose_framing(),
        };
    }

    /// A header name ended at `:`.
    fn name_done(&mut self) -> State {
        let name = &self.name[..self.name_len];
        if name == CONTENT_LENGTH {
            self.number = 0;
            return State::Length(Digits::Before);
        }
        if name == TRANSFER_ENCODING {
            self.chunked = true;
        }
        State::SkipLine
    }

    /// One byte of a `Content-Length` value: digits between optional blanks.
    fn length_byte(&mut self, digits: Digits, b: u8) {
        use Digits::*;
        let next = match (digits, b) {
            (_, b'\n') => {
                match (digits, self.length) {
                    (In | After, Some(prev)) if prev != self.number => self.bad_length = true,
                    (In | After, _) => self.length = Some(self.number),
                    _ => self.bad_length = true,
                }
                return self.line_start();
            }
            (Invalid, _) => Invalid,
            (_, b'\r') => digits,
            (Before, b' ' | b'\t') => Before,
            (Before | In, b'0'..=b'9') => {
                match self
                    .number
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(b - b'0')))
                {
                    Some(n) => {
                        self.number = n;
                        In
                    }
                    None => Invalid,
                }
            }
            (In | After, b' ' | b'\t') => After,
            _ => Invalid,
        };
        self.state = State::Length(next);
    }

    /// The blank line ending a head: judge it, then expect its body.
    fn end_of_head(&mut self) {
        let index = self.heads;
        self.heads += 1;
        let (length, chunked, bad) = (self.length, self.chunked, self.bad_length);
        self.length = None;
        self.chunked = false;
        self.bad_length = false;
        if bad || (chunked && length.is_some()) {
            return self.stop(index);
        }
        self.state = match length {
            _ if chunked => State::ChunkStart,
            Some(n) if n > 0 => State::Body(n),
            _ => State::Idle,
        };
    }

    /// The body cannot be followed (hyper fails it too and closes the
    /// connection): whatever comes next cannot be judged.
    fn lose_framing(&mut self) {
        self.stop(self.heads);
    }

    fn stop(&mut self, first_bad: u64) {
        self.first_bad = Some(first_bad);
        self.state = State::Stopped;
    }
}

/// The wrapper.
#[derive(Debug)]
pub struct Sniffer<T> {
    inner: T,
    scanner: HeadScanner,
    flags: Arc<HeadFlags>,
}

impl<T> Sniffer<T> {
    /// Wrap a connection.
    pub fn new(inner: T) -> Self {
        Sniffer {
            inner,
            scanner: HeadScanner::default(),
            flags: Arc::new(HeadFlags::new()),
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

    fn scan(&mut self, data: &[u8]) {
        if self.scanner.state == State::Stopped {
            return;
        }
        self.scanner.feed(data);
        if let Some(index) = self.scanner.first_bad {
            self.flags.first_bad.store(index, Ordering::Release);
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
mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner's verdict after `chunks`, fed in order.
    fn scan(chunks: &[&[u8]]) -> (u64, Option<u64>) {
        let mut s = HeadScanner::default();
        for c in chunks {
            s.feed(c);
        }
        (s.heads(), s.first_bad())
    }

    fn first_bad(stream: &[u8]) -> Option<u64> {
        scan(&[stream]).1
    }

    #[test]
    fn both_length_headers_are_flagged_even_split_across_reads() {
        assert_eq!(
            scan(&[
                b"POST / HTTP/1.1\r\nContent-Len",
                b"gth: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            ]),
            (1, Some(0))
        );
        assert_eq!(
            first_bad(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            None
        );
        assert_eq!(
            first_bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
    }

    #[test]
    fn long_lines_and_crs_split_anywhere_do_not_confuse_the_scan() {
        let head = b"POST / HTTP/1.1\r\nX-Very-Long-Header-Name-Beyond-Twenty: \r\n\
                     CONTENT-LENGTH : 5\r\ntransfer-encoding: chunked\r\n\r\n";
        // Every split point, one byte at a time, and whole.
        for at in 0..head.len() {
            assert_eq!(
                scan(&[&head[..at], &head[at..]]).1,
                Some(0),
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(scan(&bytes).1, Some(0));
        // A line holding only a CR, split from its LF, still ends the head:
        // the next 5 bytes are its body, and the rest is a second, clean head.
        assert_eq!(
            scan(&[
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r",
                b"\nTransfer-Encoding: chunked\r\n\r\n"
            ]),
            (2, None)
        );
    }

    #[test]
    fn every_head_of_a_pipelined_read_is_judged() {
        let clean = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let sized = b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5;x=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        let bad = b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 5\r\n\
                    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let stream = [&clean[..], sized, chunked, b"\r\n", bad, clean].concat();
        assert_eq!(first_bad(&stream), Some(3));
        // Without the bad one, all five heads pass.
        let stream = [&clean[..], sized, chunked, b"\r\n", clean, clean].concat();
        assert_eq!(scan(&[&stream]), (5, None));
    }

    #[test]
    fn work_stays_linear_in_the_bytes_read() {
        // A line that never ends, or one full of CRs, must not be searched
        // again for every byte (16 MiB in one read: linear is milliseconds).
        for filler in [b'\r', b'a', b' '] {
            let mut stream = b"GET / HTTP/1.1\r\n".to_vec();
            stream.resize(16 << 20, filler);
            let start = std::time::Instant::now();
            let mut scanner = HeadScanner::default();
            scanner.feed(&stream);
            stream.push(b'\n');
            scanner.feed(&stream[stream.len() - 1..]);
            let took = start.elapsed();
            assert!(
                took < std::time::Duration::from_secs(5),
                "{filler}: {took:?}"
            );
        }
    }

    #[test]
    fn bodies_are_skipped_not_judged() {
        // After the blank line the body mentions both names: not a head.
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 43\r\n\r\n\
                       Content-Length: 1\r\nTransfer-Encoding: x\r\n\r\n\
                       GET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan(&[stream]), (2, None));
        let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       2b\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n\r\n0\r\n\r\n\
                       GET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan(&[stream]), (2, None));
    }

    #[test]
    fn leading_empty_lines_are_skipped_like_httparse_does() {
        let stream = b"\r\n\n\r\nPOST / HTTP/1.1\r\nContent-Length: 5\r\n\
                       Transfer-Encoding: chunked\r\n\r\n";
        assert_eq!(scan(&[stream]), (1, Some(0)));
    }

    #[test]
    fn unreadable_or_differing_lengths_and_broken_chunks_stop_the_scan() {
        for stream in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        ] {
            assert_eq!(first_bad(stream), Some(0), "{}", stream.escape_ascii());
        }
        // The same length twice is one length.
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length:2 \r\n\r\nhi"]),
            (1, None)
        );
        // A chunk-size line hyper refuses: the next head cannot be found.
        let lost = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(scan(&[lost]), (1, Some(1)));
    }

    proptest::proptest! {
        /// Any pipelined stream, split anywhere, is judged like the
        /// reference judges the whole stream at once.
        #[test]
        fn any_split_of_any_pipelined_stream_is_judged_like_the_whole(
            messages in proptest::collection::vec(reference::strategy::message(), 0..5),
            crlf in proptest::bool::ANY,
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let stream = reference::strategy::stream(&messages, crlf);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts {
                chunks.push(&stream[from..c]);
                from = c;
            }
            chunks.push(&stream[from..]);
            let want = reference::judge(&stream);
            proptest::prop_assert_eq!(
                scan(&chunks),
                want,
                "{} in {:?}",
                stream.escape_ascii(),
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
        }
    }
}
