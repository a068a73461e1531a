//! The libFuzzer runner: fuzzes the target named by `HUTCH_FUZZ_TARGET` (see
//! `hutch_fuzz::TARGETS`); `scripts/fuzz.sh` builds it with coverage instrumentation and runs
//! it over each target's corpus.

#![no_main]

use std::sync::OnceLock;

static TARGET: OnceLock<hutch_fuzz::Target> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = TARGET.get_or_init(|| {
        let name = std::env::var("HUTCH_FUZZ_TARGET").unwrap_or_default();
        hutch_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = hutch_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!("HUTCH_FUZZ_TARGET must name a target: {}", names.join(", "));
            std::process::exit(2)
        })
    });
    target(data);
});
