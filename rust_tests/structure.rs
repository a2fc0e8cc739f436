//! The crate's top-level modules import each other one way only (docs: the developers' guide).
//!
//! Module X is `src/X.rs` or `src/X/`; X depends on Y when a file of X names `crate::Y` (a path or a
//! `use crate::{Y, ...}` group), test modules (`#[cfg(test)] mod ... { }`) and `//` comments left
//! out. The same rule as python_tests/test_structure.py applies to the Python package.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// `text` without `#[cfg(test)] mod name { ... }` blocks and without `//` comments.
fn product_code(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let line = match line.find("//") {
            // a `//` inside a string literal ("http://") is not a comment
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_mod = after.strip_prefix("mod ").is_some_and(|m| {
            let name_end = m.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(m.len());
            m[name_end..].trim_start().starts_with('{')
        });
        if !is_mod {
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        let open = after.find('{').expect("a mod block opens");
        let body = &after[open + 1..];
        let mut depth = 1;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            if depth == 0 {
                end = i + 1;
                break;
            }
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a piece of code names through `crate::`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}};`: the first segment of each top-level item
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        names.insert(ident(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(after).to_string());
        }
    }
    names.retain(|n| !n.is_empty() && n != "self" && n != "super");
    names
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// module → (module it names → one file that names it).
fn graph(src: &Path) -> Graph {
    let mut files = vec![];
    rust_files(src, &mut files);
    let mut edges = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let code = product_code(&std::fs::read_to_string(&file).unwrap());
        let entry = edges.entry(module.clone()).or_default();
        for name in named_modules(&code) {
            if name != module {
                entry.entry(name).or_insert_with(|| rel.display().to_string());
            }
        }
    }
    edges
}

/// One cycle through the graph, as `a -> b (file) -> ... -> a`, if there is any.
fn find_cycle(edges: &Graph) -> Option<Vec<(String, String)>> {
    // depth-first search; a module met again while on the path closes a cycle
    fn visit(
        m: &str,
        edges: &Graph,
        path: &mut Vec<(String, String)>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<(String, String)>> {
        if let Some(i) = path.iter().position(|(on, _)| on == m) {
            return Some(path[i..].to_vec());
        }
        if done.contains(m) {
            return None;
        }
        for (next, file) in edges.get(m).into_iter().flatten() {
            path.push((m.to_string(), file.clone()));
            let found = visit(next, edges, path, done);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|m| visit(m, edges, &mut vec![], &mut done))
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 10, "read the crate's modules: {:?}", edges.keys());
    if let Some(cycle) = find_cycle(&edges) {
        let steps: Vec<String> = cycle
            .iter()
            .enumerate()
            .map(|(i, (m, file))| format!("{m} -> {} (named in src/{file})", cycle[(i + 1) % cycle.len()].0))
            .collect();
        panic!("import cycle between top-level modules:\n  {}", steps.join("\n  "));
    }
}

#[test]
fn the_reader_sees_what_a_module_names() {
    let code = product_code(
        "use crate::{a, b::{c, d}, e::f};\nfn g() { crate::h::i(); } // crate::comment\n\
         let u = \"http://x\"; crate::j::k;\n#[cfg(test)]\nmod tests { use crate::t; }\n",
    );
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "e", "h", "j"]);
    let mut edges = Graph::new();
    edges.entry("x".into()).or_default().insert("y".into(), "x.rs".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("y".into()).or_default().insert("x".into(), "y.rs".into());
    let cycle = find_cycle(&edges).expect("x -> y -> x");
    assert_eq!(cycle.len(), 2);
}
