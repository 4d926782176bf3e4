//! Feeds arbitrary bytes, in arbitrary chunks, to the FCP decoder, the
//! typed parser and the session: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_fcp::replies::{connection_identifier, NodeHello};
use lichen_fcp::{ClientMessage, Decoder, Event, Limits, Session};

fuzz_target!(|data: &[u8]| {
    // First byte picks the chunk size and whether payloads are streamed.
    let (&ctl, input) = match data.split_first() {
        Some(x) => x,
        None => return,
    };
    let limits = Limits {
        max_line_bytes: 1024,
        max_fields: 64,
        max_header_bytes: 16 * 1024,
        max_data_length: 1 << 20,
        inline_data_limit: if ctl & 1 == 0 { 0 } else { 4096 },
    };
    let chunk = usize::from(ctl >> 1).max(1);
    let mut decoder = Decoder::new(limits);
    let mut session = Session::new(NodeHello::lichen(connection_identifier([7; 16]), vec![]));
    for piece in input.chunks(chunk) {
        decoder.feed(piece);
        loop {
            match decoder.next_event() {
                Ok(Some(Event::Message(m))) => {
                    let _ = ClientMessage::parse(&m);
                    let _ = session.handle(&m);
                    let _ = m.encode();
                }
                Ok(Some(Event::Header {
                    message,
                    data_length,
                })) => {
                    let _ = session.handle_header(&message, data_length);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = session.handle_decode_error(&e);
                    if e.is_fatal() {
                        return;
                    }
                }
            }
        }
    }
    let _ = decoder.finish();
});
