//! The match config of Amon probes (`match`, `bodyMatch`, `stdoutMatch`,
//! `stderrMatch`): `pattern` (required), `type` `regex` (the default) or
//! `substring`, `flags` (JavaScript's: `i`, `m`, `s`, `u`; never `g`),
//! `matchWord` (the pattern as whole words) and `invert` (a fault when the
//! pattern is *not* found). The original's patterns are JavaScript regular
//! expressions, so look-around and back-references work (`fancy-regex`).
//! Unlike the original, `invert` is honoured everywhere it is accepted.

use fancy_regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::http::FieldError;

/// A parsed match config.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub pattern: String,
    pub substring: bool,
    pub flags: String,
    pub match_word: bool,
    pub invert: bool,
    /// `match.field` (bunyan-log-scan only): match this field of the record
    /// instead of the whole line.
    pub field: Option<String>,
    regex: Regex,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        (
            &self.pattern,
            self.substring,
            &self.flags,
            self.match_word,
            self.invert,
            &self.field,
        ) == (
            &other.pattern,
            other.substring,
            &other.flags,
            other.match_word,
            other.invert,
            &other.field,
        )
    }
}

/// Longest pattern accepted: a config, not a program.
const MAX_PATTERN: usize = 4096;

impl Matcher {
    /// Parses the match config `value` of the field `name` (`config.match`).
    /// `allow_field`: whether `field` may be given (bunyan-log-scan).
    pub fn parse(value: &Value, name: &str, allow_field: bool, errors: &mut Vec<FieldError>) -> Option<Matcher> {
        let Some(map) = value.as_object() else {
            errors.push(FieldError::invalid(
                name,
                format!("{name} must be an object with a \"pattern\""),
            ));
            return None;
        };
        let before = errors.len();
        let known = ["pattern", "type", "flags", "matchWord", "invert"];
        for key in map.keys() {
            let field_ok = allow_field && key == "field";
            if !known.contains(&key.as_str()) && !field_ok {
                errors.push(FieldError::invalid(
                    &format!("{name}.{key}"),
                    format!("unknown field {name}.{key}"),
                ));
            }
        }
        let pattern = match map.get("pattern") {
            None | Some(Value::Null) => {
                errors.push(FieldError::missing(&format!("{name}.pattern")));
                String::new()
            }
            Some(Value::String(p)) if p.is_empty() || p.len() > MAX_PATTERN => {
                errors.push(FieldError::invalid(
                    &format!("{name}.pattern"),
                    format!("{name}.pattern must be 1 to {MAX_PATTERN} characters"),
                ));
                String::new()
            }
            Some(Value::String(p)) => p.clone(),
            Some(other) => {
                errors.push(FieldError::invalid(
                    &format!("{name}.pattern"),
                    format!("{name}.pattern must be a string, not {other}"),
                ));
                String::new()
            }
        };
        let substring = match map.get("type") {
            None | Some(Value::Null) => false,
            Some(Value::String(t)) if t == "regex" => false,
            Some(Value::String(t)) if t == "substring" => true,
            Some(other) => {
                errors.push(FieldError::invalid(
                    &format!("{name}.type"),
                    format!("{name}.type ({other}) is invalid, must be one of: regex, substring"),
                ));
                false
            }
        };
        let flags = match map.get("flags") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(f)) => {
                if f.contains('g') {
                    errors.push(FieldError::invalid(
                        &format!("{name}.flags"),
                        format!("{name}.flags ({f:?}) is invalid, cannot use \"g\" flag"),
                    ));
                } else if f.chars().any(|c| !"imsu".contains(c)) || {
                    let mut seen = std::collections::HashSet::new();
                    f.chars().any(|c| !seen.insert(c))
                } {
                    errors.push(FieldError::invalid(
                        &format!("{name}.flags"),
                        format!("{name}.flags ({f:?}) is invalid: each of \"i\", \"m\", \"s\", \"u\" at most once"),
                    ));
                }
                f.clone()
            }
            Some(other) => {
                errors.push(FieldError::invalid(
                    &format!("{name}.flags"),
                    format!("{name}.flags ({other}) is invalid, must be a string"),
                ));
                String::new()
            }
        };
        let boolean = |key: &str, errors: &mut Vec<FieldError>| match map.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                errors.push(FieldError::invalid(
                    &format!("{name}.{key}"),
                    format!("{name}.{key} ({other}) is invalid, must be a boolean"),
                ));
                false
            }
        };
        let match_word = boolean("matchWord", errors);
        let invert = boolean("invert", errors);
        let field = match map.get("field") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) if !f.is_empty() => Some(f.clone()),
            Some(other) => {
                errors.push(FieldError::invalid(
                    &format!("{name}.field"),
                    format!("{name}.field ({other}) is invalid, must be a field name"),
                ));
                None
            }
        };
        if errors.len() > before {
            return None;
        }
        let mut source = if substring {
            fancy_regex::escape(&pattern).into_owned()
        } else {
            pattern.clone()
        };
        if match_word {
            source = format!(r"\b(?:{source})\b");
        }
        let regex = RegexBuilder::new(&source)
            .case_insensitive(flags.contains('i'))
            .multi_line(flags.contains('m'))
            .dot_matches_new_line(flags.contains('s'))
            .build();
        match regex {
            Ok(regex) => Some(Matcher {
                pattern,
                substring,
                flags,
                match_word,
                invert,
                field,
                regex,
            }),
            Err(e) => {
                errors.push(FieldError::invalid(
                    &format!("{name}.pattern"),
                    format!("{name}.pattern is not a valid regular expression: {e}"),
                ));
                None
            }
        }
    }

    /// The first match in `text`, ignoring `invert` (a pattern too costly to
    /// decide counts as not found).
    pub fn find<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.regex.find(text).ok().flatten().map(|m| m.as_str())
    }

    /// Whether `text` is a hit: the pattern found, or with `invert` not found.
    pub fn hits(&self, text: &str) -> bool {
        self.find(text).is_some() != self.invert
    }

    /// As the original printed it: `/pattern/flags`, ` (inverted)`.
    pub fn describe(&self) -> String {
        let invert = if self.invert { " (inverted)" } else { "" };
        format!("/{}/{}{invert}", self.pattern, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<Matcher, Vec<FieldError>> {
        let mut errors = Vec::new();
        Matcher::parse(&value, "config.match", false, &mut errors).ok_or(errors)
    }

    #[test]
    fn regex_substring_flags_word_and_invert() {
        let m = parse(json!({"pattern": "ERR(OR)?"})).unwrap();
        assert_eq!(m.find("an ERROR here"), Some("ERROR"));
        assert!(!m.hits("all fine"));
        let m = parse(json!({"pattern": "a.b", "type": "substring"})).unwrap();
        assert!(m.hits("xa.by") && !m.hits("axb"));
        let m = parse(json!({"pattern": "error", "flags": "i"})).unwrap();
        assert!(m.hits("Error"));
        let m = parse(json!({"pattern": "err", "matchWord": true})).unwrap();
        assert!(m.hits("an err here") && !m.hits("error"));
        let m = parse(json!({"pattern": "ok", "invert": true})).unwrap();
        assert!(m.hits("bad") && !m.hits("ok"));
        assert_eq!(m.describe(), "/ok/ (inverted)");
    }

    #[test]
    fn javascript_features_work() {
        let m = parse(json!({"pattern": r"(\w)\1(?=!)"})).unwrap();
        assert_eq!(m.find("abb!"), Some("bb"));
    }

    #[test]
    fn each_wrong_field_is_named() {
        let fields = |value| -> Vec<String> { parse(value).unwrap_err().into_iter().map(|e| e.field).collect() };
        assert_eq!(fields(json!({})), ["config.match.pattern"]);
        assert_eq!(fields(json!({"pattern": "x", "flags": "g"})), ["config.match.flags"]);
        assert_eq!(fields(json!({"pattern": "x", "flags": "ii"})), ["config.match.flags"]);
        assert_eq!(fields(json!({"pattern": "x", "type": "glob"})), ["config.match.type"]);
        assert_eq!(
            fields(json!({"pattern": "(", "invert": false})),
            ["config.match.pattern"]
        );
        assert_eq!(
            fields(json!({"pattern": "x", "invert": "yes"})),
            ["config.match.invert"]
        );
        assert_eq!(fields(json!({"pattern": "x", "field": "msg"})), ["config.match.field"]);
        assert_eq!(fields(json!("x")), ["config.match"]);
    }
}
