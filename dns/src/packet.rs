//! Checks on raw DNS messages before anything parses them, and the few replies the server
//! writes by hand (header only, so they are never larger than the query).
//!
//! hickory's parser sizes its vectors from the header's counts; [`precheck`] rejects counts
//! the message cannot possibly hold, so a 12-byte packet claiming 65 535 records never turns
//! into a large allocation.

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;

/// What to do with a raw message before parsing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precheck {
    /// Parse and answer it.
    Parse,
    /// Answer FORMERR without parsing.
    FormErr,
    /// Drop it silently (too short to answer, or a response: never answer those).
    Drop,
}

/// Decides whether a raw message is worth parsing.
pub fn precheck(msg: &[u8]) -> Precheck {
    if msg.len() < HEADER_LEN {
        return Precheck::Drop;
    }
    if msg[2] & 0x80 != 0 {
        // QR set: a response. Answering those turns us into a reflector.
        return Precheck::Drop;
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    // RFC 9619: a query carries exactly one question.
    if qd != 1 {
        return Precheck::FormErr;
    }
    // The smallest question is 5 bytes (root name, type, class), the smallest record 11.
    let body = msg.len() - HEADER_LEN;
    if qd * 5 + (an + ns + ar) * 11 > body {
        return Precheck::FormErr;
    }
    Precheck::Parse
}

/// A header-only reply to `query` with `rcode` (and TC when `truncated`).
///
/// `query` must be at least [`HEADER_LEN`] bytes.
pub fn header_reply(query: &[u8], rcode: u8, truncated: bool) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = query[0];
    out[1] = query[1];
    // QR=1, opcode copied, AA=0, TC as asked, RD copied.
    out[2] = 0x80 | (query[2] & 0x78) | (query[2] & 0x01) | if truncated { 0x02 } else { 0 };
    out[3] = rcode & 0x0f;
    out
}

/// RCODE values written by hand.
pub mod rcode {
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Refused.
    pub const REFUSED: u8 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(qd: u16, an: u16, ns: u16, ar: u16, body: usize) -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x01, 0x00];
        for c in [qd, an, ns, ar] {
            m.extend_from_slice(&c.to_be_bytes());
        }
        m.resize(HEADER_LEN + body, 0);
        m
    }

    #[test]
    fn short_messages_and_responses_are_dropped() {
        assert_eq!(precheck(&[]), Precheck::Drop);
        assert_eq!(precheck(&[0; 11]), Precheck::Drop);
        let mut m = query(1, 0, 0, 0, 5);
        m[2] |= 0x80;
        assert_eq!(precheck(&m), Precheck::Drop);
    }

    #[test]
    fn question_count_must_be_one() {
        assert_eq!(precheck(&query(0, 0, 0, 0, 5)), Precheck::FormErr);
        assert_eq!(precheck(&query(2, 0, 0, 0, 10)), Precheck::FormErr);
        assert_eq!(precheck(&query(1, 0, 0, 0, 5)), Precheck::Parse);
    }

    #[test]
    fn counts_larger_than_the_message_are_refused_before_parsing() {
        assert_eq!(precheck(&query(1, 65535, 0, 0, 5)), Precheck::FormErr);
        assert_eq!(precheck(&query(1, 0, 0, 65535, 40)), Precheck::FormErr);
        assert_eq!(precheck(&query(1, 0, 0, 1, 16)), Precheck::Parse);
    }

    #[test]
    fn header_reply_copies_id_opcode_and_rd() {
        let q = query(1, 0, 0, 0, 5);
        let r = header_reply(&q, rcode::FORMERR, false);
        assert_eq!(&r[..2], &[0xab, 0xcd]);
        assert_eq!(r[2], 0x81);
        assert_eq!(r[3], 1);
        assert_eq!(&r[4..], &[0; 8]);
        assert_eq!(header_reply(&q, 0, true)[2], 0x83);
    }
}
