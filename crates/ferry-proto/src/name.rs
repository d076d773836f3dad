//! Tenant and target names: the one character set Ferry accepts in `/relay/{tenant}/{target}/…`.
//!
//! A name is 1 to 63 characters of lowercase ASCII letters, digits, `-` and `_`, starting with a letter or a
//! digit. The set is small on purpose: names appear in URLs, logs, metrics labels, bus subjects and file names,
//! and this set needs no escaping in any of them.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is longer than 63 characters")]
    TooLong { kind: &'static str },
    #[error("{kind} name must start with a lowercase letter or a digit")]
    BadStart { kind: &'static str },
    #[error(
        "{kind} name may contain only lowercase letters, digits, '-' and '_' (found {found:?})"
    )]
    BadChar { kind: &'static str, found: char },
}

/// The longest name Ferry accepts.
pub const MAX_NAME_LEN: usize = 63;

fn validate(kind: &'static str, value: &str) -> Result<(), InvalidName> {
    let first = value.chars().next().ok_or(InvalidName::Empty { kind })?;
    if value.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong { kind });
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(InvalidName::BadStart { kind });
    }
    if let Some(found) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(InvalidName::BadChar { kind, found });
    }
    Ok(())
}

macro_rules! name_type {
    ($ty:ident, $kind:literal) => {
        #[doc = concat!("A validated ", $kind, " name (see the module docs for the character set).")]
        #[derive(
            Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validate and wrap a name.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_type!(TenantName, "tenant");
name_type!(TargetName, "target");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_set() {
        for ok in ["demo", "a", "0", "team-1_prod", &"a".repeat(63)] {
            assert!(TenantName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(
            TenantName::new(""),
            Err(InvalidName::Empty { kind: "tenant" })
        );
        assert!(matches!(
            TargetName::new("a".repeat(64)),
            Err(InvalidName::TooLong { .. })
        ));
        assert!(matches!(
            TargetName::new("-a"),
            Err(InvalidName::BadStart { .. })
        ));
        for bad in ["Demo", "a.b", "a/b", "a%2e", "..", "a b", "ä"] {
            assert!(TargetName::new(bad).is_err(), "{bad}");
        }
    }
}
