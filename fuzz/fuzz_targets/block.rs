//! Block verification and decryption: never panics, and full-size blocks
//! reach every path.
//!
//! Random bytes almost never form a 32 786-byte CHK block that verifies,
//! so the input is a recipe: the target builds a VALID block from a few
//! bytes with lichen-crypto, then damages the part the input chooses.
//!
//! ```text
//! input = mode (u8) || params || edits
//! mode 0  CHK: data len (u16, mod 32 769) || fill (u8) || key (u8: 0 = convergent)
//! mode 1  SSK: secret (u8) || data len (u16, mod 1 025) || fill || flags (u8) || docname len (u8) || docname
//! mode 2  CHK encrypted by hand: trailer (u16) || fill (u8) (a wrong length trailer under a valid tag)
//! mode 3  the rest of the input taken as a block, as it is (wrong lengths, garbage)
//! edits   (position u16 || xor u8)*, xor 0 = cut the block there
//! ```
//!
//! An unedited block must verify and decode to what was encoded; an edited
//! one must be refused by verification.
#![no_main]
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use libfuzzer_sys::fuzz_target;
use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::{chk, ssk, verify_block, BlockKind, Codec, DataFlags, RoutingKey};

/// Reads the recipe; a short input reads as zeros.
struct Recipe<'a>(&'a [u8]);

impl Recipe<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
}

/// Applies the edits; true if the block changed.
fn edit(block: &mut Vec<u8>, r: &mut Recipe<'_>) -> bool {
    let original = block.clone();
    while !r.0.is_empty() {
        let at = usize::from(r.u16()) % (block.len() + 1);
        match r.u8() {
            0 => block.truncate(at),
            x => {
                if let Some(b) = block.get_mut(at) {
                    *b ^= x;
                }
            }
        }
    }
    *block != original
}

fn flags(b: u8) -> DataFlags {
    DataFlags {
        metadata: b & 1 == 1,
        codec: if b & 2 == 0 { Codec::None } else { Codec::Zstd },
    }
}

fn chk_case(r: &mut Recipe<'_>) {
    let len = usize::from(r.u16()) % (chk::PAYLOAD_LEN + 1);
    let data = vec![r.u8(); len];
    let key_byte = r.u8();
    let encoded = if key_byte == 0 {
        chk::encode(&data, flags(key_byte))
    } else {
        chk::encode_with_key(&data, flags(key_byte), [key_byte; 32])
    };
    let Ok((key, mut block)) = encoded else {
        panic!("a CHK of at most 32 KiB must encode")
    };
    assert_eq!(block.len(), chk::BLOCK_LEN);
    let _ = chk::parse_extra(&key.extra());
    if edit(&mut block, r) {
        assert!(verify_block(BlockKind::Chk, &key.routing_key, &block).is_err());
        assert!(chk::decode(&key, &block).is_err());
        // What a node holding the key but skipping the hash would see.
        assert!(chk::decrypt(&key.crypto_key, &block).is_err());
    } else {
        assert!(verify_block(BlockKind::Chk, &key.routing_key, &block).is_ok());
        assert_eq!(chk::decode(&key, &block).ok(), Some(data));
    }
}

fn ssk_case(r: &mut Recipe<'_>) {
    let k = SskPrivate::from_parts([r.u8(); 32], [7; 32]);
    let len = usize::from(r.u16()) % (ssk::PAYLOAD_LEN + 1);
    let data = vec![r.u8(); len];
    let f = flags(r.u8());
    let n = usize::from(r.u8() % 16);
    let docname: String = (0..n).map(|_| char::from(b'a' + r.u8() % 26)).collect();
    let Ok((rk, mut block)) = k.encode(&docname, &data, f) else {
        panic!("an SSK of at most 1 KiB must encode")
    };
    let public = k.public();
    if edit(&mut block, r) {
        assert!(public.decode(&docname, &block).is_err());
        let _ = verify_block(BlockKind::Ssk, &rk, &block);
    } else {
        assert!(verify_block(BlockKind::Ssk, &rk, &block).is_ok());
        assert_eq!(public.decode(&docname, &block).ok(), Some((f, data)));
    }
    // Another document name or another subspace must not open it.
    assert!(public.decode(&format!("{docname}x"), &block).is_err());
}

fn trailer_case(r: &mut Recipe<'_>) {
    let trailer = r.u16();
    let mut buf = vec![r.u8(); chk::PAYLOAD_LEN];
    buf.extend_from_slice(&trailer.to_be_bytes());
    let crypto_key = [9u8; 32];
    let Ok(tag) = ChaCha20Poly1305::new(Key::from_slice(&crypto_key)).encrypt_in_place_detached(
        Nonce::from_slice(&[0; 12]),
        &[],
        &mut buf,
    ) else {
        return;
    };
    buf.extend_from_slice(&tag);
    edit(&mut buf, r);
    let got = chk::decrypt(&crypto_key, &buf);
    if usize::from(trailer) > chk::PAYLOAD_LEN {
        assert!(got.is_err(), "a trailer past the payload must be refused");
    }
    if let Ok(data) = got {
        assert!(data.len() <= chk::PAYLOAD_LEN);
    }
}

fn raw_case(block: &[u8]) {
    let (key, block) = block.split_at(block.len().min(32));
    let mut rk = [0u8; 32];
    rk[..key.len()].copy_from_slice(key);
    let rk = RoutingKey(rk);
    let _ = verify_block(BlockKind::Chk, &rk, block);
    let _ = verify_block(BlockKind::Ssk, &rk, block);
    let real = RoutingKey(lichen_crypto::sha256(block));
    let _ = verify_block(BlockKind::Chk, &real, block);
    let _ = chk::decrypt(&[7u8; 32], block);
    let _ = chk::parse_extra(block);
    let k = SskPrivate::from_parts([1; 32], [2; 32]).public();
    let _ = k.decode("doc", block);
}

fuzz_target!(|data: &[u8]| {
    let mut r = Recipe(data);
    match r.u8() % 4 {
        0 => chk_case(&mut r),
        1 => ssk_case(&mut r),
        2 => trailer_case(&mut r),
        _ => raw_case(r.0),
    }
});
