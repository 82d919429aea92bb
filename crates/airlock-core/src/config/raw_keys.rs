//! Keys of a configuration table that core does not interpret (a provider
//! section, an entitlement's provider-specific keys), kept with the line of
//! each key so the owner's errors can still name key and line.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

/// One key of a [`RawKeys`] table.
#[derive(Debug, Clone, PartialEq)]
struct RawKey {
    key: String,
    value: toml::Value,
    /// 1-based line of the key in the file; 0 when built in code.
    line: usize,
}

/// A TOML table kept raw for its owner, in file order, with the line of each key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawKeys {
    keys: Vec<RawKey>,
}

/// Why a [`RawKeys`] table does not fit the type it is read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key the type does not take.
    #[error("line {line}: `{key}` is not a key here (it takes: {})", expected.join(", "))]
    Unknown {
        /// The key as written.
        key: String,
        /// Its line.
        line: usize,
        /// The keys the type takes.
        expected: Vec<&'static str>,
    },
    /// A required key is absent.
    #[error("`{key}` is required")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A key's value has the wrong type or form.
    #[error("line {line}: `{key}`: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// Its line.
        line: usize,
        /// What is wrong with the value.
        message: String,
    },
    /// Anything else the type refused.
    #[error("{message}")]
    Other {
        /// What was refused.
        message: String,
    },
}

impl KeyError {
    /// The error as part of `table`'s message: `[t], line N: ...` when the
    /// key has a line, `[t]: ...` otherwise.
    pub fn in_table(&self, table: &str) -> String {
        match self {
            KeyError::Unknown { line, .. } | KeyError::Invalid { line, .. } if *line > 0 => {
                format!("{table}, {self}")
            }
            KeyError::Unknown { key, expected, .. } => format!(
                "{table}: `{key}` is not a key here (it takes: {})",
                expected.join(", ")
            ),
            KeyError::Invalid { key, message, .. } => format!("{table}: `{key}`: {message}"),
            _ => format!("{table}: {self}"),
        }
    }
}

impl RawKeys {
    /// Keeps the keys of one table of `text`, with the line each one is on.
    pub(crate) fn from_spanned(
        text: &str,
        table: std::collections::BTreeMap<String, toml::Spanned<toml::Value>>,
    ) -> RawKeys {
        let mut keys: Vec<(usize, RawKey)> = table
            .into_iter()
            .map(|(key, v)| {
                let start = v.span().start;
                let line = line_of(text, start);
                (
                    start,
                    RawKey {
                        key,
                        value: v.into_inner(),
                        line,
                    },
                )
            })
            .collect();
        // File order, so the first complaint is about the first key written.
        keys.sort_by_key(|(start, _)| *start);
        RawKeys {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        }
    }

    /// A table built in code (tests, tools): keys have no line.
    pub fn from_table(table: toml::Table) -> RawKeys {
        RawKeys {
            keys: table
                .into_iter()
                .map(|(key, value)| RawKey {
                    key,
                    value,
                    line: 0,
                })
                .collect(),
        }
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.key.as_str())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.keys.iter().find(|k| k.key == key).map(|k| &k.value)
    }

    /// The line of `key` (0 when unknown or built in code).
    pub fn line(&self, key: &str) -> usize {
        self.keys
            .iter()
            .find(|k| k.key == key)
            .map_or(0, |k| k.line)
    }

    /// Moves the keys named in `names` out into a table of their own.
    pub(crate) fn split_off(&mut self, names: &[&str]) -> RawKeys {
        let (taken, kept) = std::mem::take(&mut self.keys)
            .into_iter()
            .partition(|k| names.contains(&k.key.as_str()));
        self.keys = kept;
        RawKeys { keys: taken }
    }

    /// Reads the table as `T`; an unknown key, a missing key or a bad value is
    /// reported with the key and its line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, KeyError> {
        T::deserialize(Table { keys: &self.keys }).map_err(|e| match e {
            DeError::Unknown(key, expected) => KeyError::Unknown {
                line: self.line(&key),
                key,
                expected: expected.to_vec(),
            },
            DeError::Missing(key) => KeyError::Missing { key },
            DeError::AtKey(key, message) => KeyError::Invalid {
                line: self.line(&key),
                key,
                message,
            },
            DeError::Custom(message) => KeyError::Other { message },
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count() + 1)
}

/// The error of the deserializer below: serde's hooks for unknown and missing
/// fields keep the key, so the caller can add its line.
#[derive(Debug)]
enum DeError {
    Unknown(String, &'static [&'static str]),
    Missing(&'static str),
    AtKey(String, String),
    Custom(String),
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Unknown(k, _) => write!(f, "unknown key `{k}`"),
            DeError::Missing(k) => write!(f, "missing key `{k}`"),
            DeError::AtKey(k, m) => write!(f, "`{k}`: {m}"),
            DeError::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Custom(msg.to_string())
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::Unknown(field.to_string(), expected)
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::Missing(field)
    }
}

/// Presents the kept keys as a map to serde.
struct Table<'a> {
    keys: &'a [RawKey],
}

impl<'de> de::Deserializer<'de> for Table<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Entries {
            keys: self.keys.iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a> {
    keys: std::slice::Iter<'a, RawKey>,
    value: Option<&'a RawKey>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(k) = self.keys.next() else {
            return Ok(None);
        };
        self.value = Some(k);
        let key: de::value::StringDeserializer<DeError> = k.key.clone().into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(k) = self.value.take() else {
            return Err(DeError::Custom("a value without a key".into()));
        };
        seed.deserialize(k.value.clone())
            .map_err(|e| DeError::AtKey(k.key.clone(), e.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        url: String,
        #[allow(dead_code)]
        limit: Option<u32>,
    }

    fn keys(text: &str) -> RawKeys {
        let t: std::collections::BTreeMap<String, toml::Spanned<toml::Value>> =
            toml::from_str(text).unwrap();
        RawKeys::from_spanned(text, t)
    }

    #[test]
    fn errors_name_the_key_and_its_line() {
        let ok: Sample = keys("url = \"u\"\nlimit = 3\n").parse().unwrap();
        assert_eq!(ok.url, "u");
        let e = keys("url = \"u\"\n\nlimt = 3\n")
            .parse::<Sample>()
            .unwrap_err();
        assert_eq!(
            e,
            KeyError::Unknown {
                key: "limt".into(),
                line: 3,
                expected: vec!["url", "limit"]
            }
        );
        let e = keys("limit = 3\n").parse::<Sample>().unwrap_err();
        assert_eq!(e, KeyError::Missing { key: "url" });
        let e = keys("url = \"u\"\nlimit = \"x\"\n")
            .parse::<Sample>()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2: `limit`: invalid type"), "{e}");
    }
}
