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
        // Unit tests may build their own clocks and fixtures.
        let code_part = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code_part.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in forbidden {
                if code.contains(bad) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
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
