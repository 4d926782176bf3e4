//! `GetConfig` and `ModifyConfig` (full access only: `access`): the
//! node's settings (`crate::settings`) as Hyphanet's `ConfigData` shows
//! them, and changes to them.

use crate::config::Config;
use crate::node::Node;
use crate::settings::{SettingsError, SETTINGS};
use lichen_fcp::codec::Message;
use lichen_fcp::fields::bool_str;
use lichen_fcp::replies::{self as rep, Reply};
use lichen_fcp::{Fields, ProtocolErrorCode};
use std::sync::Arc;

/// The trees of `ConfigData` a `GetConfig` may ask for, by its flag.
#[derive(Debug, Default, Clone, Copy)]
struct Trees {
    current: bool,
    defaults: bool,
    short: bool,
    long: bool,
    sort_order: bool,
    expert: bool,
    force_write: bool,
    data_types: bool,
}

impl Trees {
    fn of(f: &Fields) -> Trees {
        Trees {
            current: f.get_bool("WithCurrent", false),
            defaults: f.get_bool("WithDefaults", false),
            short: f.get_bool("WithShortDescription", false),
            long: f.get_bool("WithLongDescription", false),
            sort_order: f.get_bool("WithSortOrder", false),
            expert: f.get_bool("WithExpertFlag", false),
            force_write: f.get_bool("WithForceWriteFlag", false),
            data_types: f.get_bool("WithDataTypes", false),
        }
    }
}

/// `ConfigData` for `settings`: the trees asked for, every setting in each.
fn config_data(settings: &Config, trees: Trees, identifier: Option<String>) -> Message {
    let defaults = Config::default();
    let mut f = Fields::new();
    for (i, s) in SETTINGS.iter().enumerate() {
        let n = s.name;
        if trees.current {
            f.push(format!("current.{n}"), s.value(settings));
        }
        if trees.defaults {
            f.push(format!("default.{n}"), s.value(&defaults));
        }
        if trees.short {
            f.push(format!("shortDescription.{n}"), s.short);
        }
        if trees.long {
            f.push(format!("longDescription.{n}"), s.long);
        }
        if trees.sort_order {
            f.push(format!("sortOrder.{n}"), i.to_string());
        }
        if trees.expert {
            f.push(format!("expertFlag.{n}"), bool_str(s.expert));
        }
        if trees.force_write {
            f.push(format!("forceWriteFlag.{n}"), bool_str(false));
        }
        if trees.data_types {
            f.push(format!("dataType.{n}"), s.kind.data_type());
        }
    }
    rep::ConfigData {
        fields: f,
        identifier,
    }
    .to_message()
}

/// `GetConfig`: the settings now (as changed since the start).
pub(super) fn get_config(node: &Node, f: &Fields) -> Message {
    config_data(
        &node.settings(),
        Trees::of(f),
        f.get("Identifier").map(str::to_string),
    )
}

/// `ModifyConfig`: every other field than `Identifier` is a setting to
/// change (Hyphanet's names). All are made or none: a `ProtocolError`
/// (8, invalid field) names the first problem. The answer is `ConfigData`
/// with the settings now (`current.` only, as fred answers).
pub(super) async fn modify_config(node: &Arc<Node>, f: &Fields) -> Message {
    let identifier = f.get("Identifier").map(str::to_string);
    let changes: Vec<(String, String)> = f
        .iter()
        .filter(|(k, _)| *k != "Identifier")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match node.modify_settings(changes).await {
        Ok(now) => {
            tracing::info!("settings changed over FCP");
            let trees = Trees {
                current: true,
                ..Trees::default()
            };
            config_data(&now, trees, identifier)
        }
        Err(e) => {
            let code = match e {
                SettingsError::File { .. } => ProtocolErrorCode::InternalError,
                _ => ProtocolErrorCode::InvalidField,
            };
            let mut err = rep::ProtocolError::new(code, Some(e.to_string()));
            err.identifier = identifier;
            err.to_message()
        }
    }
}
