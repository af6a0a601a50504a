//! Identifiers of profiles and recipes: `^[a-z0-9][a-z0-9-]{0,62}$`.
//!
//! Ids become file names, directory names and parts of D-Bus names, so the syntax is narrow on
//! purpose: no `/`, no `.`, no upper case, nothing that needs escaping anywhere.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id accepted, in bytes.
pub const MAX_LEN: usize = 63;

/// Why a string is not a valid id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("an id cannot be empty")]
    Empty,
    #[error("the id \"{0}\" is longer than {MAX_LEN} characters")]
    TooLong(String),
    #[error(
        "the id \"{0}\" must start with a lower-case letter or digit and contain only a-z, 0-9 \
         and '-' (for example \"work\" or \"telegram-2\")"
    )]
    BadChars(String),
}

/// Checks `s` against the id syntax.
pub fn validate(s: &str) -> Result<(), IdError> {
    let printable = || s.escape_default().to_string();
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(IdError::TooLong(printable()));
    }
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(IdError::BadChars(printable()))
    }
}

/// A validated profile id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId(String);

impl ProfileId {
    /// Validates and wraps `s`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ProfileId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ProfileId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProfileId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_syntax() {
        for ok in ["a", "0", "work", "telegram-2", "a-", &"x".repeat(63)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(validate(""), Err(IdError::Empty));
        assert!(matches!(
            validate(&"x".repeat(64)),
            Err(IdError::TooLong(_))
        ));
        for bad in [
            "-a", "Work", "a/b", "..", "../x", "a.b", "a b", "a\0b", "é", "a_b", "/", ".", "a\n",
        ] {
            assert!(
                matches!(validate(bad), Err(IdError::BadChars(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_messages_escape_control_characters() {
        let msg = validate("a\0b").unwrap_err().to_string();
        assert!(msg.contains("a\\u{0}b"), "{msg}");
    }
}
