//! One ChaCha20-Poly1305 layer per hop, in fixed-size cells.
//!
//! Every cell on a link is [`CELL`] bytes. A hop at depth `d` (the guard
//! is depth 1) opens the first `capacity(d - 1)` bytes of a forward cell
//! with its forward key, which leaves `capacity(d)` bytes; a middle hop
//! pads them with zeros back to [`CELL`] and passes them on. Backward, the
//! last hop seals `capacity(d)` bytes into `capacity(d - 1)`, pads, and
//! every hop before it seals again, so the originator receives a full
//! cell wrapped once per hop. Each key has its own counter nonce: a cell
//! that is forged, replayed, dropped or reordered fails to open at the
//! next hop, and the tunnel is torn down there (no tagging attack can
//! travel further than one hop).

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};

use crate::handshake::LayerSecrets;
use crate::TunnelError;

/// The body of every tunnel cell, at every hop, in both directions.
/// Sized so that a tunnel message ([`crate::WIRE_LEN`] bytes) in its
/// link envelope fills a two-cell link record (1,024 bytes) with a few
/// bytes to spare: a cell of 1,024 made it 1,062 bytes of CBOR, which
/// the link padded to its next record class, 4,096 bytes — four times the
/// bytes on every hop of every tunnel (`lichen_link::frame` tests it).
pub const CELL: usize = 944;
/// The Poly1305 tag one layer adds.
pub const TAG: usize = 16;
/// The most hops a tunnel has beyond the originator.
pub const MAX_HOPS: usize = 3;

const AAD: &[u8] = b"lichen-tunnel-layer-1";

/// The plaintext bytes a hop at `depth` sees (0 is the originator's
/// full cell).
#[must_use]
pub const fn capacity(depth: usize) -> usize {
    CELL - TAG * depth
}

/// One hop's layer: a key and a counter per direction.
pub struct Layer {
    forward: ChaCha20Poly1305,
    backward: ChaCha20Poly1305,
    forward_n: u64,
    backward_n: u64,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("forward_n", &self.forward_n)
            .field("backward_n", &self.backward_n)
            .finish_non_exhaustive()
    }
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::from(b)
}

fn next(n: &mut u64) -> Result<Nonce, TunnelError> {
    let v = *n;
    *n = v.checked_add(1).ok_or(TunnelError::Exhausted)?;
    Ok(nonce(v))
}

impl Layer {
    /// The layer of a completed handshake.
    #[must_use]
    pub fn new(secrets: &LayerSecrets) -> Self {
        Layer {
            forward: ChaCha20Poly1305::new(Key::from_slice(secrets.forward.as_ref())),
            backward: ChaCha20Poly1305::new(Key::from_slice(secrets.backward.as_ref())),
            forward_n: 0,
            backward_n: 0,
        }
    }

    fn seal(&mut self, forward: bool, buf: &mut Vec<u8>) -> Result<(), TunnelError> {
        let (aead, n) = if forward {
            (&self.forward, &mut self.forward_n)
        } else {
            (&self.backward, &mut self.backward_n)
        };
        aead.encrypt_in_place(&next(n)?, AAD, buf)
            .map_err(|_| TunnelError::Exhausted)
    }

    fn open(&mut self, forward: bool, buf: &mut Vec<u8>) -> Result<(), TunnelError> {
        let (aead, n) = if forward {
            (&self.forward, &mut self.forward_n)
        } else {
            (&self.backward, &mut self.backward_n)
        };
        // The counter moves only on success: a forged cell does not
        // desynchronise the layer (the tunnel is torn down anyway).
        let nonce = nonce(*n);
        aead.decrypt_in_place(&nonce, AAD, buf)
            .map_err(|_| TunnelError::BadCell("a layer failed to open"))?;
        next(n).map(|_| ())
    }
}

/// Zero-pad `v` (at most [`CELL`] bytes) to a whole cell.
fn pad(mut v: Vec<u8>) -> Box<[u8; CELL]> {
    v.resize(CELL, 0);
    let mut cell = Box::new([0u8; CELL]);
    cell.copy_from_slice(&v);
    cell
}

/// The originator wraps `plaintext` (exactly `capacity(layers.len())`
/// bytes) once per hop, the last hop's layer innermost.
///
/// # Errors
/// [`TunnelError::BadCell`] if `plaintext` has the wrong length.
pub fn wrap_forward(
    layers: &mut [Layer],
    plaintext: Vec<u8>,
) -> Result<Box<[u8; CELL]>, TunnelError> {
    if plaintext.len() != capacity(layers.len()) {
        return Err(TunnelError::BadCell("plaintext of the wrong length"));
    }
    let mut buf = plaintext;
    for layer in layers.iter_mut().rev() {
        layer.seal(true, &mut buf)?;
    }
    Ok(pad(buf))
}

/// A hop at `depth` opens its layer of a forward cell: `capacity(depth)`
/// bytes, for it (last hop) or to pad and pass on.
///
/// # Errors
/// [`TunnelError::BadCell`] when the layer does not open.
pub fn peel_forward(
    layer: &mut Layer,
    depth: usize,
    cell: &[u8; CELL],
) -> Result<Vec<u8>, TunnelError> {
    let mut buf = cell[..capacity(depth - 1)].to_vec();
    layer.open(true, &mut buf)?;
    Ok(buf)
}

/// Pad what a middle hop peeled back to a whole cell.
#[must_use]
pub fn repad(peeled: Vec<u8>) -> Box<[u8; CELL]> {
    pad(peeled)
}

/// A hop at `depth` seals a backward cell: the last hop its own
/// `capacity(depth)` plaintext, a middle hop the meaningful part of the
/// cell from the hop after it.
///
/// # Errors
/// [`TunnelError::Exhausted`] after 2^64 cells.
pub fn seal_backward(
    layer: &mut Layer,
    depth: usize,
    inner: &[u8],
) -> Result<Box<[u8; CELL]>, TunnelError> {
    let mut buf = inner[..capacity(depth).min(inner.len())].to_vec();
    buf.resize(capacity(depth), 0);
    layer.seal(false, &mut buf)?;
    Ok(pad(buf))
}

/// The originator opens every layer of a backward cell, the guard's
/// first: `capacity(layers.len())` bytes from the last hop.
///
/// # Errors
/// [`TunnelError::BadCell`] when a layer does not open.
pub fn unwrap_backward(layers: &mut [Layer], cell: &[u8; CELL]) -> Result<Vec<u8>, TunnelError> {
    let mut buf = cell.to_vec();
    for (i, layer) in layers.iter_mut().enumerate() {
        buf.truncate(capacity(i));
        layer.open(false, &mut buf)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::LayerSecrets;
    use zeroize::Zeroizing;

    fn pair(seed: u8) -> (Layer, Layer) {
        let s = || LayerSecrets {
            forward: Zeroizing::new([seed; 32]),
            backward: Zeroizing::new([seed.wrapping_add(100); 32]),
        };
        (Layer::new(&s()), Layer::new(&s()))
    }

    fn path(h: usize) -> (Vec<Layer>, Vec<Layer>) {
        (0..h).map(|i| pair(i as u8 + 1)).unzip()
    }

    #[test]
    fn a_cell_crosses_every_path_length_both_ways_at_one_size() {
        for h in 1..=MAX_HOPS {
            let (mut mine, mut hops) = path(h);
            let msg: Vec<u8> = (0..capacity(h)).map(|i| i as u8).collect();
            let mut cell = wrap_forward(&mut mine, msg.clone()).expect("wrap");
            for (i, hop) in hops.iter_mut().enumerate() {
                let peeled = peel_forward(hop, i + 1, &cell).expect("peel");
                if i + 1 == h {
                    assert_eq!(peeled, msg);
                } else {
                    cell = repad(peeled);
                }
            }
            // Back from the last hop.
            let reply: Vec<u8> = (0..capacity(h)).map(|i| (i * 7) as u8).collect();
            let mut inner = reply.clone();
            let mut cell = Box::new([0u8; CELL]);
            for (i, hop) in hops.iter_mut().enumerate().rev() {
                cell = seal_backward(hop, i + 1, &inner).expect("seal");
                inner = cell.to_vec();
            }
            assert_eq!(unwrap_backward(&mut mine, &cell).expect("unwrap"), reply);
        }
    }

    #[test]
    fn a_flipped_bit_replay_or_reorder_fails_at_the_next_hop() {
        let (mut mine, mut hops) = path(2);
        let c1 = wrap_forward(&mut mine, vec![1; capacity(2)]).expect("wrap");
        let c2 = wrap_forward(&mut mine, vec![2; capacity(2)]).expect("wrap");
        let mut flipped = c1.clone();
        flipped[100] ^= 1;
        assert!(peel_forward(&mut hops[0], 1, &flipped).is_err());
        // Out of order: the second cell first.
        assert!(peel_forward(&mut hops[0], 1, &c2).is_err());
        let p1 = peel_forward(&mut hops[0], 1, &c1).expect("in order");
        // Replayed.
        assert!(peel_forward(&mut hops[0], 1, &c1).is_err());
        // A middle hop that tampers is caught by the next.
        let mut tampered = p1;
        tampered[0] ^= 0x80;
        assert!(peel_forward(&mut hops[1], 2, &repad(tampered)).is_err());
    }

    #[test]
    fn the_plaintext_must_fill_the_cell() {
        let (mut mine, _) = path(2);
        assert!(wrap_forward(&mut mine, vec![0; 10]).is_err());
    }
}
