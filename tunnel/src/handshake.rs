//! The per-hop key exchange: Tor's ntor (tor-spec §5.1.4) over X25519,
//! authenticated by the hop's static key.
//!
//! The originator knows the hop's static public key `B` (its link key,
//! from a noderef or from the previous hop's peer list). It sends an
//! ephemeral `X`; the hop answers with an ephemeral `Y` and `AUTH`, a MAC
//! that only the holder of `b` can compute. Both sides derive the layer
//! keys from `X^y | X^b` (hop) = `Y^x | B^x` (originator), so a hop that
//! does not hold `b` cannot complete the exchange, and the originator
//! stays anonymous to the hop (it has no static key in the exchange).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::TunnelError;

type HmacSha256 = Hmac<Sha256>;

const PROTOID: &[u8] = b"lichen-tunnel-ntor-x25519-sha256-1";
const T_MAC: &[u8] = b"lichen-tunnel-ntor-x25519-sha256-1:mac";
const T_KEY: &[u8] = b"lichen-tunnel-ntor-x25519-sha256-1:key_extract";
const T_VERIFY: &[u8] = b"lichen-tunnel-ntor-x25519-sha256-1:verify";
const M_EXPAND: &[u8] = b"lichen-tunnel-ntor-x25519-sha256-1:key_expand";

/// Length of the hop's answer: `Y` then `AUTH`.
pub const REPLY_LEN: usize = 64;

/// The static public key of a static (link) secret: what a hop is named
/// by in `Extend` and in peer lists.
#[must_use]
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// The two keys of one layer, one per direction.
pub struct LayerSecrets {
    /// Originator → exit.
    pub forward: Zeroizing<[u8; 32]>,
    /// Exit → originator.
    pub backward: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LayerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerSecrets(..)")
    }
}

/// The originator's half of a handshake in flight.
pub struct ClientHandshake {
    x: StaticSecret,
    x_pub: [u8; 32],
    hop: [u8; 32],
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake(..)")
    }
}

impl ClientHandshake {
    /// Start a handshake with the hop whose static public key is `hop`;
    /// returns the state and `X`, the message to send.
    pub fn start<R: RngCore>(rng: &mut R, hop: [u8; 32]) -> (Self, [u8; 32]) {
        let x = ephemeral(rng);
        let x_pub = PublicKey::from(&x).to_bytes();
        (ClientHandshake { x, x_pub, hop }, x_pub)
    }

    /// The static key of the hop this handshake is with.
    #[must_use]
    pub fn hop(&self) -> [u8; 32] {
        self.hop
    }

    /// Check the hop's answer and derive the layer keys.
    ///
    /// # Errors
    /// [`TunnelError::HandshakeAuth`] when `AUTH` does not prove the hop
    /// holds the static key, or a DH result is degenerate.
    pub fn finish(self, reply: &[u8; REPLY_LEN]) -> Result<LayerSecrets, TunnelError> {
        let mut y = [0u8; 32];
        y.copy_from_slice(&reply[..32]);
        let y_pub = PublicKey::from(y);
        let b_pub = PublicKey::from(self.hop);
        let yx = self.x.diffie_hellman(&y_pub);
        let bx = self.x.diffie_hellman(&b_pub);
        let (seed, auth) = derive(&yx, &bx, &self.hop, &self.x_pub, &y)?;
        let mut mac = HmacSha256::new_from_slice(T_MAC).map_err(|_| TunnelError::HandshakeAuth)?;
        mac.update(&auth);
        mac.verify_slice(&reply[32..])
            .map_err(|_| TunnelError::HandshakeAuth)?;
        expand(&seed)
    }
}

/// The hop's side: answer `X` with `Y | AUTH` and derive the layer keys.
///
/// # Errors
/// [`TunnelError::HandshakeAuth`] when a DH result is degenerate (a
/// low-order `X`).
pub fn server_handshake<R: RngCore>(
    rng: &mut R,
    static_secret: &StaticSecret,
    x: &[u8; 32],
) -> Result<(LayerSecrets, [u8; REPLY_LEN]), TunnelError> {
    let y = ephemeral(rng);
    let y_pub = PublicKey::from(&y).to_bytes();
    let b_pub = PublicKey::from(static_secret).to_bytes();
    let x_pub = PublicKey::from(*x);
    let xy = y.diffie_hellman(&x_pub);
    let xb = static_secret.diffie_hellman(&x_pub);
    let (seed, auth) = derive(&xy, &xb, &b_pub, x, &y_pub)?;
    let mut mac = HmacSha256::new_from_slice(T_MAC).map_err(|_| TunnelError::HandshakeAuth)?;
    mac.update(&auth);
    let mut reply = [0u8; REPLY_LEN];
    reply[..32].copy_from_slice(&y_pub);
    reply[32..].copy_from_slice(&mac.finalize().into_bytes());
    Ok((expand(&seed)?, reply))
}

/// A fresh ephemeral secret. The caller's generator must be a
/// cryptographic one (the node's is); the simulator's is seeded.
fn ephemeral<R: RngCore>(rng: &mut R) -> StaticSecret {
    let mut b = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(b.as_mut());
    StaticSecret::from(*b)
}

/// `(KEY_SEED, auth_input)` from the two shared secrets, as ntor does.
fn derive(
    ephemeral: &SharedSecret,
    static_dh: &SharedSecret,
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
) -> Result<(Zeroizing<[u8; 32]>, Vec<u8>), TunnelError> {
    if !ephemeral.was_contributory() || !static_dh.was_contributory() {
        return Err(TunnelError::HandshakeAuth);
    }
    let mut secret_input = Zeroizing::new(Vec::with_capacity(64 + 96 + PROTOID.len()));
    secret_input.extend_from_slice(ephemeral.as_bytes());
    secret_input.extend_from_slice(static_dh.as_bytes());
    secret_input.extend_from_slice(b);
    secret_input.extend_from_slice(x);
    secret_input.extend_from_slice(y);
    secret_input.extend_from_slice(PROTOID);
    let mac = |key: &[u8]| -> Result<[u8; 32], TunnelError> {
        let mut m = HmacSha256::new_from_slice(key).map_err(|_| TunnelError::HandshakeAuth)?;
        m.update(&secret_input);
        Ok(m.finalize().into_bytes().into())
    };
    let seed = Zeroizing::new(mac(T_KEY)?);
    let verify = mac(T_VERIFY)?;
    let mut auth = Vec::with_capacity(32 * 4 + PROTOID.len() + 6);
    auth.extend_from_slice(&verify);
    auth.extend_from_slice(b);
    auth.extend_from_slice(y);
    auth.extend_from_slice(x);
    auth.extend_from_slice(PROTOID);
    auth.extend_from_slice(b"Server");
    Ok((seed, auth))
}

fn expand(seed: &[u8; 32]) -> Result<LayerSecrets, TunnelError> {
    let hk = Hkdf::<Sha256>::from_prk(seed).map_err(|_| TunnelError::HandshakeAuth)?;
    let mut okm = Zeroizing::new([0u8; 64]);
    hk.expand(M_EXPAND, okm.as_mut())
        .map_err(|_| TunnelError::HandshakeAuth)?;
    let mut forward = Zeroizing::new([0u8; 32]);
    let mut backward = Zeroizing::new([0u8; 32]);
    forward.copy_from_slice(&okm[..32]);
    backward.copy_from_slice(&okm[32..]);
    Ok(LayerSecrets { forward, backward })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn hop(rng: &mut ChaCha20Rng) -> (StaticSecret, [u8; 32]) {
        let b = StaticSecret::random_from_rng(&mut *rng);
        let pub_ = PublicKey::from(&b).to_bytes();
        (b, pub_)
    }

    #[test]
    fn both_sides_derive_the_same_keys() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (b, b_pub) = hop(&mut rng);
        let (client, x) = ClientHandshake::start(&mut rng, b_pub);
        let (server_keys, reply) = server_handshake(&mut rng, &b, &x).expect("server");
        let client_keys = client.finish(&reply).expect("client");
        assert_eq!(*client_keys.forward, *server_keys.forward);
        assert_eq!(*client_keys.backward, *server_keys.backward);
        assert_ne!(*client_keys.forward, *client_keys.backward);
    }

    #[test]
    fn a_hop_without_the_static_secret_cannot_answer() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (_, b_pub) = hop(&mut rng);
        let (impostor, _) = hop(&mut rng);
        let (client, x) = ClientHandshake::start(&mut rng, b_pub);
        let (_, reply) = server_handshake(&mut rng, &impostor, &x).expect("server");
        assert!(matches!(
            client.finish(&reply),
            Err(TunnelError::HandshakeAuth)
        ));
    }

    #[test]
    fn a_tampered_reply_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (b, b_pub) = hop(&mut rng);
        for i in [0usize, 31, 32, 63] {
            let (client, x) = ClientHandshake::start(&mut rng, b_pub);
            let (_, mut reply) = server_handshake(&mut rng, &b, &x).expect("server");
            reply[i] ^= 1;
            assert!(client.finish(&reply).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_low_order_point_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (b, _) = hop(&mut rng);
        assert!(server_handshake(&mut rng, &b, &[0u8; 32]).is_err());
    }
}
