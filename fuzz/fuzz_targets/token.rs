//! Token parsing and verification against a fixed JWKS (RSA, P-256, P-384, Ed25519 keys) and a
//! fixed HMAC secret, then the claim mapping and header rendering a verified token goes through.
//!
//! Input: one mode byte, then
//! - mode 0: the token exactly as a client would send it;
//! - mode 1 / 2: header JSON, a NUL byte, claims JSON; the target signs them (HS256 with the
//!   fixed secret / EdDSA with the fixed Ed25519 key), so that mutated headers and claims get past
//!   the signature and reach the time, audience, user-id and mapping checks.
//!
//! The JWKS and the seeds in `fuzz/seeds/token/` come from `fuzz/seeds/gen_token_seeds.py`.

#![no_main]

use aws_lc_rs::{hmac, signature::Ed25519KeyPair, signature::KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use claimgate::app::App;
use claimgate::claims::Identity;
use claimgate::expansion::Context;
use claimgate::jwks::{Alg, KeySet};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const HMAC_SECRET: &str = "fuzz-secret-0123456789abcdef-0123456789";
const ED_SEED: [u8; 32] = [7; 32];
const JWKS: &str = include_str!("token_jwks.json");
const CONFIG: &str = "
listen: 127.0.0.1:0
upstream: {url: 'http://127.0.0.1:9'}
forward:
  headers:
    X-User-Id: '%%user.id'
    X-User-Email: '%%user.data.email'
    X-User-Groups: {from: '%%token.groups', encoding: csv}
    X-Org: {from: '%%token.org', encoding: json}
  user_header: X-Claimgate-User
providers:
  - name: jwks
    issuer: 'https://jwks.fuzz.example/'
    # Nothing listens there: the one fetch at startup fails, and the huge minimum refresh means an
    # unknown kid never fetches again, so the target does no network I/O per input.
    jwks_uri: 'http://127.0.0.1:9/jwks.json'
    jwks_timeout_ms: 500
    jwks_min_refresh_seconds: 1000000000
    jwks_max_refresh_seconds: 1000000000
    audience: ['claimgate-fuzz']
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
    metadata_fields:
      - {name: email, required: true}
      - {name: org.tier, field_name: tier}
  - name: hmac
    issuer: 'https://hmac.fuzz.example/'
    signing_keys: ['fuzz-secret-0123456789abcdef-0123456789']
    algorithms: [HS256, HS384, HS512]
    audience: ['claimgate-fuzz', 'other']
    require_any_audience: true
    user_id_claim: sub
    metadata_fields:
      - {name: name}
";

struct Fixture {
    rt: tokio::runtime::Runtime,
    app: App,
    ed: Ed25519KeyPair,
    hmac: hmac::Key,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = claimgate::config::parse_str(CONFIG, &|_| None).expect("fuzz config parses");
        let app = App::build(config, None).expect("fuzz config builds");
        let store = &app.key_stores[0];
        // Stamps the last fetch attempt, so unknown kids are answered from memory from now on.
        assert!(
            rt.block_on(store.refresh()).is_err(),
            "nothing may serve 127.0.0.1:9"
        );
        let (set, warnings) = KeySet::from_jwks(JWKS.as_bytes(), &Alg::ALL).expect("fixed JWKS");
        assert!(warnings.is_empty(), "{warnings:?}");
        store.install(set);
        let ed = Ed25519KeyPair::from_seed_unchecked(&ED_SEED).expect("Ed25519 seed");
        assert!(JWKS.contains(&URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())));
        let hmac = hmac::Key::new(hmac::HMAC_SHA256, HMAC_SECRET.as_bytes());
        Fixture { rt, app, ed, hmac }
    })
}

fn signed(header: &[u8], claims: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
        signer => {
            let at = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (header, claims) = (&rest[..at], rest.get(at + 1..).unwrap_or_default());
            if signer == 1 {
                signed(header, claims, |m| hmac::sign(&f.hmac, m).as_ref().to_vec())
            } else {
                signed(header, claims, |m| f.ed.sign(m).as_ref().to_vec())
            }
        }
    };
    let decider = &f.app.decider;
    let Ok(verified) = f.rt.block_on(decider.verifier.verify(&token)) else {
        return;
    };
    assert!(!verified.user_id.is_empty());
    assert!(!verified.user_id.chars().any(char::is_control));
    let Ok(data) = decider.mappings[verified.proof.provider].map(&verified.claims) else {
        return;
    };
    let identity = Identity {
        id: verified.user_id.clone(),
        provider: decider.verifier.providers[verified.proof.provider]
            .name
            .clone(),
        data,
        token: verified.claims.clone(),
    };
    let ctx = Context {
        identity: &identity,
        custom_data: None,
        permissions: None,
        request: None,
    };
    if let Ok(rendered) = decider.headers.render(&ctx) {
        for (_, value) in rendered {
            // What the upstream receives must never split or end a header line.
            assert!(!value
                .as_bytes()
                .iter()
                .any(|b| matches!(b, b'\r' | b'\n' | 0)));
        }
    }
});
