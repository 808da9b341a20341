//! The `sha256sum` file of a run: written after an upload or sync (`checksums_file`),
//! and read before a download that checks against one (`verify_checksums`).
//!
//! The format is GNU coreutils' (`sha256sum -c` reads it): `<64 lower-case hex>  <name>`
//! per line, sorted by name. A name holding a backslash or a line break is written as
//! coreutils writes it: the line begins with `\` and the name has `\\` and `\n` in their
//! place. Names are relative to `target`, so `sha256sum -c` passes in the directory a
//! download of the same tree wrote into. The file read by `verify_checksums` is outside
//! data: its size is bounded, every line is checked, and a malformed line is refused by
//! number (exit 2) before anything is downloaded.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::report::{FileResult, Status};

/// The most a `verify_checksums` file may hold (a million files take about 100 MiB).
const MAX_LEN: u64 = 256 << 20;

/// Why a `verify_checksums` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumsError {
    #[error("cannot read `{path}` (`verify_checksums`, PLUGIN_VERIFY_CHECKSUMS): {source}")]
    Read { path: String, source: std::io::Error },
    #[error("`{path}` (`verify_checksums`) is larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
    #[error(
        "`{path}` (`verify_checksums`) line {line}: {why}; expected `sha256sum` lines (`<64 hex digits>  <name>`)"
    )]
    Malformed { path: String, line: usize, why: String },
}

/// The SHA-256 of every file a run stored, by name relative to `target`, collected as
/// files finish.
#[derive(Debug, Default)]
pub struct Sums {
    /// `target/` (or empty), removed from each remote name.
    prefix: String,
    lines: Vec<(String, String)>,
    /// Stored names whose SHA-256 is not known (skipped over a copy stored without one).
    unknown: Vec<String>,
}

impl Sums {
    pub fn new(target: &str) -> Self {
        Sums { prefix: super::sync::owned_prefix(target), ..Sums::default() }
    }

    /// Takes a finished file: one that is stored (transferred, or skipped as already there).
    pub fn add(&mut self, r: &FileResult) {
        if !matches!(r.status, Status::Transferred | Status::Skipped) || r.name.is_empty() {
            return;
        }
        let name = r.name.strip_prefix(&self.prefix).unwrap_or(&r.name).to_string();
        match &r.sha256 {
            Some(sha) => self.lines.push((name, sha.to_ascii_lowercase())),
            None => self.unknown.push(name),
        }
    }

    /// The file's text, sorted by name, and the stored names left out (SHA-256 unknown).
    pub fn render(mut self) -> (String, Vec<String>) {
        self.lines.sort_unstable();
        self.lines.dedup();
        let mut out = String::with_capacity(self.lines.len() * 80);
        for (name, sha) in &self.lines {
            out.push_str(&line(sha, name));
        }
        (out, self.unknown)
    }
}

/// One `sha256sum` line, escaped as coreutils escapes a name with `\` or a line break.
pub fn line(sha: &str, name: &str) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let esc = name.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r");
        format!("\\{sha}  {esc}\n")
    } else {
        format!("{sha}  {name}\n")
    }
}

/// Parses `sha256sum` text into name → lower-case hex. `Err((line, why))` on the first
/// malformed line; a name given twice with different sums is malformed too.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if l.trim().is_empty() {
            continue;
        }
        let (escaped, l) = match l.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, l),
        };
        let bad = |why: &str| (i + 1, why.to_string());
        let sha = l
            .get(..64)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad("no SHA-256 (64 hex digits) at the start"))?;
        let name = l[64..]
            .strip_prefix("  ")
            .or_else(|| l[64..].strip_prefix(" *"))
            .ok_or_else(|| bad("the SHA-256 is not followed by two spaces (or ` *`) and a name"))?;
        let name = if escaped {
            unescape(name).ok_or_else(|| bad("a `\\` escape other than `\\\\`, `\\n` or `\\r`"))?
        } else {
            name.to_string()
        };
        let name = name.strip_prefix("./").map(str::to_string).unwrap_or(name);
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(bad("the name is empty, absolute, or has an empty or `..` component"));
        }
        let sha = sha.to_ascii_lowercase();
        if let Some(prev) = out.insert(name, sha.clone()) {
            if prev != sha {
                return Err(bad("a name listed twice with different SHA-256 sums"));
            }
        }
    }
    Ok(out)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// Reads and parses the `verify_checksums` file (bounded: see [`MAX_LEN`]).
pub fn load(path: &Path) -> Result<BTreeMap<String, String>, ChecksumsError> {
    let shown = path.display().to_string();
    let read = |source| ChecksumsError::Read { path: shown.clone(), source };
    let f = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    f.take(MAX_LEN + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(ChecksumsError::TooLarge { path: shown, max: MAX_LEN });
    }
    let text = String::from_utf8(bytes).map_err(|e| ChecksumsError::Malformed {
        path: shown.clone(),
        line: e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1,
        why: "not UTF-8".into(),
    })?;
    parse(&text).map_err(|(line, why)| ChecksumsError::Malformed { path: shown, line, why })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, sha: Option<&str>, status: Status) -> FileResult {
        let mut r = FileResult::new(name, "", 1, String::new());
        r.status = status;
        r.sha256 = sha.map(str::to_string);
        r
    }

    #[test]
    fn stored_files_are_listed_by_name_under_target_sorted() {
        let (a, b) = ("a".repeat(64), "B".repeat(64));
        let mut s = Sums::new("/builds/7/");
        s.add(&stored("builds/7/z.txt", Some(&a), Status::Transferred));
        s.add(&stored("builds/7/bin/tool", Some(&b), Status::Skipped));
        s.add(&stored("builds/7/gone", Some(&a), Status::Failed));
        s.add(&stored("builds/7/old", Some(&a), Status::Deleted));
        s.add(&stored("builds/7/unknown", None, Status::Skipped));
        let (text, unknown) = s.render();
        assert_eq!(text, format!("{}  bin/tool\n{a}  z.txt\n", "b".repeat(64)));
        assert_eq!(unknown, vec!["unknown".to_string()]);
    }

    #[test]
    fn lines_round_trip_through_coreutils_escapes() {
        let sha = "0123456789abcdef".repeat(4);
        let names = ["plain.txt", "dir/with space", "back\\slash", "line\nbreak", "ü/é"];
        let text: String = names.iter().map(|n| line(&sha, n)).collect();
        assert!(text.starts_with(&format!("{sha}  plain.txt\n")));
        assert!(text.contains(&format!("\\{sha}  back\\\\slash\n")));
        assert!(text.contains(&format!("\\{sha}  line\\nbreak\n")));
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), names.len());
        for n in names {
            assert_eq!(parsed.get(n), Some(&sha), "{n:?}");
        }
        // Binary-mode marker, CRLF, `./` and upper-case hex are what other tools write.
        let other = format!("{}  ./x\r\n{} *y\n\n", sha.to_ascii_uppercase(), sha);
        let p = parse(&other).unwrap();
        assert_eq!(p.get("x"), Some(&sha));
        assert_eq!(p.get("y"), Some(&sha));
    }

    #[test]
    fn malformed_lines_are_refused_by_number() {
        let sha = "a".repeat(64);
        for (text, line) in [
            (format!("{sha}  ok\nnot a line\n"), 2),
            (format!("{}  short\n", "a".repeat(63)), 1),
            (format!("{sha} one-space\n"), 1),
            (format!("{sha}  ../escape\n"), 1),
            (format!("{sha}  /abs\n"), 1),
            (format!("{sha}  a//b\n"), 1),
            (format!("{sha}  x\n{}  x\n", "b".repeat(64)), 2),
            (format!("\\{sha}  bad\\tescape\n"), 1),
            (format!("{sha}  \n"), 1),
        ] {
            assert_eq!(parse(&text).unwrap_err().0, line, "{text:?}");
        }
    }
}
