//! fleet.yaml as written, before any validation.
//!
//! Sections are serde structs with `deny_unknown_fields`, so the set of valid
//! keys lives in one place and a typo is caught by serde with its location.
//! Leaves are kept as located [`Value`]s rather than typed fields: if serde
//! rejected `backends: four` itself, the message would name neither the key
//! nor the rule, whereas `validate` knows both. YAML errors are turned into a
//! [`ConfigError`] here, with a "did you mean" for unknown keys.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned};

use super::ConfigError;

/// A leaf value with the place it was written.
pub(super) type Node = Spanned<Value>;

/// Any YAML value, as written (no schema beyond YAML's own scalars).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Spanned<String>, Node)>),
}

impl Value {
    /// How the value reads in a message: `'fast'`, `0`, `a list`.
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Null => "nothing".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => quote(s),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

/// `'text'`, with control characters escaped so a message stays on one line.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.escape_debug())
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyValue;

        impl<'de> Visitor<'de> for AnyValue {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Int(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::Int(n.into()))
            }
            fn visit_i128<E>(self, n: i128) -> Result<Value, E> {
                Ok(Value::Int(n))
            }
            fn visit_u128<E>(self, n: u128) -> Result<Value, E> {
                // Only reachable for absurd literals; saturating keeps the
                // range checks (which then reject it) simple.
                Ok(Value::Int(i128::try_from(n).unwrap_or(i128::MAX)))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
                Ok(Value::Float(x))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Value::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Node>()?;
                    entries.push((key, value));
                }
                Ok(Value::Map(entries))
            }
        }

        d.deserialize_any(AnyValue)
    }
}

/// The keys of a section: the field names of its serde struct, as its
/// derived `Deserialize` declares them. The structs below are the one place
/// a key is spelled; this list and the "did you mean" suggestions follow.
pub(super) fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    // The derived impl names its fields when it asks for a struct; the
    // introspector records them and stops there.
    let _ = T::deserialize(Introspect(&mut fields));
    fields.expect("a derived struct deserializer names its fields")
}

/// A deserializer that only records the field list it is asked for.
struct Introspect<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for Introspect<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only structs are introspected"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("introspected"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Every section: its name in messages (`""` is the top level) and its keys.
pub(super) fn sections() -> [(&'static str, &'static [&'static str]); 7] {
    [
        ("", keys::<RawConfig>()),
        ("backend", keys::<RawBackend>()),
        ("health", keys::<RawHealth>()),
        ("restart", keys::<RawRestart>()),
        ("shutdown", keys::<RawShutdown>()),
        ("balancer", keys::<RawBalancer>()),
        ("watch", keys::<RawWatch>()),
    ]
}

/// The whole file. A missing key or a key with no value (`backends:` or `~`)
/// means "use the default".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) backends: Option<Node>,
    pub(super) base_port: Option<Node>,
    pub(super) listen: Option<Node>,
    pub(super) www: Option<Node>,
    pub(super) backend: Option<Spanned<RawBackend>>,
    pub(super) health: Option<Spanned<RawHealth>>,
    pub(super) restart: Option<Spanned<RawRestart>>,
    pub(super) shutdown: Option<Spanned<RawShutdown>>,
    pub(super) balancer: Option<Spanned<RawBalancer>>,
    pub(super) admin: Option<Node>,
    pub(super) admin_hosts: Option<Node>,
    pub(super) upstreams: Option<Node>,
    pub(super) watch: Option<Spanned<RawWatchEntry>>,
}

/// `watch:` takes three shapes: `true`/`false`, a list of paths, or the
/// mapping below.
#[derive(Debug)]
pub(super) enum RawWatchEntry {
    Switch(bool),
    Paths(Vec<Node>),
    Section(Box<RawWatch>),
}

/// `watch:` as a mapping.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) paths: Option<Node>,
    pub(super) ignore: Option<Node>,
    pub(super) debounce: Option<Node>,
}

impl<'de> Deserialize<'de> for RawWatchEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shapes;

        impl<'de> Visitor<'de> for Shapes {
            type Value = RawWatchEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "watch: true, false, a list of paths or a mapping (paths, ignore, debounce)",
                )
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawWatchEntry, E> {
                Ok(RawWatchEntry::Switch(b))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawWatchEntry, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(RawWatchEntry::Paths(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawWatchEntry, A::Error> {
                RawWatch::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|w| RawWatchEntry::Section(Box::new(w)))
            }
        }

        d.deserialize_any(Shapes)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) command: Option<Node>,
    pub(super) cwd: Option<Node>,
    pub(super) env: Option<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) kind: Option<Node>,
    pub(super) path: Option<Node>,
    pub(super) interval: Option<Node>,
    pub(super) timeout: Option<Node>,
    pub(super) rise: Option<Node>,
    pub(super) fall: Option<Node>,
    pub(super) restart_after: Option<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestart {
    pub(super) policy: Option<Node>,
    pub(super) initial_backoff: Option<Node>,
    pub(super) max_backoff: Option<Node>,
    pub(super) max_restarts: Option<Node>,
    pub(super) window: Option<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    pub(super) timeout: Option<Node>,
    pub(super) drain_timeout: Option<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBalancer {
    pub(super) mode: Option<Node>,
    pub(super) strategy: Option<Node>,
    pub(super) max_connections: Option<Node>,
    pub(super) connect_timeout: Option<Node>,
    pub(super) idle_timeout: Option<Node>,
    pub(super) response_timeout: Option<Node>,
    pub(super) eject_after: Option<Node>,
    pub(super) eject_window: Option<Node>,
    pub(super) max_ejection_percent: Option<Node>,
    pub(super) access_log: Option<Node>,
    pub(super) backend_header: Option<Node>,
    pub(super) slow_start: Option<Node>,
    pub(super) threads: Option<Node>,
}

/// Parse the text of a fleet.yaml; `shown` is the path as the user named it.
/// An empty file (or one with only comments, or a lone `---`) is all defaults.
pub(super) fn parse(text: &str, shown: &Path) -> Result<RawConfig, ConfigError> {
    serde_saphyr::from_str::<Option<RawConfig>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| yaml_error(&e, text, shown))
}

/// The error under serde-saphyr's snippet and alias wrappers.
fn innermost(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = err
    {
        err = error;
    }
    err
}

/// Turn serde-saphyr's error into ours: unknown and duplicate keys and
/// misplaced sections become key errors, everything else a syntax error.
fn yaml_error(err: &serde_saphyr::Error, text: &str, shown: &Path) -> ConfigError {
    let path = shown.to_path_buf();
    let Some(loc) = err.location() else {
        let message = serde_saphyr::DefaultMessageFormatter.format_message(err.without_snippet());
        return ConfigError::Read {
            path,
            problem: format!("is not a valid fleet.yaml: {message}"),
        };
    };
    let line = usize::try_from(loc.line()).unwrap_or(usize::MAX);
    let column = usize::try_from(loc.column()).unwrap_or(usize::MAX);
    let file_error = |key: String, problem: String| ConfigError::File {
        path: path.clone(),
        line,
        key,
        problem,
    };
    match innermost(err) {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => {
            let (key, problem) = unknown_key(field, expected);
            file_error(key, problem)
        }
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => {
            let key = key
                .clone()
                .or_else(|| key_before(text, line, column))
                .unwrap_or_else(|| "(key)".into());
            file_error(
                key,
                "is set twice; a key may appear once per section".into(),
            )
        }
        serde_saphyr::Error::Unexpected { expected, .. } if expected.contains("mapping") => {
            match key_before(text, line, column) {
                Some(key) => file_error(
                    key,
                    "expected a section of `key: value` lines indented below it".into(),
                ),
                None => ConfigError::Syntax {
                    path,
                    line,
                    column,
                    problem:
                        "expected `key: value` lines at the top level (`fleet init --full` writes every key)"
                            .into(),
                },
            }
        }
        // An alias bomb ("billion laughs") or absurd nesting: the parser's
        // budget stops it; say so in words, not its debug output.
        serde_saphyr::Error::Budget { .. } => ConfigError::Syntax {
            path,
            line,
            column,
            problem: "the YAML expands past the parser's safety limits (too many aliases, \
                      anchors, nodes or nesting levels); a fleet.yaml needs none of that"
                .into(),
        },
        other => {
            let mut problem = serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .into_owned();
            if line_text(text, line).is_some_and(|l| l.trim_start().starts_with("listen: [")) {
                problem.push_str(" (quote an IPv6 address: listen: \"[::1]:44444\")");
            }
            ConfigError::Syntax {
                path,
                line,
                column,
                problem,
            }
        }
    }
}

/// Name an unknown key by its section and suggest what was probably meant.
fn unknown_key(field: &str, expected: &[&str]) -> (String, String) {
    let sections = sections();
    let section = sections
        .iter()
        .find(|(_, keys)| *keys == expected)
        .map_or("", |(name, _)| *name);
    let key = if section.is_empty() {
        field.to_owned()
    } else {
        format!("{section}.{field}")
    };
    let problem = if let Some(near) = closest(field, expected) {
        format!("unknown key (did you mean `{near}`?)")
    } else if let Some((home, _)) = sections
        .iter()
        .find(|(name, keys)| *name != section && keys.contains(&field))
    {
        if home.is_empty() {
            format!("unknown key (`{field}` is a top-level key, not part of {section}:)")
        } else {
            format!("unknown key (`{field}` belongs under {home}:)")
        }
    } else {
        format!("unknown key (expected one of: {})", expected.join(", "))
    };
    (key, problem)
}

/// The valid key nearest to a typo, if it is near enough to be a typo.
pub(super) fn closest<'a>(typo: &str, valid: &[&'a str]) -> Option<&'a str> {
    let typo_norm = typo.to_ascii_lowercase().replace('-', "_");
    valid
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&typo_norm, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// 1-based line of `text`.
fn line_text(text: &str, line: usize) -> Option<&str> {
    text.lines().nth(line.checked_sub(1)?)
}

/// Best effort: the key whose value starts at `line:column`, for errors that
/// serde reports at a value rather than at its key (`health: 5`).
fn key_before(text: &str, line: usize, column: usize) -> Option<String> {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let here = line_text(text, line)?;
    let before: String = here.chars().take(column.saturating_sub(1)).collect();
    let before = before.trim_end();
    if let Some(head) = before.strip_suffix(':') {
        let key: String = head
            .chars()
            .rev()
            .take_while(|c| is_key_char(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return (!key.is_empty()).then_some(key);
    }
    if !before.is_empty() {
        return None;
    }
    // The value starts on its own line: its key is the nearest line above
    // that is less indented and ends with `key:`.
    let indent = column.saturating_sub(1);
    let above: Vec<&str> = text.lines().take(line.saturating_sub(1)).collect();
    above
        .into_iter()
        .rev()
        .map(|l| l.split(" #").next().unwrap_or(l).trim_end())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .find(|l| l.len() - l.trim_start().len() < indent || indent == 0)
        .and_then(|l| l.trim().strip_suffix(':').map(str::to_owned))
        .filter(|k| !k.is_empty() && k.chars().all(is_key_char))
}
