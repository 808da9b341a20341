//! Per-file header rules (`content_type`, `cache_control`, `content_encoding`,
//! `content_disposition`): one string, a JSON map glob → value, or an ordered JSON list of
//! one-entry maps.
//!
//! Drone and Woodpecker pass a YAML map as JSON with its keys **sorted**, so the written
//! order of a map is lost before the plugin sees it. A map's precedence therefore never
//! depends on key order: the most specific glob wins ([`specificity`]): more literal
//! characters first, then fewer wildcards, then fewer `**`, then the glob's text (so that
//! ties are broken the same way on every run). The list form,
//! `[{"**/*.html": "no-cache"}, {"**": "public"}]`, reaches the plugin in its written
//! order (a YAML list of maps arrives as a JSON array): there the first match wins.

use std::cmp::Reverse;

use super::{PathPattern, ValueRule};

/// Parses a header rule. Returns the rule (when the value has a usable shape) and every
/// problem found, each a message for the setting.
pub fn parse_value_rule(v: &str) -> (Option<ValueRule>, Vec<String>) {
    let t = v.trim();
    let mut errs = Vec::new();
    let pairs = if t.starts_with('{') {
        match super::parse_map(t) {
            Ok(p) => p,
            Err(e) => return (None, vec![e]),
        }
    } else if t.starts_with('[') {
        match ordered_list(t) {
            Ok(p) => p,
            Err(e) => return (None, vec![e]),
        }
    } else {
        return (Some(ValueRule::Fixed(t.to_string())), errs);
    };
    let mut rules = Vec::new();
    for (g, val) in pairs {
        match PathPattern::new(&g) {
            Ok(p) => rules.push((p, val)),
            Err(e) => errs.push(e),
        }
    }
    if t.starts_with('{') {
        rules.sort_by_cached_key(|(p, _)| {
            let s = specificity(&p.pattern);
            (Reverse(s.literals), s.wildcards, s.globstars, p.pattern.clone())
        });
    }
    (Some(ValueRule::ByPattern(rules)), errs)
}

/// `[{"glob": "value"}, ...]`: one glob per entry, in written order.
fn ordered_list(t: &str) -> Result<Vec<(String, String)>, String> {
    const SHAPE: &str = "a list must hold one-entry maps, e.g. [{\"**/*.html\": \"no-cache\"}, {\"**\": \"public\"}]";
    let items: Vec<serde_json::Value> =
        serde_json::from_str(t).map_err(|e| format!("looks like a JSON list but does not parse: {e}; {SHAPE}"))?;
    let mut out = Vec::new();
    for item in items {
        let serde_json::Value::Object(m) = item else {
            return Err(format!("found `{item}`: {SHAPE}"));
        };
        if m.len() != 1 {
            return Err(format!(
                "an entry holds {} globs: the engines sort a map's keys, so its order would be lost; {SHAPE}",
                m.len()
            ));
        }
        for (k, v) in m {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(format!("value of `{k}` must be a string, found `{other}`")),
            };
            out.push((k, v));
        }
    }
    Ok(out)
}

/// How specific a glob is; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specificity {
    /// Characters matched literally (`/` and wildcard syntax not counted; an alternation
    /// `{a,bc}` counts its shortest branch).
    pub literals: usize,
    /// `*`, `**`, `?`, `[...]` and `{...}`, each counted once.
    pub wildcards: usize,
    pub globstars: usize,
}

pub fn specificity(pattern: &str) -> Specificity {
    let p = pattern.trim().trim_start_matches("./");
    let chars: Vec<char> = p.chars().collect();
    let mut s = Specificity { literals: 0, wildcards: 0, globstars: 0 };
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                s.literals += 1;
                i += 1;
            }
            '*' => {
                s.wildcards += 1;
                if chars.get(i + 1) == Some(&'*') {
                    s.globstars += 1;
                    while chars.get(i + 1) == Some(&'*') {
                        i += 1;
                    }
                }
            }
            '?' => s.wildcards += 1,
            '[' => {
                s.wildcards += 1;
                while i + 1 < chars.len() && chars[i + 1] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                s.wildcards += 1;
                let end = chars[i..].iter().position(|c| *c == '}').map_or(chars.len(), |e| i + e);
                let body: String = chars[i + 1..end.min(chars.len())].iter().collect();
                s.literals += body.split(',').map(|b| specificity(b).literals).min().unwrap_or(0);
                i = end;
            }
            '/' => {}
            _ => s.literals += 1,
        }
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(v: &str, path: &str) -> Option<String> {
        let (rule, errs) = parse_value_rule(v);
        assert!(errs.is_empty(), "{errs:?}");
        rule.and_then(|r| r.value_for(path).map(str::to_string))
    }

    #[test]
    fn the_most_specific_glob_wins_whatever_the_key_order() {
        // As the engines send `{"**/*.html": no-cache, "**": "public, ..."}`: keys sorted.
        let sorted = r#"{"**": "public, max-age=31536000, immutable", "**/*.html": "no-cache"}"#;
        let written = r#"{"**/*.html": "no-cache", "**": "public, max-age=31536000, immutable"}"#;
        for v in [sorted, written] {
            assert_eq!(pick(v, "index.html").as_deref(), Some("no-cache"));
            assert_eq!(pick(v, "a/b/page.html").as_deref(), Some("no-cache"));
            assert_eq!(pick(v, "app.js").as_deref(), Some("public, max-age=31536000, immutable"));
        }
        // A directory rule with more literal characters beats an extension rule.
        let v = r#"{"*.js": "a", "vendor/**": "b"}"#;
        assert_eq!(pick(v, "vendor/x.js").as_deref(), Some("b"));
        assert_eq!(pick(v, "src/x.js").as_deref(), Some("a"));
        // Equal literals: fewer wildcards first; an alternation counts as one.
        assert_eq!(pick(r#"{"*.{js,mjs}": "alt", "*.js": "plain"}"#, "x.js").as_deref(), Some("plain"));
        // A full tie is broken by the glob's text, the same on every run.
        assert_eq!(pick(r#"{"a/*": "1", "*/b": "2"}"#, "a/b").as_deref(), Some("2"));
        assert_eq!(pick(r#"{"*/b": "2", "a/*": "1"}"#, "a/b").as_deref(), Some("2"));
    }

    #[test]
    fn the_list_form_keeps_the_written_order() {
        let v = r#"[{"**": "public"}, {"**/*.html": "no-cache"}]"#;
        assert_eq!(pick(v, "index.html").as_deref(), Some("public"));
        let v = r#"[{"**/*.html": "no-cache"}, {"**": "public"}]"#;
        assert_eq!(pick(v, "index.html").as_deref(), Some("no-cache"));
        assert_eq!(pick(v, "a.css").as_deref(), Some("public"));
        for bad in [r#"[{"a": "1", "b": "2"}]"#, r#"["a"]"#, r#"[{"a": {"b": 1}}]"#, "[oops"] {
            let (_, errs) = parse_value_rule(bad);
            assert!(!errs.is_empty(), "{bad}");
        }
    }

    #[test]
    fn specificity_counts() {
        let s = specificity("**/*.html");
        assert_eq!((s.literals, s.wildcards, s.globstars), (5, 2, 1));
        let s = specificity("assets/{a,bcd}/x?.[ch]");
        assert_eq!((s.literals, s.wildcards, s.globstars), (6 + 1 + 1 + 1, 3, 0));
        assert_eq!(specificity(r"a\*").literals, 2);
        // Never panics on unbalanced syntax.
        let _ = specificity("{a,b");
        let _ = specificity("[ab");
        let _ = specificity("\\");
    }
}
