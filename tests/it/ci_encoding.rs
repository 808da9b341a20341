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
