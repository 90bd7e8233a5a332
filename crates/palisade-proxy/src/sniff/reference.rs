//! The head sniffer's rule, written over a whole stream at once and as plainly
//! as possible, to check the incremental scanner against (the property test
//! in `sniff.rs` and the `head_sniffer` fuzz target include this file).
//!
//! The rule follows how hyper 1.x frames requests: httparse skips CR and LF
//! before a request line; a head ends at its first line that is empty once
//! CRs are dropped; a body is chunked if the head has `Transfer-Encoding`, else
//! `Content-Length` bytes long, else empty; chunked framing is that of hyper's
//! chunked decoder (`proto/h1/decode.rs`). A head is refused when it has both
//! length headers, or a `Content-Length` that is unreadable or differs from
//! another. When a chunked body breaks that framing, the heads after it are
//! refused. Header names are the bytes before `:`, blanks after them allowed,
//! compared case-insensitively; lines starting with a blank name nothing.

/// Why reading stopped.
enum Halt {
    /// The stream ends before the message does.
    Incomplete,
    /// The bytes cannot be framed.
    Lost,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Halt> {
        self.bytes.get(self.at).copied().ok_or(Halt::Incomplete)
    }

    fn next(&mut self) -> Result<u8, Halt> {
        let b = self.peek()?;
        self.at += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), Halt> {
        if self.next()? == want {
            Ok(())
        } else {
            Err(Halt::Lost)
        }
    }

    /// The next line without its LF and without any CR.
    fn line(&mut self) -> Result<Vec<u8>, Halt> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Halt::Incomplete)?;
        self.at += end + 1;
        Ok(rest[..end]
            .iter()
            .copied()
            .filter(|&b| b != b'\r')
            .collect())
    }

    fn skip(&mut self, n: u64) -> Result<(), Halt> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(Halt::Incomplete);
        }
        self.at += n as usize;
        Ok(())
    }
}

/// Blanks (SP, HTAB) trimmed from both ends; CRs are gone already.
fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What a head says about framing.
#[derive(Default)]
struct Framing {
    lengths: Vec<Option<u64>>,
    chunked: bool,
}

fn header(line: &[u8], framing: &mut Framing) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let name = line[..colon].to_ascii_lowercase();
    let name = trim_blanks(&name);
    if name.is_empty()
        || line[0] == b' '
        || line[0] == b'\t'
        || name.contains(&b' ')
        || name.contains(&b'\t')
    {
        return;
    }
    let value = trim_blanks(&line[colon + 1..]);
    if name == b"content-length" {
        let number = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok());
        framing.lengths.push(number);
    } else if name == b"transfer-encoding" {
        framing.chunked = true;
    }
}

fn chunked_body(c: &mut Cursor<'_>) -> Result<(), Halt> {
    loop {
        let mut size: u64 = 0;
        let mut digits = 0;
        while c.peek()?.is_ascii_hexdigit() {
            let d = u64::from((c.next()? as char).to_digit(16).unwrap_or(0));
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(d))
                .ok_or(Halt::Lost)?;
            digits += 1;
        }
        if digits == 0 {
            return Err(Halt::Lost);
        }
        while matches!(c.peek()?, b' ' | b'\t') {
            c.next()?;
        }
        if c.peek()? == b';' {
            while c.peek()? != b'\r' {
                if c.next()? == b'\n' {
                    return Err(Halt::Lost);
                }
            }
        }
        c.expect(b'\r')?;
        c.expect(b'\n')?;
        if size == 0 {
            break;
        }
        c.skip(size)?;
        c.expect(b'\r')?;
        c.expect(b'\n')?;
    }
    // Trailer lines, each ended by CRLF, until an empty one.
    while c.peek()? != b'\r' {
        while c.next()? != b'\r' {}
        c.expect(b'\n')?;
    }
    c.expect(b'\r')?;
    c.expect(b'\n')
}

/// One head from `c`: its framing (chunked, length), or `None` if refused.
fn head(c: &mut Cursor<'_>) -> Result<Option<(bool, u64)>, Halt> {
    while matches!(c.peek()?, b'\r' | b'\n') {
        c.next()?;
    }
    let _request_line = c.line()?;
    let mut framing = Framing::default();
    loop {
        let line = c.line()?;
        if line.is_empty() {
            break;
        }
        header(&line, &mut framing);
    }
    let first = framing.lengths.first().copied().flatten();
    let readable = framing.lengths.iter().all(|l| l.is_some() && *l == first);
    if !readable || (framing.chunked && first.is_some()) {
        return Ok(None);
    }
    Ok(Some((framing.chunked, first.unwrap_or(0))))
}

/// Heads seen completely in `stream`, and the index of the first refused one.
pub fn judge(stream: &[u8]) -> (u64, Option<u64>) {
    let mut c = Cursor {
        bytes: stream,
        at: 0,
    };
    let mut heads = 0;
    loop {
        let (chunked, length) = match head(&mut c) {
            Err(_) => return (heads, None),
            Ok(None) => return (heads + 1, Some(heads)),
            Ok(Some(framing)) => framing,
        };
        heads += 1;
        let body = if chunked {
            chunked_body(&mut c)
        } else {
            c.skip(length)
        };
        match body {
            Ok(()) => {}
            Err(Halt::Incomplete) => return (heads, None),
            Err(Halt::Lost) => return (heads, Some(heads)),
        }
    }
}

/// Pipelined streams for the property test.
#[cfg(test)]
pub mod strategy {
    use proptest::prelude::*;

    /// How a message's body is made.
    #[derive(Debug, Clone)]
    pub enum Body {
        /// Framed as the head's first length header says (pattern index for chunked).
        Fit(usize),
        /// Whatever these bytes are.
        Raw(&'static str),
    }

    /// One request of a pipelined stream.
    #[derive(Debug, Clone)]
    pub struct Message {
        lead: &'static str,
        request: &'static str,
        headers: Vec<&'static str>,
        body: Body,
    }

    const HEADERS: &[&str] = &[
        "Host: a.test",
        "Content-Length: 5",
        "content-LENGTH : 12",
        "Content-Length: 0",
        "Content-Length:  40 ",
        "Content-Length: x",
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        "TRANSFER-ENCODING:gzip, chunked",
        "X-Content-Length: 1",
        " folded: content-length: 3",
        "X-A-Header-Name-Longer-Than-Twenty-Bytes: transfer-encoding:",
        "Content-Length",
        "hello",
        "\r",
        "",
        "\r\r",
        "Content-\rLength: 5",
        "Content-Length:\r 5",
        "Transfer-Encoding\t:\rchunked",
        "X-A: b\rc",
        "content-length: 5, 5",
        "Content-Length: 05",
    ];
    const CHUNKED: &[&str] = &[
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "3;ext=\"a\"\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
        "2b \r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n\r\n0\r\n\r\n",
        "A\r\n0123456789\r\n0\r\n\r\n",
    ];
    const RAW: &[&str] = &[
        "",
        "hello",
        "0\r\n\r\n",
        "zz\r\n",
        "\r\n",
        "Content-Length: 1\r\nTransfer-Encoding: x\r\n\r\n",
    ];
    /// Body bytes that look like heads.
    const FILLER: &str =
        "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n";

    pub fn message() -> impl Strategy<Value = Message> {
        (
            prop::sample::select(vec!["", "\r\n", "\n\r\n"]),
            prop::sample::select(vec!["GET http://a.test/ HTTP/1.1", "POST / HTTP/1.1"]),
            prop::collection::vec(prop::sample::select(HEADERS.to_vec()), 0..5),
            prop_oneof![
                3 => (0..CHUNKED.len()).prop_map(Body::Fit),
                1 => prop::sample::select(RAW.to_vec()).prop_map(Body::Raw),
            ],
        )
            .prop_map(|(lead, request, headers, body)| Message {
                lead,
                request,
                headers,
                body,
            })
    }

    /// The bytes of `messages`, head lines ended by CRLF or LF.
    pub fn stream(messages: &[Message], crlf: bool) -> Vec<u8> {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut out = String::new();
        for m in messages {
            out.push_str(m.lead);
            out.push_str(m.request);
            out.push_str(eol);
            for h in &m.headers {
                out.push_str(h);
                out.push_str(eol);
            }
            out.push_str(eol);
            match m.body {
                Body::Raw(raw) => out.push_str(raw),
                Body::Fit(pattern) => out.push_str(&fit(&m.headers, pattern)),
            }
        }
        out.into_bytes()
    }

    fn fit(headers: &[&str], pattern: usize) -> String {
        let lower: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        if lower.iter().any(|h| h.starts_with("transfer-encoding")) {
            return CHUNKED[pattern].to_string();
        }
        let length = lower.iter().find_map(|h| {
            let v = h
                .strip_prefix("content-length")?
                .trim_start()
                .strip_prefix(':')?;
            v.trim().parse::<usize>().ok()
        });
        FILLER.repeat(3)[..length.unwrap_or(0)].to_string()
    }
}
