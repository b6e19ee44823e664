//! Helpers shared by the serving integration tests.

use std::io::Write as _;

use serving::runtime;

/// True when ONNX Runtime is usable; false (after a notice) when the test
/// should be skipped; panics when it must run but cannot.
///
/// Skipped only when the library is absent and `LEADSCORE_REQUIRE_ORT` is
/// unset; CI sets `LEADSCORE_REQUIRE_ORT=1`.
pub fn ort_available() -> bool {
    match runtime::runtime() {
        Ok(_) => true,
        Err(e) => {
            let required = std::env::var_os("LEADSCORE_REQUIRE_ORT").is_some_and(|v| !v.is_empty());
            if e.is_missing() && !required {
                // Written to the raw stderr handle so the test harness does
                // not capture it: a skip must be visible in the log.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED (ONNX Runtime absent, LEADSCORE_REQUIRE_ORT unset): {e}"
                );
                false
            } else {
                panic!("ONNX Runtime unavailable: {e}");
            }
        }
    }
}
