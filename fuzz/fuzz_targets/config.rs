//! Config YAML: parsing, `${VAR}` expansion, typed deserialization and validation, then the
//! compile step `claimgate check` runs (`App::build`, which does no network I/O).

#![no_main]

use claimgate::app::App;
use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    match name {
        "SECRET" | "JWT_SECRET" | "JWT_SECRET_PREVIOUS" | "LEGACY_JWT_SECRET" => {
            Some("fuzz-secret-0123456789abcdef-0123456789".into())
        }
        "MONGODB_URI" => Some("mongodb://127.0.0.1:9/app".into()),
        "MONGODB_USER" | "MONGODB_PASSWORD" | "NAME" | "VAR" => Some("fuzz".into()),
        "EMPTY" => Some(String::new()),
        "YAML" => Some("{a: [1, 2]}\n- x: ${SECRET}".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = claimgate::config::parse_str(text, &env) else {
        return;
    };
    // The compile step reads the certificate and CA files a config names; endless or blocking
    // special files there are the operator's own doing, not something to fuzz.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    let _ = App::build(config, None);
});
