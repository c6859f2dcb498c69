//! Keeps the dependency direction of GUIDE.md true: the core does no I/O and
//! imports nothing of ours; front ends never call each other.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Lines of `module` (a folder under src/) that mention a forbidden path.
fn violations(module: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    // A module's `tests.rs` (declared under `#[cfg(test)]`) is test code.
    files.retain(|f| !f.ends_with("tests.rs"));
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in violations_in(&text, forbidden) {
            found.push(format!("{}:{n}: {line}", f.display()));
        }
    }
    found
}

/// The lines (number, text) of `text` that mention a forbidden path, as
/// written or inside a grouped import (`use crate::{dns, http::X};`, also
/// over several lines). Comments and unit tests do not count.
fn violations_in(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
    // Unit tests may build their own clocks and fixtures.
    let code_part = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: Vec<&str> = code_part
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let mut found = Vec::new();
    for (n, line) in code.iter().enumerate() {
        if forbidden.iter().any(|bad| line.contains(bad)) {
            found.push((n + 1, code_part.lines().nth(n).unwrap().trim().to_string()));
        }
    }
    // Grouped imports: each `crate::{...}` spelled out as `crate::<first segment>`.
    let joined = code.join("\n");
    let mut rest = joined.as_str();
    while let Some(at) = rest.find("crate::{") {
        let group_start = at + "crate::{".len();
        let mut depth = 1;
        let mut end = group_start;
        for (i, c) in rest[group_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = group_start + i;
                break;
            }
        }
        let group = &rest[group_start..end];
        let line = joined[..joined.len() - rest.len() + at]
            .matches('\n')
            .count();
        let mut depth = 0;
        let mut entry = String::new();
        for c in group.chars().chain([',']) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let first = entry.trim().split("::").next().unwrap_or("").trim();
                    let spelled = format!("crate::{first}");
                    if !first.is_empty() && forbidden.iter().any(|bad| spelled == *bad) {
                        found.push((line + 1, format!("{} (in crate::{{...}})", spelled)));
                    }
                    entry.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                entry.push(c);
            }
        }
        rest = &rest[end..];
    }
    found
}

#[test]
fn the_checker_finds_direct_and_grouped_imports_but_not_comments() {
    let forbidden = ["crate::dns", "crate::http", "tokio"];
    let text = "use crate::core::Name;\n\
                use crate::dns::Answers;\n\
                // use crate::http::ApiError;\n\
                use crate::{core, http};\n\
                use crate::{\n    names::X,\n    dns::{a, b},\n};\n\
                fn f() { tokio::spawn(g()); }\n\
                #[cfg(test)]\n\
                mod tests { use crate::dns::testing; }\n";
    let lines: Vec<usize> = violations_in(text, &forbidden)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(lines, [2, 9, 4, 5], "{:?}", violations_in(text, &forbidden));
}

#[test]
fn core_does_no_io_and_imports_nothing_of_ours() {
    let v = violations(
        "core",
        &[
            "crate::dns",
            "crate::http",
            "crate::app",
            "crate::config",
            "hickory",
            "axum",
            "tokio",
            "std::net::TcpStream",
            "std::net::UdpSocket",
            "TcpListener",
            "std::fs",
            "reqwest",
            "Instant::now",
            "SystemTime::now",
        ],
    );
    assert!(v.is_empty(), "core must stay pure:\n{}", v.join("\n"));
}

#[test]
fn front_ends_do_not_call_each_other() {
    let v = violations("dns", &["crate::http", "axum"]);
    assert!(v.is_empty(), "dns imports http:\n{}", v.join("\n"));
    let v = violations("http", &["crate::dns", "hickory"]);
    assert!(v.is_empty(), "http imports dns:\n{}", v.join("\n"));
}

#[test]
fn the_store_does_not_reach_into_front_ends_or_config() {
    let v = violations(
        "store",
        &["crate::dns", "crate::http", "crate::config", "axum"],
    );
    assert!(v.is_empty(), "store imports a front end:\n{}", v.join("\n"));
}
