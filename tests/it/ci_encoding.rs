//! Settings exactly as the CI engines send them (issue 12): Drone's and Woodpecker's
//! encoding of a step's `settings:` (a list of scalars comma-joined, maps as JSON with sorted
//! keys), run through the real binary against Azurite.

use crate::support::*;

fn names(az: &Azurite, c: &str) -> Vec<String> {
    let mut n = list(az, c);
    n.sort();
    n
}

#[test]
fn ci_encoding_braces_in_comma_joined_lists_never_split() {
    // `source: ["dist/*.{js,css}", "img/*.{png,svg}"]` and `exclude: ["*.min.{js,css}"]`,
    // as the engines pass them: comma-joined.
    let az = Azurite::shared();
    let c = container("braces");
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    for f in [
        "dist/app.js",
        "dist/app.css",
        "dist/app.min.js",
        "dist/app.min.css",
        "dist/app.map",
        "img/a.png",
        "img/b.svg",
        "img/c.gif",
    ] {
        write(ws, f, f.as_bytes());
    }
    plugin(ws)
        .azurite(az, &c)
        .set("source", "dist/*.{js,css},img/*.{png,svg}")
        .set("exclude", "*.min.{js,css}")
        .run()
        .assert_ok();
    assert_eq!(names(az, &c), vec!["dist/app.css", "dist/app.js", "img/a.png", "img/b.svg"]);
}

#[test]
fn ci_encoding_header_maps_never_depend_on_key_order() {
    // `cache_control: {"**/*.html": no-cache, "**": "public, max-age=31536000, immutable"}`
    // arrives with its keys sorted, `**` first; the most specific glob still wins.
    let az = Azurite::shared();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    for f in ["site/index.html", "site/docs/page.html", "site/app.js"] {
        write(ws, f, f.as_bytes());
    }
    let long = "public, max-age=31536000, immutable";
    let sorted = format!(r#"{{"**":"{long}","**/*.html":"no-cache"}}"#);
    let listed = format!(r#"[{{"**/*.html":"no-cache"}},{{"**":"{long}"}}]"#);
    let reversed = format!(r#"[{{"**":"{long}"}},{{"**/*.html":"no-cache"}}]"#);
    for (tag, value, html) in
        [("sorted", &sorted, "no-cache"), ("list", &listed, "no-cache"), ("listrev", &reversed, long)]
    {
        let c = container(tag);
        plugin(ws)
            .azurite(az, &c)
            .set("source", "site/**")
            .set("strip_prefix", "site")
            .set("cache_control", value.as_str())
            .set("content_type", r#"{"*":"application/x-other","*.html":"text/html; charset=utf-8"}"#)
            .run()
            .assert_ok();
        for (name, want) in [("index.html", html), ("docs/page.html", html), ("app.js", long)] {
            let (_, p) = fetch(az, &c, name);
            assert_eq!(p["cache_control"], want, "{tag}: {name}");
        }
        let (_, p) = fetch(az, &c, "index.html");
        assert_eq!(p["content_type"], "text/html; charset=utf-8", "{tag}");
        let (_, p) = fetch(az, &c, "app.js");
        assert_eq!(p["content_type"], "application/x-other", "{tag}");
    }
}

#[test]
fn ci_encoding_a_list_entry_with_two_globs_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a");
    plugin(dir.path())
        .set("source", "a.txt")
        .set("dry_run", "true")
        .set("container", "c-dry")
        .set("cache_control", r#"[{"*.html":"no-cache","*":"public"}]"#)
        .run()
        .assert_code(2)
        .assert_contains("PLUGIN_CACHE_CONTROL")
        .assert_contains("one-entry maps");
}
