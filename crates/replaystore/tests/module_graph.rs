//! The engine's top-level modules import each other without a cycle (issue 13), so each one can
//! be read, tested and changed with only what is below it in mind.
//!
//! The graph is read from the source: every `crate::<module>` path (in `use` lines and inline),
//! `crate::{a::.., b::..}` groups, and `crate::<Item>` through the re-exports of lib.rs, each
//! counted for the top-level module of the file it is in (`src/x.rs` and everything under
//! `src/x/` are module `x`). Comment lines are skipped. `super::` paths are not followed: the
//! engine uses them only inside a module (`src/x/y.rs` to `x`, a test module to its parent).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges left out of the check: each closes a cycle that a named piece of work removes. When
/// the edge disappears from the source, this test fails until its entry is deleted, so the list
/// only ever shrinks.
const ALLOWED: &[Allowed] = &[];

struct Allowed {
    from: &'static str,
    to: &'static str,
    why: &'static str,
}

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn engine_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = import_graph(&src);
    for a in ALLOWED {
        let present = graph.get_mut(a.from).is_some_and(|to| to.remove(a.to));
        assert!(
            present,
            "allowed edge {} -> {} is gone from the source: delete its entry from ALLOWED \
             (it was: {})",
            a.from, a.to, a.why
        );
    }
    let cycles: Vec<Vec<String>> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    let edges = |c: &Vec<String>| -> Vec<String> {
        let mut out = Vec::new();
        for from in c {
            for to in graph[from].iter().filter(|t| c.contains(t)) {
                out.push(format!("{from} -> {to}"));
            }
        }
        out
    };
    let shown: Vec<String> = cycles
        .iter()
        .map(|c| format!("{c:?} through {:?}", edges(c)))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between engine modules: {shown:#?}"
    );
}

/// The checker itself: a cycle in a small graph is found, a chain is not.
#[test]
fn components_find_cycles() {
    let g = |edges: &[(&str, &str)]| -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    let chain = g(&[("a", "b"), ("b", "c"), ("a", "c")]);
    assert!(components(&chain).iter().all(|c| c.len() == 1));
    let cyclic = g(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]);
    let big: Vec<_> = components(&cyclic)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert_eq!(big, vec![vec!["a", "b", "c"]]);
}

/// Parsing: the forms of paths that make an edge, and the ones that do not.
#[test]
fn references_are_found() {
    let reexports = BTreeMap::from([("Error".to_string(), "error".to_string())]);
    let line = "use crate::{fs::Fs, storage::{Mapped, OpenMode}}; let e: crate::Error = \
                crate::tombstone::log(x); super::segment_set::Edit; my_crate::store::X";
    let mut got = BTreeSet::new();
    references(line, &reexports, &mut got);
    let want = ["error", "fs", "storage", "tombstone"];
    assert_eq!(got, want.iter().map(|s| s.to_string()).collect());
}

/// Module -> the modules it refers to (itself left out).
fn import_graph(src: &Path) -> Graph {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let reexports = reexports(&lib);
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.iter().next().expect("a file name").to_string_lossy();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let to = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            if !line.trim_start().starts_with("//") {
                references(line, &reexports, to);
            }
        }
        to.remove(&module);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for to in graph.values_mut() {
        to.retain(|m| modules.contains(m));
    }
    graph
}

/// Adds to `out` the top-level modules that `line` refers to.
fn references(line: &str, reexports: &BTreeMap<String, String>, out: &mut BTreeSet<String>) {
    let mut add = |name: &str| match reexports.get(name) {
        Some(m) => {
            out.insert(m.clone());
        }
        None if name.starts_with(|c: char| c.is_ascii_lowercase()) => {
            out.insert(name.to_string());
        }
        None => {}
    };
    let prefix = "crate::";
    for (at, _) in line.match_indices(prefix) {
        // `my_crate::` or `x::crate::` is not this crate's root.
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &line[at + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => group_heads(group).iter().for_each(|h| add(h)),
            None => add(ident(rest)),
        }
    }
}

/// The first path segment of each item of a `{a::x, b::{y, z}, C}` group (from after `{`).
fn group_heads(group: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                heads.push(ident(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// `pub use module::{A, B};` and `pub use module::A;` of lib.rs: item name -> module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let module = ident(path).to_string();
        let items = match path.find('{') {
            Some(i) => path[i + 1..].trim_end_matches('}').to_string(),
            None => path.rsplit("::").next().unwrap_or("").to_string(),
        };
        for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.insert(item.to_string(), module.clone());
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list a source directory") {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Strongly connected components (Tarjan), each sorted; a component of more than one module
/// is a cycle.
fn components(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    c.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                c.sort();
                self.out.push(c);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}
