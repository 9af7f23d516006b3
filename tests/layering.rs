//! The library's module graph against the layer order stated in `ARCHITECTURE.md`.
//!
//! Reads every `src/**/*.rs` file of the library (the binary's `main.rs` and `cli/` sit above everything), collects the
//! module paths its code names (`crate::a::b`, `super::c`, `use` trees with braces, and `pub use` re-exports resolved
//! to the module that defines the item), and checks two rules:
//! * top-level modules depend one way: a module may name only modules of lower layers (the fenced `layers` block of
//!   `ARCHITECTURE.md`, lowest first, one layer per line);
//! * at every level, sibling modules form no import circle (a child naming its parent, or a parent its children, is
//!   not a sibling edge).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file and its module path (`src/face/mod.rs` → `["face"]`, `src/lib.rs` → `[]`).
fn library_files() -> BTreeMap<ModPath, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).expect("read src").map(|e| e.expect("dir entry").path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = src_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut map = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let last = parts.pop().expect("file name");
        // The binary (`main.rs`, `cli`) sits above the library and is not part of its graph.
        if parts.first().is_some_and(|p| p == "cli") || (parts.is_empty() && (last == "main.rs" || last == "cli.rs")) {
            continue;
        }
        match last.as_str() {
            "lib.rs" | "mod.rs" => {}
            other => parts.push(other.trim_end_matches(".rs").to_owned()),
        }
        map.insert(parts, file);
    }
    map
}

/// The code with comments, string and char literals blanked out (so paths in docs and messages do not count).
fn strip_comments_and_strings(src: &str) -> String {
    let bytes: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i] == '/' && bytes.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == '*' && bytes.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || (next == Some('#') && bytes.get(i + 2).is_some_and(|c| *c == '"' || *c == '#')))
            && !bytes.get(i.wrapping_sub(1)).is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string r"…" / r#"…"#.
            let mut hashes = 0;
            i += 1;
            while bytes.get(i) == Some(&'#') {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                if i >= bytes.len() {
                    break;
                }
                if bytes[i] == '"' && (0..hashes).all(|k| bytes.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && bytes.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < bytes.len() && bytes[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or("").trim();
        return if path.is_empty() { Vec::new() } else { vec![path.to_owned()] };
    };
    let prefix = tree[..open].trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (k, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand_use_tree)
        .map(|p| if p == "self" { prefix.trim_end_matches("::").to_owned() } else { format!("{prefix}{p}") })
        .collect()
}

/// Paths the code names: `use` items (expanded) and inline `crate::`/`super::` paths.
fn named_paths(code: &str) -> (Vec<String>, Vec<String>) {
    let mut paths = Vec::new();
    let mut reexports = Vec::new();
    // `use` statements, possibly over several lines.
    let mut rest = code;
    while let Some(at) = find_keyword(rest, "use") {
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        let before = rest[..at].trim_end();
        let is_pub = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        for p in expand_use_tree(&after[..end]) {
            if is_pub {
                reexports.push(p.clone());
            }
            paths.push(p);
        }
        rest = &after[end.min(after.len())..];
    }
    // Inline paths.
    for anchor in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(k) = code[from..].find(anchor) {
            let start = from + k;
            let prev = code[..start].chars().next_back();
            from = start + anchor.len();
            if prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ':') {
                continue;
            }
            let tail: String =
                code[start..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(tail.trim_end_matches(':').to_owned());
        }
    }
    (paths, reexports)
}

fn find_keyword(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = text[from..].find(word) {
        let at = from + k;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// A named path as absolute segments from the crate root, when it is a crate path.
fn absolute(path: &str, module: &ModPath, is_dir_module: bool) -> Option<ModPath> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, mut rest): (ModPath, &[&str]) = match segs.first() {
        Some(&"crate") => (Vec::new(), &segs[1..]),
        Some(&"super") => {
            // `super` of a file module is its parent; of `x/mod.rs` (module `x`) also its parent.
            let _ = is_dir_module;
            let mut base = module.clone();
            base.pop();
            (base, &segs[1..])
        }
        Some(&"self") => (module.clone(), &segs[1..]),
        _ => return None,
    };
    while rest.first() == Some(&"super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().map(|s| (*s).to_owned()));
    Some(base)
}

/// The deepest module (file) a path lies in.
fn owning_module(path: &ModPath, modules: &BTreeSet<ModPath>) -> ModPath {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)).unwrap_or_default()
}

struct Graph {
    /// `from module → to module` edges, with one file that shows each.
    edges: BTreeMap<(ModPath, ModPath), PathBuf>,
}

fn build_graph() -> Graph {
    let files = library_files();
    let modules: BTreeSet<ModPath> = files.keys().cloned().collect();
    // Re-exports: `crate::a::Item` → the module `Item` comes from.
    let mut reexport: BTreeMap<ModPath, ModPath> = BTreeMap::new();
    let mut named: BTreeMap<ModPath, Vec<ModPath>> = BTreeMap::new();
    for (module, file) in &files {
        let code = strip_comments_and_strings(&std::fs::read_to_string(file).expect("read source"));
        let is_dir = file.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let (paths, reexports) = named_paths(&code);
        for p in &reexports {
            // `pub use x::Item` in a directory module names a child relative to itself.
            let rel = if p.starts_with("crate::") || p.starts_with("super::") || p.starts_with("self::") {
                p.clone()
            } else {
                format!("self::{p}")
            };
            if let Some(target) = absolute(&rel, module, is_dir)
                && let Some(item) = target.last()
            {
                let mut alias = module.clone();
                alias.push(item.clone());
                reexport.insert(alias, owning_module(&target, &modules));
            }
        }
        let mut list = Vec::new();
        for p in paths {
            let rel = if p.starts_with("crate") || p.starts_with("super") || p.starts_with("self") {
                p
            } else if is_dir
                && modules.contains(&[module.clone(), vec![p.split("::").next().unwrap_or("").to_owned()]].concat())
            {
                // `use child::Item` inside a directory module.
                format!("self::{p}")
            } else {
                continue;
            };
            if let Some(abs) = absolute(&rel, module, is_dir) {
                list.push(abs);
            }
        }
        named.insert(module.clone(), list);
    }
    let mut edges = BTreeMap::new();
    for (module, list) in named {
        for abs in list {
            let mut target = owning_module(&abs, &modules);
            // Follow a re-export once: `crate::face::Roi` where `face` does `pub use roi::Roi`.
            if abs.len() == target.len() + 1
                && let Some(real) = reexport.get(&abs)
            {
                target = real.clone();
            }
            if target != module {
                edges.entry((module.clone(), target)).or_insert_with(|| files[&module].clone());
            }
        }
    }
    Graph { edges }
}

/// The layers of `ARCHITECTURE.md`'s fenced `layers` block, lowest first.
fn layers() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    let start = doc.find("```layers").expect("ARCHITECTURE.md has a ```layers block");
    let body = &doc[start + "```layers".len()..];
    let body = &body[..body.find("```").expect("the layers block is closed")];
    body.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn top_level_modules_depend_downwards_only() {
    let layers = layers();
    let layer_of: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i))).collect();
    let graph = build_graph();
    let files = library_files();
    let top: BTreeSet<&str> = files.keys().filter_map(|m| m.first()).map(String::as_str).collect();
    let unplaced: Vec<&&str> = top.iter().filter(|m| !layer_of.contains_key(**m)).collect();
    assert!(unplaced.is_empty(), "modules missing from ARCHITECTURE.md's layers: {unplaced:?}");
    let mut violations = Vec::new();
    for ((from, to), file) in &graph.edges {
        let (Some(a), Some(b)) = (from.first(), to.first()) else { continue };
        if a == b {
            continue;
        }
        let (la, lb) = (layer_of[a.as_str()], layer_of[b.as_str()]);
        if lb >= la {
            violations.push(format!("{} ({a}, layer {la}) names {} (layer {lb})", file.display(), to.join("::")));
        }
    }
    assert!(violations.is_empty(), "dependencies against the layer order:\n{}", violations.join("\n"));
}

#[test]
fn sibling_modules_form_no_circles() {
    let graph = build_graph();
    // Collapse each edge to the pair of siblings under their deepest common parent.
    let mut sibling_edges: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut witness: BTreeMap<(ModPath, String, String), PathBuf> = BTreeMap::new();
    for ((from, to), file) in &graph.edges {
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue; // parent ↔ descendant
        }
        let parent = from[..common].to_vec();
        let (a, b) = (from[common].clone(), to[common].clone());
        sibling_edges.entry(parent.clone()).or_default().entry(a.clone()).or_default().insert(b.clone());
        witness.entry((parent, a, b)).or_insert_with(|| file.clone());
    }
    let mut circles = Vec::new();
    for (parent, adjacency) in &sibling_edges {
        // Depth-first search for a back edge.
        let nodes: BTreeSet<&String> = adjacency.keys().chain(adjacency.values().flatten()).collect();
        let mut state: BTreeMap<&String, u8> = BTreeMap::new();
        fn visit<'a>(
            n: &'a String,
            adjacency: &'a BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<&'a String, u8>,
            stack: &mut Vec<&'a String>,
            found: &mut Vec<Vec<String>>,
        ) {
            state.insert(n, 1);
            stack.push(n);
            for m in adjacency.get(n).into_iter().flatten() {
                match state.get(m).copied().unwrap_or(0) {
                    0 => visit(m, adjacency, state, stack, found),
                    1 => {
                        let at = stack.iter().position(|s| *s == m).unwrap_or(0);
                        found.push(stack[at..].iter().map(|s| (*s).clone()).chain([m.clone()]).collect());
                    }
                    _ => {}
                }
            }
            stack.pop();
            state.insert(n, 2);
        }
        let mut found = Vec::new();
        for n in nodes {
            if state.get(n).copied().unwrap_or(0) == 0 {
                visit(n, adjacency, &mut state, &mut Vec::new(), &mut found);
            }
        }
        for cycle in found {
            let shown: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let file = &witness[&(parent.clone(), w[0].clone(), w[1].clone())];
                    format!("{} → {} (in {})", w[0], w[1], file.display())
                })
                .collect();
            circles.push(format!("under `crate::{}`: {}", parent.join("::"), shown.join(", ")));
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}

#[test]
fn use_trees_expand() {
    let mut got = expand_use_tree("crate::model::{ModelError, weights::{A, B as C}, self}");
    got.sort();
    assert_eq!(
        got,
        vec!["crate::model", "crate::model::ModelError", "crate::model::weights::A", "crate::model::weights::B"]
    );
    let code = strip_comments_and_strings("let s = \"crate::x::y\"; // crate::z\n use crate::face::Roi;");
    let (paths, _) = named_paths(&code);
    assert!(paths.iter().all(|p| p == "crate::face::Roi") && !paths.is_empty(), "{paths:?}");
}
