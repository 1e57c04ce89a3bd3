//! The request handler: hickory-server's [`RequestHandler`] over the current [`Zone`], with
//! forwarding for names outside it.

use std::iter;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use ipnet::IpNet;

use crate::forward::Forwarder;
use crate::packet::{header_reply, rcode};
use crate::zone::{Lookup, Zone};

/// The EDNS payload size this server advertises and never exceeds over UDP (the DNS flag day
/// 2020 value, which avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// An unauthenticated UDP answer is at most this many times the size of its query.
pub const MAX_AMPLIFICATION: usize = 4;

/// The size limit of a UDP answer to a `query_len`-byte query that advertised
/// `client_payload` (512 without EDNS).
pub fn udp_answer_limit(query_len: usize, client_payload: u16) -> u16 {
    let amplification =
        u16::try_from(query_len.saturating_mul(MAX_AMPLIFICATION)).unwrap_or(u16::MAX);
    client_payload
        .clamp(512, MAX_UDP_PAYLOAD)
        .min(amplification)
}

/// Whether the additional section fits in a UDP answer. RFC 2181 section 9: when only
/// additional data does not fit, it is left out without setting TC.
fn additionals_fit(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    answers: &[Record],
    additionals: &[Record],
) -> bool {
    if additionals.is_empty() || request.protocol() != Protocol::Udp {
        return true;
    }
    let limit = udp_answer_limit(request.as_slice().len(), request.max_payload());
    let empty: &[Record] = &[];
    let trial = MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        answers,
        empty,
        empty,
        additionals,
    );
    let mut buf = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit);
    trial
        .destructive_emit(&mut encoder)
        .is_ok_and(|info| !info.truncation)
}

/// Answers the mesh zone from the current [`Zone`]; forwards or refuses everything else.
#[derive(Debug)]
pub struct MeshHandler {
    zone: RwLock<Arc<Zone>>,
    forwarder: Option<Forwarder>,
    forward_from: Vec<IpNet>,
}

impl MeshHandler {
    /// A handler serving `zone`, forwarding other names through `forwarder` for clients in
    /// `forward_from`.
    pub fn new(zone: Zone, forwarder: Option<Forwarder>, forward_from: Vec<IpNet>) -> MeshHandler {
        MeshHandler {
            zone: RwLock::new(Arc::new(zone)),
            forwarder,
            forward_from,
        }
    }

    /// The zone answers currently come from.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the zone; queries from now on see the new one.
    pub fn set_zone(&self, zone: Zone) {
        *self.zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
    }

    /// Whether `request` is answered without waiting on anything (no forwarding).
    pub fn answers_at_once(&self, request: &Request) -> bool {
        match request.queries.queries() {
            // Under the read lock: no second Arc clone of the zone on the UDP hot path.
            [q] => {
                self.forwarder.is_none()
                    || self
                        .zone
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_ours(q.name())
            }
            _ => true,
        }
    }

    /// Answers `request`, returning the encoded reply, at most `max_size` bytes (a larger
    /// answer is truncated with TC set).
    pub async fn respond(&self, request: &Request, max_size: u16) -> Vec<u8> {
        let reply = Reply::new(max_size);
        self.handle_request::<_, TokioTime>(request, reply.clone())
            .await;
        let bytes = reply.take();
        if bytes.is_empty() {
            header_reply(request.as_slice(), rcode::SERVFAIL, false).to_vec()
        } else {
            bytes
        }
    }

    fn may_forward(&self, src: IpAddr) -> bool {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        self.forward_from.iter().any(|net| net.contains(&src))
    }

    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        edns: Option<&Edns>,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::new(&request.queries, edns);
        let mut refused = Metadata::response_from_request(&request.metadata);
        refused.response_code = ResponseCode::Refused;
        let Some(forwarder) = &self.forwarder else {
            metrics::counter!("ferry_dns_refused_total", "reason" => "no_upstream").increment(1);
            return send(request, &mut response, builder.build_no_records(refused)).await;
        };
        if !self.may_forward(request.src().ip()) {
            metrics::counter!("ferry_dns_refused_total", "reason" => "recursion_not_allowed")
                .increment(1);
            return send(request, &mut response, builder.build_no_records(refused)).await;
        }
        let tcp = request.protocol() != Protocol::Udp;
        match forwarder.forward(request.as_slice(), tcp).await {
            Ok(reply) => {
                metrics::counter!("ferry_dns_forwarded_total", "result" => "answered").increment(1);
                send_forwarded(request, edns, &reply, response).await
            }
            Err(e) => {
                metrics::counter!("ferry_dns_forwarded_total", "result" => "failed").increment(1);
                tracing::debug!(error = %e, "forwarding failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                metadata.recursion_available = true;
                send(request, &mut response, builder.build_no_records(metadata)).await
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for MeshHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD).set_version(0);
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = self.forwarder.is_some();
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());

        let fail = |code: ResponseCode| {
            let mut metadata = metadata;
            metadata.response_code = code;
            metadata
        };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            let metadata = fail(ResponseCode::BADVERS);
            return send(request, &mut response, builder.build_no_records(metadata)).await;
        }
        if request.metadata.op_code != OpCode::Query {
            let metadata = fail(ResponseCode::NotImp);
            return send(request, &mut response, builder.build_no_records(metadata)).await;
        }
        let Ok(info) = request.request_info() else {
            let metadata = fail(ResponseCode::FormErr);
            return send(request, &mut response, builder.build_no_records(metadata)).await;
        };
        let query = info.query;
        let qtype = query.query_type();
        if matches!(qtype, RecordType::OPT) {
            let metadata = fail(ResponseCode::FormErr);
            return send(request, &mut response, builder.build_no_records(metadata)).await;
        }
        let zone = self.zone();
        if !zone.is_ours(query.name()) {
            return self.forward(request, edns.as_ref(), response).await;
        }
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            let metadata = fail(ResponseCode::Refused);
            return send(request, &mut response, builder.build_no_records(metadata)).await;
        }
        metadata.authoritative = true;
        let empty: &[Record] = &[];
        let message = match zone.lookup(query.name(), qtype) {
            Lookup::NotOurs => unreachable!("is_ours was checked"),
            Lookup::NotReady => {
                metadata.authoritative = false;
                metadata.response_code = ResponseCode::ServFail;
                builder.build(metadata, empty, empty, empty, empty)
            }
            Lookup::Answer {
                answers,
                additionals,
            } => {
                let additionals =
                    if additionals_fit(request, edns.as_ref(), metadata, answers, additionals) {
                        additionals
                    } else {
                        empty
                    };
                builder.build(metadata, answers, empty, empty, additionals)
            }
            Lookup::NoData { soa } => {
                builder.build(metadata, empty, empty, std::slice::from_ref(soa), empty)
            }
            Lookup::NxDomain { soa } => {
                metadata.response_code = ResponseCode::NXDomain;
                builder.build(metadata, empty, empty, std::slice::from_ref(soa), empty)
            }
        };
        send(request, &mut response, message).await
    }
}

/// Relays an upstream's reply under the client's ID and our EDNS.
async fn send_forwarded<R: ResponseHandler>(
    request: &Request,
    edns: Option<&Edns>,
    reply: &Message,
    mut response: R,
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = reply.metadata.response_code;
    metadata.authoritative = reply.metadata.authoritative;
    metadata.authentic_data = reply.metadata.authentic_data;
    metadata.recursion_available = true;
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    let message = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        iter::empty(),
        reply.additionals.iter(),
    );
    send(request, &mut response, message).await
}

async fn send<'a, R: ResponseHandler>(
    request: &Request,
    response: &mut R,
    message: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let fallback = *message.metadata();
    let code = fallback.response_code;
    let qtype = request.request_info().ok().map(|i| i.query.query_type());
    query_counter(qtype, code).increment(1);
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "response not sent");
            let mut metadata = fallback;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// `ferry_dns_queries_total{qtype,rcode}`, registered once per pair: the lookup by name and
/// labels costs more than the rest of a cached answer's bookkeeping. Both label sets are
/// fixed (types and codes outside them count as `OTHER`), whatever a client asks.
fn query_counter(qtype: Option<RecordType>, code: ResponseCode) -> &'static metrics::Counter {
    const QTYPES: [&str; 10] = [
        "A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "NS", "SOA", "ANY", "OTHER",
    ];
    const RCODES: [&str; 7] = [
        "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "OTHER",
    ];
    static COUNTERS: OnceLock<Vec<metrics::Counter>> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        QTYPES
            .iter()
            .flat_map(|q| {
                RCODES.iter().map(move |r| {
                    metrics::counter!("ferry_dns_queries_total", "qtype" => *q, "rcode" => *r)
                })
            })
            .collect()
    });
    let q = match qtype {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::SRV) => 2,
        Some(RecordType::PTR) => 3,
        Some(RecordType::TXT) => 4,
        Some(RecordType::CNAME) => 5,
        Some(RecordType::NS) => 6,
        Some(RecordType::SOA) => 7,
        Some(RecordType::ANY) => 8,
        _ => 9,
    };
    let r = match code {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::Refused => 3,
        ResponseCode::FormErr => 4,
        ResponseCode::NotImp => 5,
        _ => 6,
    };
    &counters[q * RCODES.len() + r]
}

/// A [`ResponseHandler`] that encodes the reply into a buffer, at most `max_size` bytes.
#[derive(Clone)]
struct Reply {
    max_size: u16,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Reply {
    fn new(max_size: u16) -> Reply {
        Reply {
            max_size,
            out: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.out.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::with_capacity(usize::from(self.max_size.min(1232)));
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(self.max_size);
        let info = response
            .destructive_emit(&mut encoder)
            .map_err(|e| NetError::from(e.to_string()))?;
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = buf;
        Ok(info)
    }
}
