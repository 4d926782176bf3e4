//! The ordered `Key=Value` list of an FCP message, and fred-compatible
//! readers for booleans and numbers.

use std::fmt;

/// The fields of one FCP message, in wire order.
///
/// Keys are case-sensitive, as in fred (`Identifier` and `identifier` are
/// different keys). A key may appear more than once on the wire; [`Fields::get`]
/// returns the first occurrence and [`Fields::set`] replaces it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    entries: Vec<(String, String)>,
}

impl Fields {
    /// An empty field list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the first field named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a field named `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Appends a field (even if the key is already present).
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.push((key.into(), value.into()));
    }

    /// Replaces the first field named `key`, or appends it.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends `key=value` only when `value` is `Some`.
    pub fn push_opt(&mut self, key: &str, value: Option<impl Into<String>>) {
        if let Some(v) = value {
            self.push(key, v);
        }
    }

    /// Removes every field named `key`; returns the first removed value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let first = self
            .entries
            .iter()
            .position(|(k, _)| k == key)
            .map(|i| self.entries[i].1.clone());
        self.entries.retain(|(k, _)| k != key);
        first
    }

    /// The fields in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of fields (duplicates counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A boolean field with fred's leniency: see [`parse_bool`].
    pub fn get_bool(&self, key: &str, default: bool) -> bool {
        parse_bool(self.get(key), default)
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Field values carry URIs, keys and file names: callers log a
        // message's *name* above debug level, never its fields.
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Fields {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Fields {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Reads an FCP boolean the way fred does (`Fields.stringToBool(s, def)`),
/// plus the `yes`/`no` spellings fred's strict reader accepts.
///
/// - missing field → `default`;
/// - `true`/`yes` in any case → `true`; `false`/`no` in any case → `false`;
/// - anything else → `default` (fred: with default `false` only "true"
///   counts, with default `true` only "false" does).
///
/// pyFreenet sends Python's `True`/`False`, which this accepts.
pub fn parse_bool(value: Option<&str>, default: bool) -> bool {
    match value {
        None => default,
        Some(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes") => true,
        Some(s) if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("no") => false,
        Some(_) => default,
    }
}

/// Formats a boolean as fred does: `true` / `false`.
pub fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_follow_fred() {
        assert!(parse_bool(Some("TRUE"), false));
        assert!(parse_bool(Some("True"), false));
        assert!(parse_bool(Some("yes"), false));
        assert!(!parse_bool(Some("False"), true));
        assert!(!parse_bool(Some("NO"), true));
        assert!(!parse_bool(Some("1"), false));
        assert!(parse_bool(Some("garbage"), true));
        assert!(parse_bool(None, true));
        assert!(!parse_bool(None, false));
    }

    #[test]
    fn set_replaces_first_and_get_returns_first() {
        let mut f = Fields::new();
        f.push("A", "1");
        f.push("A", "2");
        assert_eq!(f.get("A"), Some("1"));
        f.set("A", "3");
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![("A", "3"), ("A", "2")]);
        assert_eq!(f.remove("A").as_deref(), Some("3"));
        assert!(f.is_empty());
    }
}
