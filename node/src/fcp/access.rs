//! FCP access levels (`[fcp] full_access_hosts`, as Hyphanet's
//! `allowedHostsFullAccess`): which messages a client without full access
//! may not send. They are refused with ProtocolError 24 (`ACCESS_DENIED`,
//! fred's code for the same refusals) before the session or the node sees
//! them, so nothing happens: no identifier is taken, no state changes.
//! A client without full access also keeps its persistent requests in a
//! queue of its own ([`RESTRICTED_QUEUE_PREFIX`] + its `Name`).

use lichen_fcp::codec::Message;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::ProtocolErrorCode;

/// Prefix of the queue name (`Scope::Client`) of a client without full
/// access: its persistent requests are kept apart from those of
/// full-access clients with the same `Name`.
pub(super) const RESTRICTED_QUEUE_PREFIX: &str = "restricted:";

/// Messages that need full access whatever their fields: the ones fred
/// guards with `hasFullAccess()` (node control, peers and their notes,
/// node data and configuration, plugins, probes).
const FULL_ACCESS_ONLY: &[&str] = &[
    "Shutdown",
    "AddPeer",
    "CreateInvitation",
    "ModifyPeer",
    "RemovePeer",
    "ModifyPeerNote",
    "ListPeer",
    "ListPeers",
    "ListPeerNotes",
    "GetNode",
    "GetConfig",
    "ModifyConfig",
    "LoadPlugin",
    "ReloadPlugin",
    "RemovePlugin",
    "ProbeRequest",
];

/// Why a client without full access may not send `m`, or `None` if it may.
///
/// Besides [`FULL_ACCESS_ONLY`]: watching the global queue
/// (`WatchGlobal Enabled=true`) and any message naming it (`Global=true`:
/// starting, listing, querying, modifying or removing a global request).
/// The global queue is the node owner's: its requests carry insert keys
/// and what the owner fetches. (fred lets any client use `Global=true`;
/// Lichen does not.)
pub(super) fn needs_full_access(m: &Message) -> Option<String> {
    let name = m.name.as_str();
    if FULL_ACCESS_ONLY.contains(&name)
        || (name == "GetPluginInfo" && m.fields.get_bool("Detailed", false))
    {
        return Some(format!("{name} requires full access"));
    }
    if name == "WatchGlobal" && m.fields.get_bool("Enabled", true) {
        return Some("WatchGlobal requires full access".into());
    }
    if m.fields.get_bool("Global", false) {
        return Some(format!(
            "{name} with Global=true requires full access (the global queue is the node owner's)"
        ));
    }
    None
}

/// The refusal sent for `m` (ProtocolError 24, not fatal, with the
/// message's `Identifier` and `Global`).
pub(super) fn refusal(m: &Message, why: String) -> Message {
    let mut e = rep::ProtocolError::new(ProtocolErrorCode::AccessDenied, Some(why));
    e.identifier = m.get("Identifier").map(str::to_string);
    e.global = m.fields.get_bool("Global", false);
    e.to_message()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(name: &str, fields: &[(&str, &str)]) -> Message {
        let mut m = Message::new(name);
        for (k, v) in fields {
            m = m.field(*k, *v);
        }
        m
    }

    #[test]
    fn guarded_messages() {
        for name in FULL_ACCESS_ONLY {
            let why = needs_full_access(&msg(name, &[])).unwrap();
            assert_eq!(why, format!("{name} requires full access"));
        }
        for m in [
            msg("WatchGlobal", &[]),
            msg("WatchGlobal", &[("Enabled", "true")]),
            msg("GetPluginInfo", &[("Detailed", "true")]),
            msg("ClientGet", &[("Global", "true"), ("Identifier", "x")]),
            msg("ClientPut", &[("Global", "yes")]),
            msg("ListPersistentRequests", &[("Global", "true")]),
            msg("GetRequestStatus", &[("Global", "True")]),
            msg("ModifyPersistentRequest", &[("Global", "true")]),
            msg("RemovePersistentRequest", &[("Global", "true")]),
            msg("RemoveRequest", &[("Global", "true")]),
        ] {
            assert!(needs_full_access(&m).is_some(), "{m:?}");
        }
    }

    #[test]
    fn ordinary_messages_pass() {
        for m in [
            msg("ClientHello", &[]),
            msg("ClientGet", &[("Identifier", "x")]),
            msg("ClientPut", &[("Global", "false")]),
            msg("WatchGlobal", &[("Enabled", "false")]),
            msg("ListPersistentRequests", &[]),
            msg("GetRequestStatus", &[("Identifier", "x")]),
            msg("GenerateSSK", &[]),
            msg("TestDDARequest", &[]),
            msg("SubscribeUSK", &[]),
            msg("GetPluginInfo", &[]),
            msg("Disconnect", &[]),
            msg("Void", &[]),
        ] {
            assert_eq!(needs_full_access(&m), None, "{m:?}");
        }
    }

    #[test]
    fn refusal_is_fred_access_denied() {
        let m = msg("ClientGet", &[("Identifier", "g1"), ("Global", "true")]);
        let r = refusal(&m, needs_full_access(&m).unwrap());
        assert_eq!(r.name, "ProtocolError");
        assert_eq!(r.get("Code"), Some("24"));
        assert_eq!(r.get("Identifier"), Some("g1"));
        assert_eq!(r.get("Global"), Some("true"));
        assert_eq!(r.get("Fatal"), Some("false"));
        assert!(r.get("ExtraDescription").unwrap().contains("full access"));
    }
}
