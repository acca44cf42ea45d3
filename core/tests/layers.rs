//! The core's modules form layers that point one way (see DESIGN.md,
//! "Workspace layout"): a module uses only modules of its own layer or of
//! layers below, and the top-level modules import each other without a
//! cycle. Cycles inside one top-level module (a parent and its children)
//! are allowed.
//!
//! The check reads `core/src/**/*.rs`, drops comments, string literals and
//! `#[cfg(test)]` modules (tests may use anything), and collects every
//! `crate::x`, `$crate::x` and `super::…` path that leaves its own
//! top-level module. Names re-exported at the crate root (`crate::Replica`)
//! resolve through the `pub use` lines of `lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first, and the top-level modules in each.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &["value", "schema", "identity", "ids", "clock"]),
    ("document", &["document", "trust"]),
    ("store", &["store"]),
    (
        "replica",
        &[
            "error", "exchange", "registry", "audit", "verify", "replica",
        ],
    ),
    ("peer | mirror | tokens", &["peer", "mirror", "tokens"]),
];

/// One use of another top-level module: who uses what, and where.
#[derive(Clone, Debug)]
struct Edge {
    from: String,
    to: String,
    at: String,
}

#[test]
fn modules_form_one_way_layers() {
    // CHITTYSYNC_LAYERS_SRC checks another tree (say, an old commit's).
    let src = std::env::var_os("CHITTYSYNC_LAYERS_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    );
    let edges = module_edges(&src);
    if std::env::var_os("CHITTYSYNC_LAYERS_PRINT").is_some() {
        let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in &edges {
            graph.entry(&e.from).or_default().insert(&e.to);
        }
        for (from, to) in graph {
            println!("{from} -> {to:?}");
        }
    }
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect();

    let mut problems = Vec::new();
    let top = top_level_modules(&src);
    let modules: BTreeSet<&str> = edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .chain(top.iter().map(String::as_str))
        .collect::<BTreeSet<_>>();
    for m in &modules {
        if !layer_of.contains_key(m) {
            problems.push(format!(
                "module `{m}` has no layer: add it to LAYERS in core/tests/layers.rs"
            ));
        }
    }
    for e in &edges {
        let (Some(&from), Some(&to)) = (layer_of.get(e.from.as_str()), layer_of.get(e.to.as_str()))
        else {
            continue;
        };
        if to > from {
            problems.push(format!(
                "`{}` ({}) uses `{}` ({}), a higher layer, at {}",
                e.from, LAYERS[from].0, e.to, LAYERS[to].0, e.at
            ));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<String> = cycle
            .iter()
            .map(|e| format!("{} -> {} (at {})", e.from, e.to, e.at))
            .collect();
        problems.push(format!(
            "import cycle among top-level modules:\n    {}",
            path.join("\n    ")
        ));
    }
    assert!(
        problems.is_empty(),
        "the core's layers point the wrong way:\n  {}",
        problems.join("\n  ")
    );
}

/// The checker itself catches an upward edge and a cycle.
#[test]
fn checker_sees_upward_uses_and_cycles() {
    let refs = references(
        "use crate::registry::RegistryId;\nfn f() { crate::peer::x(); }",
        1,
    );
    assert_eq!(refs, vec![("registry".into(), 1), ("peer".into(), 2)]);
    let nested = references("use super::super::store::Store;\nuse super::Sib;", 2);
    assert_eq!(nested, vec![("store".into(), 1)]);
    let test_only = "fn a() {}\n#[cfg(test)]\nmod tests { use crate::peer::X; }\n";
    assert!(references(&strip_tests(&clean(test_only)), 1).is_empty());
    let grouped = references("use crate::{store::Store, trust::{self, Sig}};", 1);
    assert_eq!(grouped, vec![("store".into(), 1), ("trust".into(), 1)]);
    let e = |from: &str, to: &str| Edge {
        from: from.into(),
        to: to.into(),
        at: String::new(),
    };
    assert!(find_cycle(&[e("a", "b"), e("b", "c")]).is_none());
    let cycle = find_cycle(&[e("a", "b"), e("b", "c"), e("c", "a")]).unwrap();
    assert_eq!(cycle.len(), 3);
}

fn top_level_modules(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    clean(&lib)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

/// Every use of another top-level module, from every source file.
fn module_edges(src: &Path) -> Vec<Edge> {
    let root_names = root_reexports(src);
    let top: BTreeSet<String> = top_level_modules(src).into_iter().collect();
    let mut edges = Vec::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["lib.rs"] || parts.last().is_some_and(|p| p == "tests.rs") {
            continue; // the root itself; test-only files
        }
        let from = parts[0].trim_end_matches(".rs").to_owned();
        // How deep the file's module is: src/a.rs and src/a/mod.rs are 1.
        let depth = parts.len() - usize::from(parts.last().unwrap() == "mod.rs");
        let text = strip_tests(&clean(&std::fs::read_to_string(&file).unwrap()));
        for (name, line) in references(&text, depth) {
            // A top-level module, or a name `lib.rs` re-exports from one;
            // anything else (a macro, an item of lib.rs) is no module.
            let to = if top.contains(&name) {
                name
            } else if let Some(m) = root_names.get(&name).filter(|m| top.contains(*m)) {
                m.clone()
            } else {
                continue;
            };
            if to != from {
                edges.push(Edge {
                    from: from.clone(),
                    to,
                    at: format!("core/src/{}:{line}", rel.display()),
                });
            }
        }
    }
    edges
}

/// The first segment after the crate root of every path in `text`, with
/// its line; `depth` is how deep the file's module sits below the root.
fn references(text: &str, depth: usize) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let line_at = |i: usize| text[..i].matches('\n').count() + 1;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0
            || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':'
            || bytes[i - 1] == b'$' && (i < 2 || !is_ident(bytes[i - 2]));
        if !at_word_start {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let after = if let Some(r) = rest.strip_prefix("crate::") {
            Some(r)
        } else if rest.starts_with("super::") {
            let mut r = rest;
            let mut ups = 0;
            while let Some(next) = r.strip_prefix("super::") {
                r = next;
                ups += 1;
            }
            (ups >= depth).then_some(r)
        } else {
            None
        };
        if let Some(r) = after {
            let line = line_at(i);
            for name in first_segments(r) {
                out.push((name, line));
            }
            i += rest.len() - r.len();
        } else {
            i += 1;
        }
    }
    out.dedup();
    out
}

/// `a::b` → `a`; `{a::b, c, d::{e}}` → `a`, `c`, `d`.
fn first_segments(r: &str) -> Vec<String> {
    let r = r.trim_start();
    if let Some(inner) = r.strip_prefix('{') {
        let mut names = Vec::new();
        let mut level = 0;
        let mut at_item_start = true;
        let mut chars = inner.char_indices().peekable();
        while let Some((j, c)) = chars.next() {
            match c {
                '{' => level += 1,
                '}' if level == 0 => break,
                '}' => level -= 1,
                ',' if level == 0 => at_item_start = true,
                c if at_item_start && (c.is_alphanumeric() || c == '_') => {
                    let word: String = inner[j..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    for _ in 1..word.chars().count() {
                        chars.next();
                    }
                    if word != "self" {
                        names.push(word);
                    }
                    at_item_start = false;
                }
                _ => {}
            }
        }
        names
    } else {
        let word: String = r
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            Vec::new()
        } else {
            vec![word]
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Names `lib.rs` re-exports, mapped to the top-level module they come from.
fn root_reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = clean(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let stmt = stmt.trim();
        let Some(path) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let module = path.split("::").next().unwrap().trim().to_owned();
        let names = path
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .skip(1)
            .filter(|w| !w.is_empty() && *w != "self");
        for name in names {
            map.insert(name.to_owned(), module.clone());
        }
    }
    map
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The source with comments and the insides of string and char literals
/// blanked out (newlines kept, so line numbers stay right).
fn clean(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let mut level = 0;
            let mut j = i;
            loop {
                if b[j..].starts_with(b"/*") {
                    level += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    level -= 1;
                    j += 2;
                    if level == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if (rest[0] == b'r' || rest.starts_with(b"br"))
            && (i == 0 || !is_ident(b[i - 1]))
            && raw_string_len(rest).is_some()
        {
            i + raw_string_len(rest).unwrap()
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' && char_literal_len(rest).is_some() {
            i + char_literal_len(rest).unwrap()
        } else {
            out.push(b[i]);
            i += 1;
            continue;
        };
        blank(&mut out, &b[i..end]);
        i = end;
    }
    String::from_utf8(out).unwrap()
}

fn raw_string_len(s: &[u8]) -> Option<usize> {
    let start = if s.starts_with(b"br") { 2 } else { 1 };
    let hashes = s[start..].iter().take_while(|&&c| c == b'#').count();
    if s.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let body = start + hashes + 1;
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let end = s[body..].windows(close.len()).position(|w| w == close)?;
    Some(body + end + close.len())
}

/// `'x'`, `'\n'`, `'\u{1F600}'`, `'é'`; `None` for a lifetime.
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let close = s[2..].iter().position(|&c| c == b'\'')?;
        return Some(close + 3);
    }
    let text = std::str::from_utf8(&s[1..s.len().min(6)])
        .unwrap_or_else(|e| std::str::from_utf8(&s[1..1 + e.valid_up_to()]).unwrap());
    let c = text.chars().next()?;
    (text[c.len_utf8()..].starts_with('\'')).then(|| c.len_utf8() + 2)
}

/// `text` without `#[cfg(test)]` modules (inline or declared).
fn strip_tests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let item = after["#[cfg(test)]".len()..].trim_start();
        let is_mod = item.starts_with("mod ") || item.starts_with("pub(crate) mod ");
        let Some(open) = after.find(['{', ';']).filter(|_| is_mod) else {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        };
        let mut end = open + 1;
        if after.as_bytes()[open] == b'{' {
            let mut level = 0;
            for (j, c) in after[open..].char_indices() {
                match c {
                    '{' => level += 1,
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            end = open + j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        out.extend(
            after[..end]
                .chars()
                .map(|c| if c == '\n' { '\n' } else { ' ' }),
        );
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// One cycle among the modules, as the edges that form it.
fn find_cycle(edges: &[Edge]) -> Option<Vec<Edge>> {
    let mut graph: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().push(e);
    }
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a Edge>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a Edge>,
    ) -> Option<Vec<Edge>> {
        state.insert(node, 1);
        for e in graph.get(node).into_iter().flatten() {
            match state.get(e.to.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path
                        .iter()
                        .position(|p| p.from == e.to)
                        .unwrap_or(path.len());
                    let mut cycle: Vec<Edge> = path[start..].iter().map(|&p| p.clone()).collect();
                    cycle.push((*e).clone());
                    return Some(cycle);
                }
                0 => {
                    path.push(e);
                    if let Some(c) = visit(&e.to, graph, state, path) {
                        return Some(c);
                    }
                    path.pop();
                }
                _ => {}
            }
        }
        state.insert(node, 2);
        None
    }
    let nodes: Vec<&str> = graph.keys().copied().collect();
    for node in nodes {
        if state.get(node).copied().unwrap_or(0) == 0 {
            let mut path = Vec::new();
            if let Some(c) = visit(node, &graph, &mut state, &mut path) {
                return Some(c);
            }
        }
    }
    None
}
