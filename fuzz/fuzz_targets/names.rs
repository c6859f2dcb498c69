//! Name handling round-trips: whatever parses renders back to the same
//! labels, and parsing what was rendered gives the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maxine::core::naming::{parse, render};
use maxine::core::labels::{ServiceName, normalize_label};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lower = text.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let is_dc = |l: &str| l == "dc1" || l == "dc2";
    if let Some(target) = parse(&labels, is_dc) {
        let rendered = render(&target);
        assert_eq!(rendered, labels, "render(parse(x)) == x");
        let again: Vec<&str> = rendered.iter().map(String::as_str).collect();
        assert_eq!(parse(&again, is_dc), Some(target));
    }
    if let Some(label) = normalize_label(text) {
        ServiceName::new(&label).expect("a normalized name is a valid service name");
    }
});
