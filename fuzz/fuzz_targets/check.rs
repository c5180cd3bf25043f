//! Coverage-guided fuzzing of the checker and autodiff: any bytes may be rejected, none may
//! panic. From the repository's root, seeded with the gallery:
//! `cargo +nightly fuzz run check fuzz/corpus/check examples -- -timeout=10`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        if let Ok(c) = lamina::driver::compile_source(src, "fuzz.lam", &[]) {
            let _ = c.joint();
        }
    }
});
