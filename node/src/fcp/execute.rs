//! What an FCP connection does with each message the session lets
//! through (requests start in `start`).

use super::common::lock;
use super::conn::{Conn, Payload};
use super::messages::describe;
use super::subscribe;
use crate::jobs::disk::Named;
use crate::requests::Outcome;
use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::uri::{KeyUri, SskKey};
use lichen_crypto::FreenetUri;
use lichen_fcp::client::{
    ClientMessage, GetNode, GetRequestStatus, ListPersistentRequests, ModifyPersistentRequest,
    Persistence, RemovePersistentRequest,
};
use lichen_fcp::codec::Message;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::Fields;
use std::path::Path;

impl Conn {
    pub(super) async fn execute(
        &self,
        msg: ClientMessage,
        header: Option<Message>,
        upload: Option<Payload>,
    ) -> bool {
        let node = &self.node;
        match msg {
            ClientMessage::GenerateSsk(g) => {
                let k = SskPrivate::generate(&mut rand::rngs::OsRng);
                let ins = FreenetUri::new(KeyUri::Ssk {
                    key: SskKey::Private(k),
                    docname: String::new(),
                });
                let reply = rep::SskKeypair {
                    insert_uri: ins.to_string(),
                    request_uri: ins.to_request().to_string(),
                    identifier: g.identifier,
                };
                self.send(&reply.to_message());
            }
            ClientMessage::WatchGlobal(_) => self.update_hub(),
            ClientMessage::Disconnect => return false,
            ClientMessage::Shutdown => {
                tracing::info!("shutdown requested over FCP");
                node.shutdown.cancel();
                return false;
            }
            ClientMessage::GetNode(g) => self.get_node(g),
            ClientMessage::ListPeers(l) => {
                for m in crate::peers::fcp::list_peers(
                    node,
                    l.identifier,
                    l.with_metadata,
                    l.with_volatile,
                )
                .await
                {
                    self.send(&m);
                }
            }
            ClientMessage::TestDdaRequest(r) => {
                self.test_dda_request(&r.directory, r.want_read, r.want_write)
                    .await
            }
            ClientMessage::TestDdaResponse(r) => self.test_dda_response(r).await,
            ClientMessage::ListPersistentRequests(l) => self.list_persistent_requests(l),
            ClientMessage::GetRequestStatus(g) => self.get_request_status(&g),
            ClientMessage::RemovePersistentRequest(r) => self.remove_persistent_request(r),
            ClientMessage::ModifyPersistentRequest(m) => self.modify_persistent_request(m),
            ClientMessage::SubscribeUsk(s) => {
                subscribe::subscribe(node.clone(), self.hub.clone(), self.id, s);
            }
            ClientMessage::UnsubscribeUsk(u) => {
                subscribe::unsubscribe(self.id, &u.identifier);
                lock(&self.session).release(&u.identifier, false);
            }
            m @ (ClientMessage::ClientPut(_)
            | ClientMessage::ClientGet(_)
            | ClientMessage::ClientPutComplexDir(_)
            | ClientMessage::ClientPutDiskDir(_)) => {
                self.start(m, header, upload).await;
            }
            _ => {}
        }
        true
    }

    /// `GetNode`: the node's identity, location, version and (with volatile) counters.
    fn get_node(&self, g: GetNode) {
        let node = &self.node;
        let mut f = Fields::new();
        f.push(
            "identity",
            // The identity peers see in ListPeers (a hash of the
            // public static key; was a hash of the secret key).
            crate::peers::identity_of(&node.identity.link_keys().static_public()),
        );
        f.push(
            "location",
            format!(
                "{:.6}",
                crate::status::location_fraction(node.identity.location)
            ),
        );
        f.push("version", concat!("Lichen,", env!("CARGO_PKG_VERSION")));
        // The noderef the node gives out now: at the public or mapped
        // address once known (what `lichen noderef` prints for a running
        // node listening on every interface).
        if let Some(a) = node.peers.get().and_then(|p| p.advertised()) {
            let keys = node.identity.link_keys();
            let r = lichen_link::NodeRef::new(&keys, vec![a], Some(node.identity.location));
            f.push(crate::peers::fcp::NODEREF_FIELD, r.to_text(&keys));
        }
        f.push(
            "opennet",
            lichen_fcp::fields::bool_str(node.config.network.opennet),
        );
        if g.with_volatile {
            let st = node.store.stats();
            f.push("volatile.startupTime", node.started_ms.to_string());
            f.push("volatile.storeBytes", st.total_bytes().to_string());
            f.push("volatile.numberOfConnected", node.peer_count().to_string());
            if let Some(net) = node.peers.get() {
                // What peers' dial-backs said (docs/running.md).
                let r = net.reachability();
                f.push(
                    "volatile.lichen.reachability",
                    crate::status::reachability_field(r.state),
                );
                // The home router's port mapping (docs/running.md, "Port
                // mapping"): the public address is then the mapped one.
                let m = net.port_mapping();
                f.push(
                    "volatile.lichen.portMapping",
                    crate::status::port_mapping_field(m.as_ref()),
                );
                if let Some(a) = r.public.or(m.map(|m| m.external)) {
                    f.push("volatile.lichen.publicAddress", a.ip().to_string());
                }
                if let Some(m) = m {
                    f.push("volatile.lichen.mappedAddress", m.external.to_string());
                }
                if let Some(k) = crate::status::keeps_ports_field(r.ports_kept) {
                    f.push("volatile.lichen.natKeepsPorts", k);
                }
                // Hole punches (docs/running.md, "Hole punching").
                f.push("volatile.lichen.punches", r.punches.to_string());
                f.push("volatile.lichen.punched", r.punched.to_string());
                // Real counters of the routing core (lichen_routing::Stats).
                let s = net.stats();
                for (name, v) in [
                    ("badBlocks", s.bad_blocks),
                    ("misbehaviour", s.misbehaviour),
                    ("disconnectedMisbehaving", s.disconnected_misbehaving),
                    ("seedClients", s.seed_clients),
                    ("loopsRejected", s.loops_rejected),
                    ("overloadRejected", s.overload_rejected),
                    ("answerBudgetRefused", s.answer_budget_refused),
                    ("recentlyFailed", s.recently_failed),
                    ("coalesced", s.coalesced),
                    ("servedFromStore", s.served_from_store),
                    ("unexpectedReplies", s.unexpected_replies),
                    ("backoffWaits", s.backoff_waits),
                    ("droppedLeastUseful", s.dropped_least_useful),
                    ("linkRefreshes", s.link_refreshes),
                    ("insertsForked", s.inserts_forked),
                ] {
                    f.push(format!("volatile.lichen.{name}"), v.to_string());
                }
                // Every tunnel counter, `own_sent` as `tunnelOwnSent`.
                for (name, v) in s.tunnels.pairs() {
                    f.push(
                        format!("volatile.lichen.tunnel{}", camel(name)),
                        v.to_string(),
                    );
                }
            }
        }
        self.send(
            &rep::NodeData {
                fields: f,
                identifier: g.identifier,
            }
            .to_message(),
        );
    }

    /// `ListPersistentRequests`: every persistent request this connection sees.
    fn list_persistent_requests(&self, l: ListPersistentRequests) {
        let node = &self.node;
        for req in node.requests.list(&self.visible_scopes()) {
            if req.persistence == Persistence::Connection {
                continue;
            }
            for m in describe(&req, false, self.hub.now_ms()) {
                self.send(&rep::with_list_request_identifier(
                    m,
                    l.identifier.as_deref(),
                ));
            }
        }
        self.send(
            &rep::EndListPersistentRequests {
                identifier: l.identifier,
            }
            .to_message(),
        );
    }

    /// `GetRequestStatus`: a request's messages again, with its data if it has any.
    fn get_request_status(&self, g: &GetRequestStatus) {
        let node = &self.node;
        let scope_list = self.scopes_for(g.global);
        let found = scope_list
            .iter()
            .find_map(|s| node.requests.get(s, &g.identifier));
        match found {
            Some(req) => {
                let msgs = describe(&req, true, self.hub.now_ms());
                for m in msgs {
                    self.send(&m);
                }
                if let Some(Outcome::GetOk {
                    data: Some(path),
                    len,
                    mime,
                }) = req.snapshot().outcome
                {
                    self.send_all_data(&req, &path, len, &mime, false);
                }
            }
            None => self.no_such_identifier(&g.identifier, g.global),
        }
    }

    /// `RemovePersistentRequest`.
    fn remove_persistent_request(&self, r: RemovePersistentRequest) {
        let node = &self.node;
        let scopes = self.scopes_for(r.global);
        let removed = scopes
            .iter()
            .find_map(|s| node.requests.remove(s, &r.identifier));
        match removed {
            Some(_) => self.send(
                &rep::PersistentRequestRemoved {
                    identifier: r.identifier,
                    global: r.global,
                }
                .to_message(),
            ),
            None => self.no_such_identifier(&r.identifier, r.global),
        }
    }

    /// `ModifyPersistentRequest` (only acknowledged: priorities are not kept).
    fn modify_persistent_request(&self, m: ModifyPersistentRequest) {
        let node = &self.node;
        let scopes = self.scopes_for(m.global);
        if scopes
            .iter()
            .any(|s| node.requests.contains(s, &m.identifier))
        {
            self.send(
                &rep::PersistentRequestModified {
                    identifier: m.identifier,
                    global: m.global,
                    client_token: m.client_token,
                    priority_class: m.priority_class,
                }
                .to_message(),
            );
        } else {
            self.no_such_identifier(&m.identifier, m.global);
        }
    }

    /// `AddPeer` / `CreateInvitation` / `RemovePeer` (see `peers::fcp`).
    pub(super) async fn peer_message(&self, m: &Message) {
        use crate::peers::fcp as fcp_peers;
        let reply = if m.name == "AddPeer" {
            let open = |name: &str| self.open_for_reading(name);
            fcp_peers::add_peer(&self.node, &m.fields, &open).await
        } else if m.name == "CreateInvitation" {
            fcp_peers::create_invitation(&self.node, &m.fields).await
        } else {
            fcp_peers::remove_peer(&self.node, &m.fields).await
        };
        self.send(&reply);
    }

    /// Opens the file `name` for reading if this connection may read it
    /// (the noderef file of `AddPeer`): through its approved directory's
    /// handle, no symbolic link followed. `Ok(None)`: not allowed.
    fn open_for_reading(&self, name: &str) -> std::io::Result<Option<std::fs::File>> {
        let named = Named::of(name)?;
        match self.dda_lookup(&named.dir, false)? {
            Some(dir) => dir.open_file(Path::new(&named.name)).map(|(f, _)| Some(f)),
            None => Ok(None),
        }
    }
}

/// `own_sent` → `OwnSent`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}
