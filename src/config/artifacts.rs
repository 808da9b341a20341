//! Artifact settings: `preserve_mode`, `checksums_file`, `verify_checksums`
//! and `retention`, validated together with the action and the service they apply to.
//!
//! `retention` is whole days (`30d` or `30`), turned into two blob index tags once, when
//! the settings are read, so every file of a run carries the same ones:
//! `expires-on=YYYY-MM-DD` (UTC, today + N: for people, and for Find Blobs by Tags, which
//! compares with `<`) and `retention-days=N` (what a lifecycle-management rule matches: its
//! `blobIndexMatch` compares with `==` only, so it cannot compare dates; a rule per N
//! deletes N days after the upload, docs/retention.md).

use std::path::PathBuf;

use super::{Action, Problems, RawSettings, Service};
use crate::settings;

/// The most days `retention` accepts (100 years).
pub const MAX_RETENTION_DAYS: u64 = 36_500;

/// The blob index tags `retention` sets.
pub const EXPIRES_TAG: &str = "expires-on";
pub const DAYS_TAG: &str = "retention-days";

/// The validated artifact settings.
#[derive(Debug, Clone, Default)]
pub struct ArtifactSettings {
    /// Store the POSIX permission bits on upload (metadata `mode`), apply them on download.
    pub preserve_mode: bool,
    /// Upload and sync: the `sha256sum` file to write.
    pub checksums_file: Option<PathBuf>,
    /// Download: the `sha256sum` file every listed name is checked against.
    pub verify_checksums: Option<PathBuf>,
    /// `retention`: the index tags to store with each blob, as `x-ms-tags` takes them
    /// (`expires-on=YYYY-MM-DD&retention-days=N`).
    pub tags: Option<String>,
}

/// Parses `30d` or `30` (whole days, 1 to [`MAX_RETENTION_DAYS`]).
pub fn parse_days(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let digits = t.strip_suffix(['d', 'D']).unwrap_or(t);
    match digits.parse::<u64>() {
        Ok(n) if (1..=MAX_RETENTION_DAYS).contains(&n) && !digits.starts_with('+') => Ok(n),
        _ => Err(format!("`{v}` is not a number of whole days from 1 to {MAX_RETENTION_DAYS} (e.g. `30d`)")),
    }
}

/// The civil date (UTC) `days` days after 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` (UTC) of `now` plus `days` days.
pub fn expiry_date(now: std::time::SystemTime, days: u64) -> String {
    let today = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    let (y, m, d) = civil_from_days((today + days) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The `x-ms-tags` value of `retention: <days>d` for an upload at `now`.
pub fn retention_tags(now: std::time::SystemTime, days: u64) -> String {
    format!("{EXPIRES_TAG}={}&{DAYS_TAG}={days}", expiry_date(now, days))
}

pub(super) fn parse(
    raw: &RawSettings,
    action: Action,
    service: Service,
    boolean: impl Fn(&str, &mut Problems) -> bool,
    bad: &mut Problems,
) -> ArtifactSettings {
    let preserve_mode = boolean("preserve_mode", bad);
    let path = |name: &str, bad: &mut Problems| {
        raw.get(name).map(|v| v.trim()).map(|v| {
            if v.is_empty() || v.ends_with('/') {
                bad.push(name, format!("`{v}` is not a file path"));
            }
            PathBuf::from(v)
        })
    };
    let checksums_file = path("checksums_file", bad);
    if checksums_file.is_some() && !action.uploads() {
        bad.push(
            "checksums_file",
            format!(
                "applies to `action: upload` and `action: sync` only; to check a download against a checksums file, set `verify_checksums` ({})",
                settings::env_name("verify_checksums")
            ),
        );
    }
    let verify_checksums = path("verify_checksums", bad);
    if verify_checksums.is_some() && action != Action::Download {
        bad.push("verify_checksums", "applies to `action: download` only".into());
    }
    let days = raw.get("retention").and_then(|v| parse_days(v).map_err(|m| bad.push("retention", m)).ok());
    if days.is_some() {
        if service == Service::File {
            bad.push(
                "retention",
                "applies to Blob only (`service: blob`): Azure Files has no blob index tags, and lifecycle management does not cover file shares".into(),
            );
        } else if !action.uploads() {
            bad.push("retention", "applies to `action: upload` and `action: sync` only".into());
        }
    }
    let tags = days.map(|n| retention_tags(std::time::SystemTime::now(), n));
    ArtifactSettings { preserve_mode, checksums_file, verify_checksums, tags }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn days_are_whole_and_bounded() {
        assert_eq!(parse_days("30d"), Ok(30));
        assert_eq!(parse_days(" 7 "), Ok(7));
        assert_eq!(parse_days("36500D"), Ok(36_500));
        for bad in ["0d", "", "d", "30s", "1.5d", "-3d", "+3d", "36501d", "30 d", "x"] {
            let e = parse_days(bad).unwrap_err();
            assert!(e.contains("whole days"), "{bad}: {e}");
        }
    }

    #[test]
    fn expiry_dates_cross_months_years_and_leap_days() {
        let at = |y_days: u64| UNIX_EPOCH + Duration::from_secs(y_days * 86_400 + 86_399);
        assert_eq!(expiry_date(at(0), 1), "1970-01-02");
        // 2024-02-28 is day 19781; a leap year has the 29th.
        assert_eq!(expiry_date(at(19_781), 1), "2024-02-29");
        assert_eq!(expiry_date(at(19_781), 2), "2024-03-01");
        // 2026-12-02 (day 20789) + 30 days crosses the year.
        assert_eq!(expiry_date(at(20_789), 30), "2027-01-01");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(retention_tags(at(20_789), 30), "expires-on=2027-01-01&retention-days=30");
    }
}
