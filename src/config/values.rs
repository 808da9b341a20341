//! Value parsers for settings written as text: booleans, sizes, durations, lists and
//! JSON maps (kept in written order); the name and header-value checks validation applies;
//! `1.5 MiB`-style rendering of byte counts. With their unit and property tests.

use std::fmt;
use std::time::Duration;

/// Parses a boolean the way CI YAML writes them.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Parses `8MiB`, `8MB`, `8M`, `512k`, `1048576`. Units are binary (1 MB = 1 MiB), as azcopy's.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("`{v}` is not a size (e.g. `8MiB`, `512KiB`, `1048576`)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("`{v}` has an unknown unit (use B, KiB, MiB, GiB)")),
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{v}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `30s`, `2m`, `1h`, `14d`, `500ms`, `1m30s`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let t = v.trim().to_ascii_lowercase();
    let err = || format!("`{v}` is not a duration (e.g. `30s`, `2m`, `500ms`)");
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| err());
    }
    let mut total = Duration::ZERO;
    let mut rest = t.as_str();
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        if n_end == 0 {
            return Err(err());
        }
        let n: f64 = rest[..n_end].parse().map_err(|_| err())?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..u_end];
        rest = &rest[u_end..];
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" | "sec" | "secs" => n,
            "m" | "min" | "mins" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(err()),
        };
        total = total.checked_add(Duration::try_from_secs_f64(secs).map_err(|_| err())?).ok_or_else(err)?;
    }
    Ok(total)
}

/// Parses a list: a JSON array of strings; or items one per line (a YAML block scalar,
/// `source: |`, the Actions idiom), each line comma-joined values too (how Drone and
/// Woodpecker pass a YAML list of scalars). A comma inside `{...}` (a glob alternation such
/// as `*.{js,css}`) or escaped as `\,` never splits; blank lines and the space around an
/// item are dropped. A line break is never part of an item: a JSON item holding one is refused.
pub fn parse_list(v: &str) -> Result<Vec<String>, String> {
    let t = v.trim();
    if t.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(t).map_err(|e| format!("looks like a JSON array but does not parse: {e}"))?;
        return items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::String(s) if s.contains(['\n', '\r']) => {
                    Err(format!("the item `{}` holds a line break: give one item per array entry", s.escape_debug()))
                }
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("list items must be strings, found `{other}`")),
            })
            .filter(|r| r.as_ref().map(|s| !s.trim().is_empty()).unwrap_or(true))
            .collect();
    }
    Ok(t.split(['\n', '\r'])
        .flat_map(split_top_level_commas)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Splits at the commas outside `{...}`; a backslash escapes the next character. Unbalanced
/// braces leave the rest as one item (the glob check then reports it).
fn split_top_level_commas(t: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut escaped) = (0usize, 0usize, false);
    for (i, c) in t.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&t[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&t[start..]);
    out
}

/// Parses a JSON map of string values, keeping the written order.
pub fn parse_map(v: &str) -> Result<Vec<(String, String)>, String> {
    let t = v.trim();
    if !t.starts_with('{') {
        return Err("expected a JSON object, e.g. {\"key\": \"value\"}".into());
    }
    // Keep written order: serde_json's Map is sorted unless preserve_order; walk tokens instead.
    let ordered: OrderedMap = serde_json::from_str(t).map_err(|e| format!("is not a valid JSON object: {e}"))?;
    Ok(ordered.0)
}

struct OrderedMap(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<OrderedMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "value of `{k}` must be a string, found `{other}`"
                            )))
                        }
                    };
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A metadata name Azure accepts: a C# identifier (letters, digits, `_`, not starting with a digit).
pub fn valid_metadata_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Container / share naming rules (3-63, lowercase letters, digits, single hyphens).
pub(super) fn check_container_name(name: &str, what: &str) -> Result<(), String> {
    if name == "$root" || name == "$web" || name == "$logs" {
        return Ok(());
    }
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(format!(
            "`{name}` is not a valid {what} name: 3-63 characters, lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Header values must be visible ASCII; anything else is percent-encoded.
pub fn header_safe(v: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let enc = percent_encoding::utf8_percent_encode(v, SET).to_string();
    enc.chars().map(|c| if c.is_ascii() { c.to_string() } else { "%3F".into() }).collect()
}

/// Checks a header value from a setting (`content_type`, `cache_control`,
/// `content_encoding`, `content_disposition`): one line of visible ASCII, which is what
/// HTTP carries and what Shared Key signs. A non-ASCII file name in `content_disposition`
/// is encoded (see [`encode_disposition`]); anything else non-ASCII, and every control
/// character (CR, LF, tab, DEL...), is refused with the character named.
pub fn header_value(setting: &str, v: &str) -> Result<String, String> {
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character U+{:04X}: a header value is one line of visible ASCII",
            c as u32
        ));
    }
    if v.is_ascii() {
        return Ok(v.to_string());
    }
    if setting == "content_disposition" {
        return encode_disposition(v);
    }
    let c = v.chars().find(|c| !c.is_ascii()).unwrap_or('?');
    Err(format!(
        "contains the non-ASCII character U+{:04X} (`{c}`): HTTP headers carry ASCII only (percent-encode it, or leave it out)",
        c as u32
    ))
}

/// Why a SAS cannot be a query string as it is (a space, a control or non-ASCII
/// character: a copy-paste gone wrong), or `None`. Never quotes the value.
pub fn not_a_query(sas: &str) -> Option<String> {
    let c = sas.chars().find(|c| !c.is_ascii_graphic() || *c == '#')?;
    let what = match c {
        ' ' => "a space".to_string(),
        '#' => "a `#`".to_string(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("the non-ASCII character U+{:04X}", c as u32),
    };
    Some(format!("contains {what}, which a SAS never holds (copy it again; its text is not shown)"))
}

/// RFC 8187 `attr-char`: what a `filename*=` value keeps as it is.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Encodes a `Content-Disposition` whose `filename` is not ASCII the way RFC 6266 §4.3
/// asks: `filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded UTF-8>`, each
/// non-ASCII character becoming `_` in the fallback. Browsers use `filename*`; the value
/// sent, signed and stored is ASCII. Non-ASCII anywhere else (the type, another
/// parameter, an existing `filename*`) is refused: there is no encoding for it.
pub fn encode_disposition(v: &str) -> Result<String, String> {
    let parts = split_outside_quotes(v).ok_or_else(|| "has an unterminated quoted string".to_string())?;
    let has_star =
        parts.iter().any(|p| p.split('=').next().is_some_and(|n| n.trim().eq_ignore_ascii_case("filename*")));
    let mut out: Vec<String> = Vec::new();
    for (i, part) in parts.iter().map(|p| p.trim()).enumerate() {
        if part.is_ascii() {
            out.push(part.to_string());
            continue;
        }
        let name_value = part.split_once('=').filter(|(n, _)| i > 0 && n.trim().eq_ignore_ascii_case("filename"));
        let Some((_, value)) = name_value else {
            return Err(format!(
                "has non-ASCII text in `{}`: only a `filename=` may be non-ASCII (it is sent as RFC 8187 `filename*=UTF-8''…`)",
                part.chars().flat_map(char::escape_debug).collect::<String>()
            ));
        };
        let name = unquote(value.trim());
        let fallback: String = name
            .chars()
            .map(|c| if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' { c } else { '_' })
            .collect();
        out.push(format!("filename=\"{fallback}\""));
        if !has_star {
            out.push(format!("filename*=UTF-8''{}", percent_encoding::utf8_percent_encode(&name, ATTR_CHAR)));
        }
    }
    Ok(out.join("; "))
}

/// Splits `a; b="x;y"; c` at the `;` outside double quotes (`\"` escapes inside them);
/// `None` when a quote is left open.
fn split_outside_quotes(v: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&v[start..]);
    Some(parts)
}

/// The text of a token or a quoted string (`"a\"b"` is `a"b`).
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            out
        }
        None => v.to_string(),
    }
}

/// `1.5 MiB`-style rendering.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("8MB").unwrap(), 8 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("14d").unwrap(), Duration::from_secs(14 * 86400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
        // Each part fits a Duration, their sum does not: an error, not an overflow panic.
        assert!(parse_duration("10000000000000000000s10000000000000000000s").is_err());
    }

    #[test]
    fn lists_comma_and_json() {
        assert_eq!(parse_list("a, b,,c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(parse_list(r#"["dist/{a,b}/*", "x"]"#).unwrap(), vec!["dist/{a,b}/*", "x"]);
        assert!(parse_list("[not json").is_err());
    }

    #[test]
    fn lists_one_item_per_line() {
        // `source: |` under Actions (INPUT_SOURCE) or Drone/Woodpecker: one glob per line.
        assert_eq!(parse_list("dist/*.tar.gz\ndocs/**\n").unwrap(), vec!["dist/*.tar.gz", "docs/**"]);
        assert_eq!(parse_list("\n  a \r\n\n\t b\t\n  \n").unwrap(), vec!["a", "b"]);
        // Each line keeps the comma rule.
        assert_eq!(parse_list("dist/*.{js,css}\nc,d").unwrap(), vec!["dist/*.{js,css}", "c", "d"]);
        // A JSON array may span lines; an item never holds a line break.
        assert_eq!(parse_list("[\n  \"a\",\n  \" b \"\n]").unwrap(), vec!["a", " b "]);
        assert!(parse_list(r#"["a\nb"]"#).unwrap_err().contains("line break"));
        for v in ["a\nb", "a\r\nb,c", "a\rb", "a\n[x]\ny"] {
            assert!(parse_list(v).unwrap().iter().all(|i| !i.contains(['\n', '\r'])), "{v:?}");
        }
    }

    #[test]
    fn commas_inside_braces_never_split() {
        // `source: ["dist/*.{js,css}", "docs/**"]` as Drone and Woodpecker send it.
        assert_eq!(parse_list("dist/*.{js,css},docs/**").unwrap(), vec!["dist/*.{js,css}", "docs/**"]);
        assert_eq!(parse_list("a/{b,{c,d}}/*,e").unwrap(), vec!["a/{b,{c,d}}/*", "e"]);
        assert_eq!(parse_list(r"a\,b,c").unwrap(), vec![r"a\,b", "c"]);
        assert_eq!(parse_list("{a,b").unwrap(), vec!["{a,b"]);
        assert_eq!(parse_list("a},b").unwrap(), vec!["a}", "b"]);
    }

    #[test]
    fn maps_keep_written_order() {
        let m = parse_map(r#"{"*.html": "text/html", "*": "text/plain", "a": "b"}"#).unwrap();
        assert_eq!(m[0].0, "*.html");
        assert_eq!(m[1].0, "*");
        assert!(parse_map("text/html").is_err());
        assert!(parse_map(r#"{"a": {"nested": 1}}"#).is_err());
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn a_sas_is_one_query_string() {
        assert_eq!(not_a_query("sv=2025-11-05&sig=abc%2Bdef%3D"), None);
        assert!(not_a_query("sv=2025&sig=abc def").unwrap().contains("a space"));
        assert!(not_a_query("sv=2025&sig=abc\ndef").unwrap().contains("U+000A"));
        assert!(not_a_query("sv=2025&sig=abcé").unwrap().contains("non-ASCII"));
        assert!(!not_a_query("sv=2025&sig=SECRET def").unwrap().contains("SECRET"));
    }

    #[test]
    fn header_values() {
        assert_eq!(header_value("cache_control", "max-age=60, public").unwrap(), "max-age=60, public");
        assert!(header_value("cache_control", "max-age=60\r\nx: y").unwrap_err().contains("U+000D"));
        assert!(header_value("content_type", "text/plain\n").unwrap_err().contains("U+000A"));
        assert!(header_value("content_type", "tëxt/plain").unwrap_err().contains("non-ASCII character U+00EB"));
        assert!(header_value("content_encoding", "gzip\u{0}").is_err());
    }

    #[test]
    fn dispositions_with_unicode_file_names_get_an_rfc8187_form_and_an_ascii_fallback() {
        for (given, want) in [
            ("attachment; filename=\"é.txt\"", "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt"),
            ("attachment; filename=é.txt", "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt"),
            ("inline;FileName=\"naïve résumé 😀.pdf\";size=3", "inline; filename=\"na_ve r_sum_ _.pdf\"; filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9%20%F0%9F%98%80.pdf; size=3"),
            ("attachment; filename=\"a\\\"é;b\"", "attachment; filename=\"a__;b\"; filename*=UTF-8''a%22%C3%A9%3Bb"),
            ("attachment; filename*=UTF-8''%C3%A9.txt; filename=\"é.txt\"", "attachment; filename*=UTF-8''%C3%A9.txt; filename=\"_.txt\""),
            ("attachment; filename=\"plain.txt\"", "attachment; filename=\"plain.txt\""),
        ] {
            assert_eq!(header_value("content_disposition", given).unwrap(), want, "{given}");
        }
        for (given, why) in [
            ("pièce-jointe", "non-ASCII text in `pièce-jointe`"),
            ("attachment; title=\"é\"", "non-ASCII text in `title=\\\"é\\\"`"),
            ("attachment; filename=\"é", "unterminated quoted string"),
            ("é=1", "only a `filename=` may be non-ASCII"),
        ] {
            let e = header_value("content_disposition", given).unwrap_err();
            assert!(e.contains(why), "{given}: {e}");
        }
    }
}

/// Property tests: the parsers never panic, and what they accept means what was written.
#[cfg(test)]
mod props {
    use super::*;
    use crate::config::ConnectionString;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            for v in [s.as_str(), lossy.as_str()] {
                let _ = parse_size(v);
                let _ = parse_duration(v);
                let _ = parse_list(v);
                let _ = parse_map(v);
                let _ = parse_bool(v);
                let _ = ConnectionString::parse(v);
            }
        }

        #[test]
        fn an_encoded_disposition_is_ascii_and_decodes_to_the_name(name in "[^\\p{Cc}\"\\\\]{1,20}") {
            let v = format!("attachment; filename=\"{name}\"");
            let out = header_value("content_disposition", &v).unwrap();
            prop_assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)), "{out:?}");
            if name.is_ascii() {
                prop_assert_eq!(out, v);
            } else {
                let star = out.rsplit("filename*=UTF-8''").next().unwrap();
                let decoded = percent_encoding::percent_decode_str(star).decode_utf8().unwrap();
                prop_assert_eq!(decoded, name.as_str());
            }
        }

        #[test]
        fn connection_string_errors_never_show_a_key(key in "[ -:<-~]{1,30}", sas in "[ -:<-~]{1,30}", junk in "[ -:<-~]{1,10}") {
            for text in [
                format!("AccountName=Bad!;AccountKey={key};BlobEndpoint={junk}"),
                format!("AccountName=acct1;SharedAccessSignature={sas};{junk}"),
                format!("AccountKey={key};{junk};SharedAccessSignature={sas}"),
            ] {
                if let Err(errs) = ConnectionString::parse_all(&text) {
                    let all = errs.join("\n");
                    // Only values that could not also be a key name, an account or shown text.
                    if key.trim().len() > 8 && !junk.contains(key.trim()) {
                        prop_assert!(!all.contains(key.trim()), "{text}: {all}");
                    }
                    if sas.trim().len() > 8 && !junk.contains(sas.trim()) {
                        prop_assert!(!all.contains(sas.trim()), "{text}: {all}");
                    }
                }
            }
        }

        #[test]
        fn sizes_mean_what_they_say(n in 0u64..(1 << 20), unit in 0usize..5, lower in any::<bool>(), pad in any::<bool>()) {
            let (names, mult): (&[&str], u64) = [
                (&["", "B"][..], 1u64),
                (&["KiB", "KB", "K"][..], 1 << 10),
                (&["MiB", "MB", "M"][..], 1 << 20),
                (&["GiB", "GB", "G"][..], 1 << 30),
                (&["TiB", "TB", "T"][..], 1 << 40),
            ][unit];
            for name in names {
                let name = if lower { name.to_ascii_lowercase() } else { name.to_string() };
                let text = if pad { format!(" {n} {name} ") } else { format!("{n}{name}") };
                prop_assert_eq!(parse_size(&text), Ok(n * mult), "{:?}", text);
            }
        }

        #[test]
        fn durations_mean_what_they_say(h in 0u64..48, m in 0u64..120, s in 0u64..120, ms in 0u64..2000) {
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let got = parse_duration(&text).unwrap();
            let diff = got.abs_diff(want);
            prop_assert!(diff < Duration::from_micros(1), "{text}: {got:?} != {want:?}");
            prop_assert_eq!(parse_duration(&format!("{s}")).unwrap(), Duration::from_secs(s));
        }

        #[test]
        fn lists_round_trip_in_both_forms(items in proptest::collection::vec("[A-Za-z0-9_./*?-][A-Za-z0-9_./*? -]{0,10}[A-Za-z0-9_./*?-]", 0..6)) {
            let want: Vec<String> = items.iter().map(|s| s.trim().to_string()).collect();
            let joined = items.join(",");
            prop_assume!(!joined.trim_start().starts_with('['));
            prop_assert_eq!(parse_list(&joined).unwrap(), want.clone());
            let json = serde_json::to_string(&items).unwrap();
            prop_assert_eq!(parse_list(&json).unwrap(), items);
        }

        #[test]
        fn maps_keep_their_written_order(pairs in proptest::collection::vec(("\\PC{1,8}", "\\PC{0,8}"), 0..6)) {
            let mut seen = std::collections::HashSet::new();
            let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
                .collect();
            let json = format!("{{{}}}", body.join(", "));
            prop_assert_eq!(parse_map(&json).unwrap(), pairs);
        }
    }
}
