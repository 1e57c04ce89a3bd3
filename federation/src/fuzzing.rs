//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), also run over the saved corpora
//! by `tests/fuzz_corpus.rs` in the normal test command. Each takes arbitrary bytes, must
//! never panic, and checks the decoder's own promises (round trips, bounds). Not an API.

use crate::token::LinkToken;
use crate::wire::{encode_frame, FrameDecoder, JoinMessage, LinkMessage, TunnelHeader, MAX_HEADER};

/// Link and join frames: the bytes are fed in chunks whose sizes the first byte chooses;
/// every decoded message re-encodes into a frame that decodes to the same message.
pub fn link_frames(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut link = FrameDecoder::<LinkMessage>::new();
    let mut join = FrameDecoder::<JoinMessage>::new();
    for piece in rest.chunks(chunk) {
        link.push(piece);
        join.push(piece);
        while let Ok(Some(msg)) = link.next() {
            let mut again = FrameDecoder::<LinkMessage>::new();
            again.push(&encode_frame(&msg));
            assert_eq!(again.next(), Ok(Some(msg)), "a link message round-trips");
        }
        while let Ok(Some(msg)) = join.next() {
            let mut again = FrameDecoder::<JoinMessage>::new();
            again.push(&encode_frame(&msg));
            assert_eq!(again.next(), Ok(Some(msg)), "a join message round-trips");
        }
    }
}

/// The tunnel header: a decoded header never used more than [`MAX_HEADER`] bytes or more
/// than it was given, and re-encodes to bytes that decode to the same header.
pub fn tunnel_header(data: &[u8]) {
    if let Ok(Some((header, used))) = TunnelHeader::decode(data) {
        assert!(used <= data.len() && used <= MAX_HEADER);
        let mut out = Vec::new();
        header.encode(&mut out);
        let (again, n) = TunnelHeader::decode(&out)
            .expect("re-encoded header decodes")
            .expect("re-encoded header is complete");
        assert_eq!(again, header);
        assert_eq!(n, out.len());
    }
}

/// Link tokens: any text either fails with an error or decodes to a token whose encoding
/// decodes to the same token.
pub fn link_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = LinkToken::decode(text) {
        let again = LinkToken::decode(&token.encode()).expect("an encoded token decodes");
        assert_eq!(again.encode(), token.encode());
    }
}
