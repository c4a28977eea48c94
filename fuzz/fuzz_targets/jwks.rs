//! JWKS document parsing: the body of a third party's HTTP response, turned into verification keys.

#![no_main]

use claimgate::jwks::{Alg, KeySet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the provider's allowed algorithms, as `algorithms:` would.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let allowed: Vec<Alg> = Alg::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| (pick >> (i % 8)) & 1 == 1)
        .map(|(_, a)| a)
        .collect();
    if let Ok((set, _warnings)) = KeySet::from_jwks(body, &allowed) {
        assert!(!set.is_empty());
        let _ = set.lookup(None);
        let _ = set.lookup(Some("k"));
    }
});
