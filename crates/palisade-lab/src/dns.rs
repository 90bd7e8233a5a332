//! The lab's stand-in for cluster DNS.
//!
//! The rendered policies let every tenant pod reach kube-dns in
//! `kube-system` on port 53 and nothing else there. For the lab to exercise
//! those rules for real, something must answer on port 53 inside the lab's
//! `kube-system` namespace, with the lab's names, as CoreDNS would on a
//! cluster. This is that responder: authoritative for exactly the names it is
//! given, A and AAAA only. Anything else gets the answer an authoritative
//! server gives for data it does not hold (RFC 1035 §4.1.1, RFC 2308):
//! NXDOMAIN for unknown names, an empty NOERROR ("NODATA") for a known name
//! without records of the asked type.
//!
//! It answers over UDP and TCP, as RFC 7766 §5 requires of every DNS
//! server ("All general-purpose DNS implementations MUST support both UDP
//! and TCP transport"): a UDP answer longer than the client can take goes
//! out truncated with TC set (RFC 1035 §4.2.1), and the client asks again
//! over TCP, where each message carries a two-byte length prefix (RFC 1035
//! §4.2.2) and a connection may carry many queries (RFC 7766 §6.2.1). A
//! Service with more than a few dozen pods has no complete UDP answer, so
//! without TCP its clients would see no addresses at all.
//!
//! The wire format is hickory-proto's; this module only decides answers.
//! Names match case-insensitively (RFC 4343) and with or without the final
//! dot; the caller passes every form it wants answered (`svc`,
//! `svc.ns.svc.cluster.local`, ...), since this responder has no search list.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The names the responder answers for: name → its addresses (both
/// families; A queries get the IPv4 ones, AAAA the IPv6 ones).
pub type Names = BTreeMap<String, Vec<IpAddr>>;

/// Time-to-live of every answer: the default of CoreDNS's kubernetes
/// plugin (`ttl`, "The default is 5 seconds", coredns.io/plugins/kubernetes;
/// kubeadm's Corefile raises it to 30). Lab names change on `lab sync`.
pub const TTL: u32 = 5;

/// The largest reply without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_LIMIT: usize = 512;

/// The largest message the two-byte length prefix of TCP can carry
/// (RFC 1035 §4.2.2).
const TCP_LIMIT: usize = u16::MAX as usize;

/// How long an idle TCP connection is kept: RFC 7766 §6.2.3 recommends
/// timeouts "on the order of seconds".
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Answers DNS queries on `socket` from `names` until `shutdown` completes.
///
/// A datagram that is not a DNS query is answered with FORMERR when it
/// carries at least a message id, and otherwise dropped. Returns an error
/// only when the socket itself fails to receive.
pub async fn serve(
    socket: UdpSocket,
    names: Names,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let zone = Zone::new(names);
    let mut buf = vec![0u8; 65_535];
    tokio::pin!(shutdown);
    loop {
        let (len, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buf) => received?,
        };
        let Some(reply) = zone.reply(&buf[..len]) else {
            tracing::debug!(%peer, "dropped a datagram too short to be a DNS message");
            continue;
        };
        if let Err(error) = socket.send_to(&reply, peer).await {
            tracing::warn!(%peer, %error, "failed to send a DNS reply");
        }
    }
}

/// Answers DNS over TCP on `listener` from `names` until `shutdown`
/// completes: each connection may carry any number of length-prefixed
/// queries, answered in order, and is closed after [`TCP_IDLE`] without
/// one, on a malformed frame, or when the client closes it. Returns an
/// error only when accepting fails.
pub async fn serve_tcp(
    listener: TcpListener,
    names: Names,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let zone = Arc::new(Zone::new(names));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let zone = zone.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, &zone).await {
                tracing::debug!(%peer, %error, "DNS over TCP connection ended");
            }
        });
    }
}

/// One TCP connection: length-prefixed queries in, length-prefixed
/// answers out (RFC 1035 §4.2.2), until the client closes or idles.
async fn connection(mut stream: TcpStream, zone: &Zone) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            // The client closed between messages, or went quiet.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut query = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(reply) = zone.reply_with_limit(&query, TCP_LIMIT) else {
            return Ok(());
        };
        let mut frame = Vec::with_capacity(reply.len() + 2);
        frame.extend_from_slice(&u16::try_from(reply.len()).unwrap_or(u16::MAX).to_be_bytes());
        frame.extend_from_slice(&reply);
        stream.write_all(&frame).await?;
    }
}

/// The names, normalised for lookup.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl Zone {
    /// Normalises `names` (lower case, no final dot).
    pub fn new(names: Names) -> Self {
        let mut zone = Zone::default();
        for (name, addrs) in names {
            zone.names
                .entry(normalise(&name))
                .or_default()
                .extend(addrs);
        }
        zone
    }

    /// The reply to one UDP datagram, or `None` when it is too short to
    /// carry a message id (nothing can be answered to it). It fits in 512
    /// bytes, or the size the client's EDNS record offers (RFC 6891 §6.2.3).
    pub fn reply(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        let limit = Message::from_vec(datagram)
            .ok()
            .map_or(PLAIN_UDP_LIMIT, |q| {
                q.edns.as_ref().map_or(PLAIN_UDP_LIMIT, |e| {
                    usize::from(e.max_payload()).max(PLAIN_UDP_LIMIT)
                })
            });
        self.reply_with_limit(datagram, limit)
    }

    /// The reply to one message, truncated (TC set) when longer than
    /// `limit` bytes; `None` when it is too short to carry a message id.
    pub fn reply_with_limit(&self, message: &[u8], limit: usize) -> Option<Vec<u8>> {
        let Ok(query) = Message::from_vec(message) else {
            let id = u16::from_be_bytes([*message.first()?, *message.get(1)?]);
            return encode(
                Message::error_msg(id, OpCode::Query, ResponseCode::FormErr),
                0,
            );
        };
        encode(self.answer(&query), limit)
    }

    /// The response to a decoded message.
    fn answer(&self, query: &Message) -> Message {
        let mut reply = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        reply.metadata = Metadata::response_from_request(&query.metadata);
        reply.metadata.authoritative = true;
        if query.edns.is_some() {
            // RFC 6891 §6.1.1: a responder that understood an OPT record
            // includes one in its response.
            reply.edns = Some(Edns::new());
        }
        reply.metadata.response_code = self.fill(query, &mut reply);
        reply
    }

    /// Copies the question into `reply`, adds the answers, and says the
    /// response code.
    fn fill(&self, query: &Message, reply: &mut Message) -> ResponseCode {
        if query.metadata.message_type != MessageType::Query {
            return ResponseCode::FormErr;
        }
        if query.metadata.op_code != OpCode::Query {
            return ResponseCode::NotImp;
        }
        // RFC 9619: a query carries exactly one question.
        let [question] = query.queries.as_slice() else {
            return ResponseCode::FormErr;
        };
        reply.add_query(question.clone());
        if question.query_class() != DNSClass::IN {
            return ResponseCode::Refused;
        }
        let Some(addrs) = self.names.get(&normalise(&question.name().to_ascii())) else {
            return ResponseCode::NXDomain;
        };
        let name = question.name().clone();
        for addr in addrs {
            let rdata = match (question.query_type(), addr) {
                (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            reply.add_answer(Record::from_rdata(name.clone(), TTL, rdata));
        }
        ResponseCode::NoError
    }
}

/// Serialises `reply`; a reply longer than `limit` goes out truncated (TC
/// set, no records) so the client retries over TCP or gives up (RFC 1035
/// §4.2.1). `limit` 0 means no limit.
fn encode(reply: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = match reply.to_vec() {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "failed to encode a DNS reply");
            return None;
        }
    };
    if limit == 0 || bytes.len() <= limit {
        return Some(bytes);
    }
    reply.truncate().to_vec().ok()
}

/// Lower case, without the final dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn zone() -> Zone {
        Zone::new(Names::from([
            (
                "API.tenant-a.svc.cluster.local.".to_string(),
                vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
            ),
            ("api".to_string(), vec!["fd00::7".parse().unwrap()]),
        ]))
    }

    fn ask(zone: &Zone, name: &str, kind: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        Message::from_vec(&zone.reply(&q.to_vec().unwrap()).unwrap()).unwrap()
    }

    fn addrs(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn names_match_whatever_their_case_and_final_dot() {
        let m = ask(&zone(), "api.Tenant-A.svc.cluster.local", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(addrs(&m), ["10.0.0.7"]);
        let m = ask(&zone(), "api.tenant-a.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(addrs(&m), ["fd00::7"]);
    }

    #[test]
    fn a_known_name_without_that_family_is_nodata_not_nxdomain() {
        let m = ask(&zone(), "api", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask(&zone(), "api", RecordType::MX);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn unknown_names_are_nxdomain_and_garbage_is_formerr() {
        let m = ask(&zone(), "db.tenant-a.svc.cluster.local", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.queries.len(), 1);
        let m = Message::from_vec(&zone().reply(&[0x12, 0x34, 0xff]).unwrap()).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(zone().reply(&[0x12]).is_none());
    }

    #[test]
    fn an_answer_too_long_for_plain_udp_is_truncated() {
        let many = (0..64u16)
            .map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        let zone = Zone::new(Names::from([("big".to_string(), many)]));
        let m = ask(&zone, "big", RecordType::AAAA);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        // Over TCP the same answer is whole.
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("big").unwrap(),
            RecordType::AAAA,
        ));
        let tcp = zone.reply_with_limit(&q.to_vec().unwrap(), TCP_LIMIT);
        let m = Message::from_vec(&tcp.unwrap()).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 64);
    }
}
