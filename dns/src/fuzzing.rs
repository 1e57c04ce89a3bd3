//! Entry point for the `dns_precheck` fuzz target in `fuzz/` (cargo-fuzz), also run over its
//! saved corpus by `tests/fuzz_corpus.rs`. Must never panic. Not an API.

use crate::packet::{header_reply, precheck as check, Precheck, HEADER_LEN};

/// A raw datagram through the precheck, then through hickory's parser when the precheck
/// lets it: what passes holds exactly one question and counts its length can hold, and a
/// FORMERR reply is never longer than the header.
pub fn precheck(data: &[u8]) {
    match check(data) {
        Precheck::Drop => {}
        Precheck::FormErr => {
            let reply = header_reply(data, 1, false);
            assert_eq!(reply.len(), HEADER_LEN);
            assert_eq!(reply[0..2], data[0..2], "the reply keeps the query's id");
        }
        Precheck::Parse => {
            assert!(data.len() >= HEADER_LEN);
            assert_eq!(u16::from_be_bytes([data[4], data[5]]), 1, "one question");
            let _ = hickory_proto::op::Message::from_vec(data);
        }
    }
}
