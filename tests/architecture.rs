//! Keeps the dependency direction of GUIDE.md true: the core does no I/O and
//! imports nothing of ours; front ends never call each other; only `app`
//! reads the configuration, and `config` imports no front end or driver.

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

/// The modules of ours that `text` names (`crate::config::X`,
/// `crate::{config, core}`, `super::config` from a module's `mod.rs`, ...),
/// each with the line it is named on. `depth` is how many `super::` lead
/// from the file to the crate root: 1 for `src/dns/mod.rs`, 2 for
/// `src/dns/udp.rs`.
fn modules_named(text: &str, depth: usize) -> Vec<(usize, String)> {
    // Comments out; everything after the unit tests out.
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.replace(&"super::".repeat(depth), "crate::");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = code[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of every top-level item of the group.
            let (mut level, mut item_start) = (0, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' if level == 0 => break,
                    '}' => level -= 1,
                    ',' if level == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        found.push((line_of(at), ident(&group[i..])));
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line_of(at), ident(rest)));
        }
    }
    found
}

/// Every place under src/`module` that names one of `forbidden` (modules of ours).
fn imports(module: &str, forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root = src.join(module);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for f in files {
        let below = f.strip_prefix(&src).unwrap().components().count();
        let depth = if f.ends_with("mod.rs") {
            below - 1
        } else {
            below
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, named) in modules_named(&text, depth) {
            if forbidden.contains(&named.as_str()) {
                found.push(format!("{}:{line}: names crate::{named}", f.display()));
            }
        }
    }
    found
}

#[test]
fn only_app_reads_the_configuration() {
    for module in ["core", "dns", "http", "store", "events"] {
        let v = imports(module, &["config", "app"]);
        assert!(
            v.is_empty(),
            "{module} must get its settings from app, not read config:\n{}",
            v.join("\n")
        );
    }
}

#[test]
fn config_imports_no_front_end_or_driver() {
    let v = imports("config", &["dns", "http", "store", "events", "app"]);
    assert!(
        v.is_empty(),
        "config may import only core:\n{}",
        v.join("\n")
    );
}

/// The scan sees the old imports of config from dns, and the other
/// spellings of a path to a module.
#[test]
fn the_scan_finds_every_way_of_naming_a_module() {
    let names = |text: &str, depth| -> Vec<String> {
        modules_named(text, depth)
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    assert_eq!(names("pub use crate::config::RrlConfig;", 2), ["config"]);
    assert_eq!(
        names("use crate::config::{Config, DnsConfig};", 1),
        ["config"]
    );
    assert_eq!(
        names("use crate::{\n    config::X,\n    core::{a, b},\n};", 1),
        ["config", "core"]
    );
    assert_eq!(names("fn f(c: &crate::config::Config) {}", 1), ["config"]);
    assert_eq!(names("use super::config::Config;", 1), ["config"]);
    assert_eq!(names("use super::super::config::X;", 2), ["config"]);
    // A sibling inside the module is not a module of the crate.
    assert_eq!(names("use super::rrl::Limiter;", 2), Vec::<String>::new());
    assert!(names("// use crate::config::X;", 1).is_empty());
    assert!(names("#[cfg(test)]\nuse crate::config::X;", 1).is_empty());
}

#[test]
fn auth_takes_plain_settings_and_imports_no_front_end_store_or_config() {
    let v = imports("auth", &["http", "dns", "store", "config", "app"]);
    assert!(
        v.is_empty(),
        "auth must be handed its settings, not reach for them:\n{}",
        v.join("\n")
    );
    let v = violations(
        "auth",
        &["axum", "hickory", "SystemTime::now", "Instant::now"],
    );
    assert!(
        v.is_empty(),
        "auth takes `now` as a parameter:\n{}",
        v.join("\n")
    );
}

#[test]
fn the_resolver_driver_proposes_changes_and_imports_no_front_end_or_config() {
    let v = imports("resolve", &["http", "dns", "config", "app"]);
    assert!(
        v.is_empty(),
        "resolve follows the feed and proposes through the log; app hands it its settings:\n{}",
        v.join("\n")
    );
    let v = violations("resolve", &["axum", "hickory_server"]);
    assert!(v.is_empty(), "resolve serves nothing:\n{}", v.join("\n"));
}

#[test]
fn the_health_driver_proposes_changes_and_imports_no_front_end_or_config() {
    let v = imports("health", &["http", "dns", "config", "app", "resolve"]);
    assert!(
        v.is_empty(),
        "health follows the feed and proposes through the log; app hands it its settings:\n{}",
        v.join("\n")
    );
    let v = violations("health", &["axum", "hickory_server"]);
    assert!(v.is_empty(), "health serves nothing:\n{}", v.join("\n"));
}

#[test]
fn audit_knows_files_not_requests_or_the_registry() {
    let v = imports(
        "audit",
        &["core", "http", "dns", "store", "events", "config", "app"],
    );
    assert!(
        v.is_empty(),
        "audit imports a module of ours:\n{}",
        v.join("\n")
    );
    let v = violations(
        "audit",
        &["axum", "hickory", "SystemTime::now", "Instant::now"],
    );
    assert!(
        v.is_empty(),
        "audit must take time and records as given:\n{}",
        v.join("\n")
    );
}

#[test]
fn asker_classes_import_no_front_end_store_or_config() {
    let v = imports(
        "askers",
        &["http", "dns", "store", "config", "app", "events"],
    );
    assert!(
        v.is_empty(),
        "askers follows the registry and decides with policy; front ends ask it:\n{}",
        v.join("\n")
    );
}

#[test]
fn policy_decides_with_pure_functions_over_core_values() {
    let v = imports(
        "policy",
        &[
            "http", "dns", "store", "events", "config", "app", "auth", "audit",
        ],
    );
    assert!(
        v.is_empty(),
        "policy imports more than core:\n{}",
        v.join("\n")
    );
    let v = violations(
        "policy",
        &[
            "tokio",
            "axum",
            "hickory",
            "std::fs",
            "std::net::TcpStream",
            "Mutex",
            "RwLock",
            "Instant::now",
            "SystemTime::now",
        ],
    );
    assert!(
        v.is_empty(),
        "policy must decide without I/O, locks or a clock:\n{}",
        v.join("\n")
    );
}
