//! plugin-azure-storage: a CI plugin that moves build artifacts between the workspace
//! and Azure Blob Storage, with verified, parallel, chunked transfers.
//!
//! `main.rs` is thin; the library is split as docs/design.md describes: settings and
//! config, auth, the HTTP layer, one module per storage service, and the transfer
//! engine.

// The filesystem calls go through rustix's safe wrappers (docs/design.md, "Why rustix, not
// cap-std"); the binary's `mallopt` in main.rs is the one `unsafe` of the crate.
#![forbid(unsafe_code)]

pub mod app;
pub(crate) mod auth;
pub(crate) mod buffers;
pub mod config;
pub mod escape;
pub(crate) mod http;
pub(crate) mod jwt;
pub mod settings;
pub(crate) mod storage;
pub(crate) mod transfer;

/// The module graph follows the layer table of docs/design.md (and so has no cycle), and
/// the engine never names the storage service.
#[cfg(test)]
mod layers {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Edges allowed while a change is under way (none now); `(from, to)` pairs.
    const PENDING: &[(&str, &str)] = &[];

    /// Rows of the table under "## Modules and layers": module → layer number.
    fn layer_table() -> BTreeMap<String, usize> {
        let design = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/design.md")).unwrap();
        let section =
            design.split("## Modules and layers").nth(1).expect("docs/design.md: a `## Modules and layers` section");
        let mut layers = BTreeMap::new();
        for row in section.lines().take_while(|l| !l.starts_with("## ")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let Some(n) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else { continue };
            for m in cells[2].split(',') {
                layers.insert(m.trim().trim_matches('`').to_string(), n);
            }
        }
        layers
    }

    /// Every `.rs` file under `src/<dir>` (the whole of `src` for `""`).
    fn rust_files(dir: &str) -> Vec<std::path::PathBuf> {
        let mut files = vec![];
        let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        files
    }

    /// Every `crate::<module>` named outside comments, by the top-level module naming it.
    fn edges() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in rust_files("") {
            let rel = f.strip_prefix(&src).unwrap();
            let top =
                rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let deps = graph.entry(top.clone()).or_default();
            deps.extend(crate_modules(&text).into_iter().filter(|n| *n != top));
        }
        graph
    }

    /// The top-level modules a file names as `crate::<module>` outside `//` comment lines:
    /// in paths (`crate::http::Http`) and in groups, rustfmt-wrapped over several lines and
    /// nested (`use crate::{\n    auth::{a, b},\n    http,\n};` names `auth` and `http`).
    fn crate_modules(text: &str) -> BTreeSet<String> {
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).flat_map(|l| [l, "\n"]).collect();
        let ident = |s: &str| -> String {
            s.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
        };
        let mut names = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = code[i + "crate::".len()..].trim_start();
            let Some(group) = rest.strip_prefix('{') else {
                names.insert(ident(rest));
                continue;
            };
            // The group's items at depth 0, up to its closing brace.
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(ident(&group[item_start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(ident(&group[item_start..j]));
                        item_start = j + 1;
                    }
                    _ => {}
                }
            }
        }
        names.retain(|n| !n.is_empty() && n != "self");
        names
    }

    /// A cycle through the graph, as `a -> b -> a`, if there is one.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
        fn visit<'a>(
            n: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<String> {
            if let Some(at) = path.iter().position(|p| *p == n) {
                let mut c = path[at..].to_vec();
                c.push(n);
                return Some(c.join(" -> "));
            }
            if !done.insert(n) {
                return None;
            }
            path.push(n);
            for d in graph.get(n).into_iter().flatten() {
                if let Some(c) = visit(d, graph, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        graph.keys().find_map(|n| visit(n, graph, &mut vec![], &mut done))
    }

    #[test]
    fn modules_follow_the_layer_table() {
        let layers = layer_table();
        let mut graph = edges();
        for (from, to) in PENDING {
            if let Some(d) = graph.get_mut(*from) {
                d.remove(*to);
            }
        }
        let mut wrong = vec![];
        for (from, deps) in &graph {
            let Some(lf) = layers.get(from) else {
                wrong.push(format!("`{from}` has no row in the layer table of docs/design.md"));
                continue;
            };
            for to in deps {
                match layers.get(to) {
                    Some(lt) if lt > lf => {}
                    Some(lt) => {
                        wrong.push(format!("{from} (layer {lf}) uses {to} (layer {lt}): only lower layers may be used"))
                    }
                    None => wrong.push(format!("{from} uses `{to}`, which has no row in the layer table")),
                }
            }
        }
        if let Some(c) = cycle(&graph) {
            wrong.push(format!("import cycle: {c}"));
        }
        assert!(wrong.is_empty(), "the module graph breaks docs/design.md's layers:\n  {}", wrong.join("\n  "));
    }

    /// The engine asks the store what it can do (`Store::listing_has_checksums`,
    /// `name_key`, `has_directories`) and never which service it is: no `Service::` in
    /// src/transfer outside comments.
    #[test]
    fn the_engine_never_names_the_service() {
        let mut named = Vec::new();
        for p in rust_files("transfer") {
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains(&["Service", "::"].concat()) {
                    named.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(named.is_empty(), "the engine names the service (ask the store instead):\n  {}", named.join("\n  "));
    }

    #[test]
    fn a_cycle_is_found_and_printed() {
        let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
            .iter()
            .map(|(f, t)| (f.to_string(), BTreeSet::from([t.to_string()])))
            .collect();
        assert_eq!(cycle(&g).as_deref(), Some("a -> b -> c -> a"));
        let g: BTreeMap<String, BTreeSet<String>> =
            [("a".to_string(), BTreeSet::from(["b".to_string()]))].into_iter().collect();
        assert_eq!(cycle(&g), None);
    }

    #[test]
    fn a_wrapped_nested_crate_group_names_each_module() {
        let text = "use crate::{\n    auth::{self, Credential},\n    config::{\n        Config,\n        Secret,\n    },\n    http,\n};\n\
                    // use crate::storage;\n\
                    use crate::transfer::plan;\n\
                    fn f() { crate::jwt::check(); }\n\
                    use crate::{escape::shown, buffers::{Pool, LIMIT}, self};\n";
        let got: Vec<String> = crate_modules(text).into_iter().collect();
        assert_eq!(got, ["auth", "buffers", "config", "escape", "http", "jwt", "transfer"]);
    }
}
