//! Invitations ([`crate::invitation`]): the inviting node gives out
//! one-time tokens; a node that redeems one dials it and, before any
//! hello, says [`Message::Invited`] (the token and its own signed
//! noderef); the inviting node checks the token, remembers the sender as
//! a friend and answers [`Message::Welcome`] (its own signed noderef),
//! which the redeeming node remembers as a friend too. Then both say
//! hello as friends do.
//!
//! A darknet node keeps a stranger's link only while it has tokens out,
//! and only until that link's first message: anything but a good token
//! closes it (and the usual hello deadline bounds the wait). Tokens live
//! in memory: a restart voids them. A token works once.

use super::{Output, PeerInfo, PeerPolicy};
use crate::invitation::Invitation;
use crate::noderef::NodeRef;
use lichen_routing::{Message, NoderefBytes, PeerId, Verifier};
use rand::RngCore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Invitations out at once at most.
pub const MAX_INVITATIONS: usize = 32;
/// Longest validity of an invitation.
pub const MAX_INVITATION_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A redemption not done in this time (the inviting node unreachable or
/// silent) is given up.
pub const REDEEM_WINDOW: Duration = Duration::from_secs(60);

/// Where a link stands with invitations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Stage {
    /// An ordinary link.
    #[default]
    None,
    /// A stranger on a darknet node with invitations out: its first
    /// message must be a good [`Message::Invited`].
    AwaitInvited,
    /// We redeem an invitation on this link: waiting for
    /// [`Message::Welcome`] before saying hello.
    AwaitWelcome,
}

/// Why no invitation was made.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteError {
    /// [`MAX_INVITATIONS`] are out.
    #[error("{MAX_INVITATIONS} invitations are already out: wait until one is used or expires")]
    TooMany,
    /// The node does not know the address friends would reach it at.
    #[error("this node does not know its public address yet (no peer has dialed it back, no router mapped its port): try again in a minute, or set [network] listen to the address friends reach")]
    AddressUnknown,
    /// The node has no noderef (it does not listen).
    #[error("this node does not listen for peers: nobody could use an invitation")]
    NotListening,
}

/// The policy's invitation state.
#[derive(Debug, Default)]
pub(super) struct Invites {
    /// Tokens given out, and when each expires.
    issued: HashMap<[u8; 16], Instant>,
    /// Our redemptions: the inviting node's static key → token, deadline.
    redeeming: HashMap<[u8; 32], ([u8; 16], Instant)>,
}

impl Invites {
    /// Whether tokens are out at `now`.
    pub(super) fn open(&self, now: Instant) -> bool {
        self.issued.values().any(|&until| now < until)
    }

    /// Whether we redeem an invitation of the node with `key`.
    pub(super) fn redeeming(&self, key: &[u8; 32], now: Instant) -> bool {
        self.redeeming
            .get(key)
            .is_some_and(|(_, until)| now < *until)
    }
}

impl<V: Verifier> PeerPolicy<V> {
    /// Make an invitation valid for `valid` (at most
    /// [`MAX_INVITATION_VALIDITY`]) naming this node's noderef's first
    /// address.
    ///
    /// # Errors
    /// [`InviteError`].
    pub fn invite(
        &mut self,
        now: Instant,
        valid: Duration,
        rng: &mut impl RngCore,
    ) -> Result<Invitation, InviteError> {
        let own = self
            .cfg
            .noderef
            .as_ref()
            .and_then(|b| NodeRef::from_bytes(b).ok())
            .ok_or(InviteError::NotListening)?;
        let address = *own.addresses.first().ok_or(InviteError::NotListening)?;
        let valid = valid.min(MAX_INVITATION_VALIDITY);
        self.invites.issued.retain(|_, until| now < *until);
        if self.invites.issued.len() >= MAX_INVITATIONS {
            return Err(InviteError::TooMany);
        }
        let mut token = [0u8; 16];
        rng.fill_bytes(&mut token);
        self.invites.issued.insert(token, now + valid);
        let expires = (self.wall_ms(now) / 1000).saturating_add(valid.as_secs());
        tracing::info!("made an invitation");
        Ok(Invitation {
            token,
            identity_key: own.identity_key,
            address,
            expires: u32::try_from(expires).unwrap_or(u32::MAX),
        })
    }

    /// Redeem `inv`: dial the inviting node and present its token; the
    /// outcome comes as [`Output::InvitationDone`].
    ///
    /// # Errors
    /// [`super::AddFriendError`]: it is this node, or already a friend.
    pub fn redeem(&mut self, now: Instant, inv: &Invitation) -> Result<(), super::AddFriendError> {
        let target = inv
            .dial_target()
            .map_err(|e| super::AddFriendError::Full(e.to_string()))?;
        let key = target.static_key;
        if key == self.cfg.own_key {
            return Err(super::AddFriendError::Myself);
        }
        if self.list.is_friend(&key) {
            return Err(super::AddFriendError::Duplicate);
        }
        self.invites.redeeming.retain(|_, (_, until)| now < *until);
        self.invites
            .redeeming
            .insert(key, (inv.token, now + REDEEM_WINDOW));
        self.retry_at.remove(&key);
        self.dial(now, target, None);
        Ok(())
    }

    /// A redemption of `key`'s invitation ended (`friend`: the new
    /// friend, or None: it failed).
    pub(super) fn redeem_done(&mut self, key: [u8; 32], friend: Option<PeerInfo>) {
        if self.invites.redeeming.remove(&key).is_some() {
            if friend.is_none() {
                tracing::info!("an invitation could not be used");
            }
            self.out.push_back(Output::InvitationDone {
                key,
                friend: friend.map(Box::new),
            });
        }
    }

    /// The invitation stage of a link to `remote` coming up, and the
    /// message to send first (instead of the hello, which waits).
    pub(super) fn invite_stage(
        &self,
        now: Instant,
        remote: &[u8; 32],
        dialed: bool,
    ) -> (Stage, Option<Message>) {
        if dialed && self.invites.redeeming(remote, now) {
            if let (Some((token, _)), Some(own)) =
                (self.invites.redeeming.get(remote), self.cfg.noderef.clone())
            {
                let first = Message::Invited {
                    token: *token,
                    noderef: own,
                };
                return (Stage::AwaitWelcome, Some(first));
            }
        }
        if !dialed && !self.cfg.opennet && !self.list.is_friend(remote) && self.invites.open(now) {
            return (Stage::AwaitInvited, None);
        }
        (Stage::None, None)
    }

    /// A message on a link before its hello, in invitation stage
    /// `stage`. True: handled (or the link closed); false: go on as for
    /// any message before the hello.
    pub(super) fn invite_message(
        &mut self,
        now: Instant,
        pid: PeerId,
        stage: Stage,
        msg: &Message,
        rng: &mut impl RngCore,
    ) -> bool {
        let Some(remote) = self.links.get(&pid).map(|l| l.remote) else {
            return true;
        };
        match (stage, msg) {
            (_, Message::Invited { token, noderef }) => {
                let good = self
                    .invites
                    .issued
                    .remove(token)
                    .is_some_and(|until| now < until);
                match good.then(|| friend_of(noderef, remote)).flatten() {
                    Some(r) => {
                        tracing::info!("a friend joined by invitation");
                        let _ = self.add_friend(now, r, noderef.clone());
                        if let Some(own) = self.cfg.noderef.clone() {
                            self.out.push_back(Output::Send {
                                peer: pid,
                                msg: Message::Welcome { noderef: own },
                            });
                        }
                        if stage == Stage::AwaitInvited {
                            self.send_hello(pid, false);
                        }
                        self.set_stage(pid, Stage::None);
                    }
                    None => {
                        tracing::debug!(peer = pid.0, "an unknown or used invitation refused");
                        if stage == Stage::AwaitInvited {
                            self.drop_unrouted(now, pid);
                        }
                    }
                }
                true
            }
            (Stage::AwaitWelcome, Message::Welcome { noderef }) => {
                match friend_of(noderef, remote) {
                    Some(r) => {
                        let friend = self.add_friend(now, r, noderef.clone()).ok();
                        self.set_stage(pid, Stage::None);
                        self.send_hello(pid, true);
                        self.redeem_done(remote, friend);
                        // The inviting node's hello may have come first.
                        if let Some(l) = self.links.get(&pid).and_then(super::LinkState::location) {
                            self.hello(now, pid, lichen_routing::Location(l), rng);
                        }
                    }
                    None => {
                        tracing::debug!(peer = pid.0, "a welcome with a forged noderef");
                        self.drop_unrouted(now, pid);
                        self.redeem_done(remote, None);
                    }
                }
                true
            }
            // Waiting for the welcome: the hello is kept (its location
            // is) until then.
            (Stage::AwaitWelcome, Message::LocationChanged { .. }) => true,
            (Stage::AwaitInvited, _) => {
                tracing::debug!(peer = pid.0, "a stranger without an invitation");
                self.drop_unrouted(now, pid);
                true
            }
            _ => false,
        }
    }
}

impl<V: Verifier> PeerPolicy<V> {
    fn set_stage(&mut self, pid: PeerId, stage: Stage) {
        if let Some(l) = self.links.get_mut(&pid) {
            l.stage = stage;
        }
    }
}

/// The noderef in `bytes`, if it verifies and names `remote` (the key the
/// link's handshake proved).
fn friend_of(bytes: &NoderefBytes, remote: [u8; 32]) -> Option<NodeRef> {
    NodeRef::from_bytes(bytes)
        .ok()
        .filter(|r| r.static_key == remote)
}
