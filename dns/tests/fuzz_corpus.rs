//! Replays the saved `dns_precheck` fuzz corpus (`fuzz/corpus/dns_precheck/`) through the
//! fuzz target's entry point, plus truncations and byte flips of every input.
//! `write_seeds` (ignored) regenerates the hand-made seeds.

use std::path::PathBuf;

use ferry_dns::fuzzing;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dns_precheck")
}

#[test]
fn dns_precheck_corpus() {
    let mut inputs = 0;
    for file in std::fs::read_dir(corpus()).unwrap() {
        let data = std::fs::read(file.unwrap().path()).unwrap();
        fuzzing::precheck(&data);
        for cut in 1..=13 {
            fuzzing::precheck(&data[..data.len().saturating_sub(cut)]);
        }
        for i in 0..data.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut mutated = data.clone();
                mutated[i] ^= flip;
                fuzzing::precheck(&mutated);
            }
        }
        inputs += 1;
    }
    assert!(inputs >= 3, "the corpus holds seeds");
}

#[test]
#[ignore = "writes the hand-made seeds into fuzz/corpus; run by hand"]
fn write_seeds() {
    let dir = corpus();
    std::fs::create_dir_all(&dir).unwrap();
    let query = |name: &str, rtype: RecordType| {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m.to_vec().unwrap()
    };
    std::fs::write(
        dir.join("a"),
        query("web.shop.svc.clusterset.local.", RecordType::A),
    )
    .unwrap();
    std::fs::write(
        dir.join("srv"),
        query("_http._tcp.web.shop.svc.clusterset.local.", RecordType::SRV),
    )
    .unwrap();
    let mut response = query("web.shop.svc.clusterset.local.", RecordType::A);
    response[2] |= 0x80;
    std::fs::write(dir.join("response"), response).unwrap();
    let mut bomb = query("x.", RecordType::A);
    bomb[6..12].copy_from_slice(&[0xff; 6]);
    std::fs::write(dir.join("count-bomb"), bomb).unwrap();
    // A compression pointer that points at itself.
    let mut looped = query("x.", RecordType::A);
    looped.truncate(12);
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    std::fs::write(dir.join("pointer-loop"), looped).unwrap();
}
