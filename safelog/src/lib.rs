#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

use std::fmt;

/// What a redacted value prints.
pub const SCRUBBED: &str = "[scrubbed]";

/// A value that must not reach a log: `Display` and `Debug` print
/// `[scrubbed]`; [`Sensitive::expose`] gives the value where printing it
/// is intended.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wrap a value.
    pub const fn new(value: T) -> Self {
        Sensitive(value)
    }

    /// The value itself, for a place that prints it on purpose (a
    /// debug-level log, a reply to the local user).
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// Unwrap.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Sensitive(value)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCRUBBED)
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCRUBBED)
    }
}

/// The `Debug` body of a type whose whole value is sensitive:
/// `Name([scrubbed])`.
///
/// # Errors
/// Those of the formatter.
pub fn redacted_debug(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    f.debug_tuple(name).field(&Sensitive::new(())).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Key([u8; 4]);

    impl fmt::Debug for Key {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            redacted_debug(f, "Key")
        }
    }

    #[derive(Debug)]
    #[allow(dead_code)] // Read through Debug only.
    struct Request {
        uri: Sensitive<String>,
        htl: u8,
    }

    #[test]
    fn every_form_is_scrubbed_and_the_value_is_kept() {
        let s = Sensitive::new("CHK@secret/file.txt".to_string());
        assert_eq!(s.to_string(), "[scrubbed]");
        assert_eq!(format!("{s:?}"), "[scrubbed]");
        assert_eq!(format!("{s:#?}"), "[scrubbed]");
        assert_eq!(format!("{s:>20}"), "[scrubbed]");
        assert_eq!(s.expose(), "CHK@secret/file.txt");
        let r = Request { uri: s, htl: 18 };
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("htl: 18"), "{shown}");
        assert_eq!(format!("{:?}", Key([1, 2, 3, 4])), "Key([scrubbed])");
        assert_eq!(Key([1, 2, 3, 4]).0[0], 1);
        assert_eq!(r.uri.into_inner(), "CHK@secret/file.txt");
    }
}
