//! Criterion benches of claimgate's per-request hot path, each next to the crypto primitive it
//! wraps. Group and function names are stable: results are compared across commits by them.
//!
//! Run: `cargo bench --bench hot_path` (about 5 minutes; filter with e.g. `-- verify_RS256`).
//!
//! `Verifier::verify` is async (an unknown `kid` may refetch the JWKS), so it is driven by a
//! current-thread tokio runtime through criterion's `to_async`. Criterion runs the whole timed
//! loop inside one `block_on`, so the runtime adds nothing per iteration; with a known `kid` the
//! future never suspends.

mod common;

use aws_lc_rs::{hmac, signature};
use claimgate::claims::{Identity, MetadataMapping};
use claimgate::config::{
    ForwardConfig, HeaderMapping, MetadataField, RuleConfig, TokenCacheConfig,
};
use claimgate::expansion::{Context, RequestFacts};
use claimgate::headers::HeaderPlan;
use claimgate::metrics::Metrics;
use claimgate::packed_json::PackedJson;
use claimgate::policy::Policy;
use claimgate::token_cache::{digest, Session, TokenCache};
use claimgate::verify::now_seconds;
use common::{app_for, split, ISSUER};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

/// Full verify (claimgate) vs the raw primitive on the same message and signature.
fn bench_verify(c: &mut Criterion) {
    let rt = runtime();
    let now = now_seconds();
    let signers = [
        (common::rsa_2048("bench-rsa"), "RS256"),
        (common::es256("bench-ec"), "ES256"),
        (common::ed25519("bench-ed"), "EdDSA"),
        (common::hs256(), "HS256"),
    ];
    for (signer, alg) in &signers {
        let app = app_for(signer, alg);
        let verifier = &app.decider.verifier;
        let token = signer.mint(ISSUER, 1, now, 86_400);
        rt.block_on(verifier.verify(&token))
            .unwrap_or_else(|e| panic!("{alg} token must verify: {e:?}"));
        let (message, sig) = split(&token);

        let mut group = c.benchmark_group(format!("verify_{alg}"));
        group.bench_function("claimgate_verify", |b| {
            b.to_async(&rt).iter(|| verifier.verify(black_box(&token)))
        });
        match *alg {
            "HS256" => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, common::HMAC_SECRET.as_bytes());
                hmac::verify(&key, message, &sig).expect("HS256 primitive verifies");
                group.bench_function("aws_lc_hmac_verify", |b| {
                    b.iter(|| hmac::verify(&key, black_box(message), black_box(&sig)))
                });
            }
            _ => {
                let key = signer.parsed_public_key();
                key.verify_sig(message, &sig).expect("primitive verifies");
                group.bench_function("aws_lc_verify_sig", |b| {
                    b.iter(|| key.verify_sig(black_box(message), black_box(&sig)))
                });
            }
        }
        if *alg == "RS256" {
            // Everything before the crypto: size check, split, 3× base64, 2× JSON, issuer lookup.
            // A token from an unknown issuer stops right there, so this is the parse cost alone.
            let stranger = signer.mint("https://someone-else.example/", 1, now, 86_400);
            assert!(rt.block_on(verifier.verify(&stranger)).is_err());
            group.bench_function("claimgate_parse_then_reject_issuer", |b| {
                b.to_async(&rt)
                    .iter(|| verifier.verify(black_box(&stranger)))
            });

            // The library path: jsonwebtoken's decode with its aws-lc-rs backend, validating the
            // same things (alg, iss, aud, exp, nbf) and deserializing the claims to a JSON map.
            let key =
                jsonwebtoken::DecodingKey::from_rsa_raw_components(&signer.rsa_n, &signer.rsa_e);
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_audience(&[common::AUDIENCE]);
            validation.set_issuer(&[ISSUER]);
            validation.validate_nbf = true;
            jsonwebtoken::decode::<Map<String, Value>>(&token, &key, &validation)
                .expect("jsonwebtoken decodes");
            group.bench_function("jsonwebtoken_decode", |b| {
                b.iter(|| {
                    jsonwebtoken::decode::<Map<String, Value>>(black_box(&token), &key, &validation)
                })
            });
        }
        group.finish();
        if *alg == "RS256" {
            // The pieces of that parse, replicated outside claimgate (its `parse` is private):
            // where the ~3 µs before the signature check go.
            let parts: Vec<&str> = token.split('.').collect();
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let payload = base64::Engine::decode(&b64, parts[1]).expect("payload");
            let header = base64::Engine::decode(&b64, parts[0]).expect("header");
            let mut parse = c.benchmark_group("verify_RS256_parse_parts");
            parse.bench_function("base64_decode_3_parts", |b| {
                b.iter(|| {
                    for part in &parts {
                        black_box(base64::Engine::decode(&b64, black_box(part)).map(|v| v.len()))
                            .ok();
                    }
                })
            });
            parse.bench_function("json_header_to_map", |b| {
                b.iter(|| serde_json::from_slice::<Map<String, Value>>(black_box(&header)))
            });
            parse.bench_function("json_claims_to_map", |b| {
                b.iter(|| serde_json::from_slice::<Map<String, Value>>(black_box(&payload)))
            });
            parse.bench_function("json_claims_to_map_without_drop", |b| {
                b.iter_with_large_drop(|| {
                    serde_json::from_slice::<Map<String, Value>>(black_box(&payload))
                })
            });
            parse.finish();
        }
    }
}

/// RS256 verification through each backend available here. "per_call" variants build the public
/// key from its encoding on every verification, which is what jsonwebtoken does.
fn bench_rs256_backends(c: &mut Criterion) {
    let signer = common::rsa_2048("bench-rsa");
    let token = signer.mint(ISSUER, 1, now_seconds(), 86_400);
    let (message, sig) = split(&token);
    let (n, e) = (signer.rsa_n.as_slice(), signer.rsa_e.as_slice());
    let pkcs1 = signer.rsa_pkcs1_public.as_slice();

    let components = signature::RsaPublicKeyComponents { n, e };
    let parsed = components
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .expect("RSA key");
    let unparsed = signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pkcs1);
    let ring_components = ring::signature::RsaPublicKeyComponents { n, e };
    let ring_unparsed = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pkcs1,
    );
    parsed.verify_sig(message, &sig).expect("aws-lc parsed");
    components
        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
        .expect("aws-lc components");
    unparsed.verify(message, &sig).expect("aws-lc unparsed");
    ring_components
        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
        .expect("ring components");
    ring_unparsed.verify(message, &sig).expect("ring unparsed");

    let mut group = c.benchmark_group("rs256_backends");
    group.bench_function("aws_lc_parsed_key", |b| {
        b.iter(|| parsed.verify_sig(black_box(message), black_box(&sig)))
    });
    group.bench_function("aws_lc_components_per_call", |b| {
        b.iter(|| {
            components.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                black_box(message),
                black_box(&sig),
            )
        })
    });
    group.bench_function("aws_lc_unparsed_pkcs1_per_call", |b| {
        b.iter(|| unparsed.verify(black_box(message), black_box(&sig)))
    });
    group.bench_function("aws_lc_parse_key_only", |b| {
        b.iter(|| {
            black_box(&components)
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                .map(drop)
        })
    });
    group.bench_function("ring_components_per_call", |b| {
        b.iter(|| {
            ring_components.verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                black_box(message),
                black_box(&sig),
            )
        })
    });
    group.bench_function("ring_unparsed_pkcs1_per_call", |b| {
        b.iter(|| ring_unparsed.verify(black_box(message), black_box(&sig)))
    });
    group.finish();
}

/// Claim mapping, header rendering, the verified-token cache and the token digest.
fn bench_request_parts(c: &mut Criterion) {
    let rt = runtime();
    let signer = common::rsa_2048("bench-rsa");
    let app = app_for(&signer, "RS256");
    let verifier = &app.decider.verifier;
    let token = signer.mint(ISSUER, 1, now_seconds(), 86_400);
    let verified = rt.block_on(verifier.verify(&token)).expect("verifies");

    let fields = [
        ("name", None, false),
        ("email", None, true),
        ("org.tier", Some("tier"), false),
    ]
    .map(|(name, field_name, required)| MetadataField {
        name: name.into(),
        field_name: field_name.map(Into::into),
        required,
    });
    let mapping = MetadataMapping::compile(&fields, "providers[0]").expect("mapping");
    let claims = verified.claims.clone();
    let mut group = c.benchmark_group("claims");
    group.bench_function("metadata_map_3_fields", |b| {
        b.iter(|| mapping.map(black_box(&claims)))
    });
    group.finish();

    let identity = Identity {
        id: verified.user_id.clone(),
        provider: Arc::from("bench"),
        data: Arc::new(mapping.map(&claims).expect("maps")),
        token: claims.clone(),
    };
    let ctx = Context {
        identity: &identity,
        custom_data: None,
        permissions: None,
        request: None,
    };
    // What runs with no `forward` section: X-User-Id and the base64url JSON X-Claimgate-User.
    let default_plan =
        HeaderPlan::compile(&ForwardConfig::default(), None, Counter::default()).expect("plan");
    let mut five = ForwardConfig::default();
    for (name, from) in [
        ("X-User-Email", "%%user.data.email"),
        ("X-User-Tier", "%%user.data.tier"),
        ("X-User-Groups", "%%token.groups"),
        ("X-Scope", "%%token.scope"),
    ] {
        five.headers
            .insert(name.into(), HeaderMapping::Short(from.into()));
    }
    let five_plan = HeaderPlan::compile(&five, None, Counter::default()).expect("plan");
    assert_eq!(default_plan.render(&ctx).expect("renders").len(), 2);
    assert_eq!(five_plan.render(&ctx).expect("renders").len(), 6);
    let mut group = c.benchmark_group("headers");
    group.bench_function("render_default", |b| {
        b.iter(|| default_plan.render(black_box(&ctx)))
    });
    group.bench_function("render_5_plus_user_header", |b| {
        b.iter(|| five_plan.render(black_box(&ctx)))
    });
    group.finish();

    // A cache holding 10 000 sessions, as after the load bench's rotating-token run.
    let cache = TokenCache::new(&TokenCacheConfig::default(), Arc::new(Metrics::new()));
    let session = Arc::new(Session::new(verified.proof, identity, None, None, None));
    for i in 0..10_000 {
        cache.insert(digest(&format!("{token}{i}")), session.clone());
    }
    cache.insert(digest(&token), session.clone());
    let key = digest(&token);
    let still_valid = |p: &claimgate::verify::Proof| verifier.still_valid(p, now_seconds());
    assert!(cache.get(&key, still_valid).is_some(), "cache hit");
    let mut group = c.benchmark_group("token_cache");
    // What `Decider::session` does for a repeated token: digest, lookup, exp + key-still-published.
    group.bench_function("hit_digest_get_still_valid", |b| {
        b.iter(|| cache.get(&digest(black_box(&token)), still_valid))
    });
    group.bench_function("get_only", |b| {
        b.iter(|| cache.get(black_box(&key), |_| true))
    });
    group.finish();

    let mut group = c.benchmark_group("digest");
    // The bench token is ~1 KB (an RS256 signature alone is 342 base64url characters).
    group.bench_function("sha256_token", |b| b.iter(|| digest(black_box(&token))));
    group.finish();
}

/// Route lookup (first match wins over the contract's rules) and `allow_when` evaluation.
fn bench_rules(c: &mut Criterion) {
    let rules: Vec<RuleConfig> = serde_json::from_value(json!([
        {"match": {"path_prefix": "/public", "methods": ["GET"]}, "auth": "none"},
        {"name": "admins", "match": {"path_prefix": "/admin"},
         "allow_when": {"%%user.custom_data.roles": {"%in": ["admin"]}}},
        {"name": "staff-readers", "match": {"path_prefix": "/reports"},
         "allow_when": {"%and": [
             {"%%user.custom_data.canRead": true},
             {"%%user.custom_data.userGroup": {"%in": ["staff", "ops"]}},
             {"%%request.method": {"%in": ["GET", "HEAD"]}},
             {"%not": {"%%user.custom_data.blocked": true}}]}},
        {"match": {"path_prefix": "/"}, "allow_when": {"%%user.custom_data.canRead": true}},
    ]))
    .expect("rules deserialize");
    let policy = Policy::compile(&rules, &Default::default(), true).expect("rules compile");
    let identity = Identity {
        id: "ann".into(),
        provider: Arc::from("bench"),
        data: Arc::default(),
        token: Arc::default(),
    };
    let document = PackedJson::pack(&json!({"user_id": "ann", "roles": ["reader", "admin"],
        "canRead": true, "userGroup": "ops", "name": "Ann"}));
    let ctx = |method| Context {
        identity: &identity,
        custom_data: Some(document.root()),
        permissions: None,
        request: Some(RequestFacts {
            method,
            path: "/reports/2026",
            remote_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            client_cert: None,
        }),
    };
    let get = http::Method::GET;
    let route = |path| policy.route(&get, path).expect("a rule matches");
    route("/admin/users")
        .check(&ctx("GET"))
        .expect("admin allowed");
    route("/reports/2026")
        .check(&ctx("GET"))
        .expect("staff reader allowed");
    assert!(route("/reports/2026").check(&ctx("POST")).is_err());
    let mut group = c.benchmark_group("rules");
    group.bench_function("route_and_check_in", |b| {
        b.iter(|| route(black_box("/admin/users")).check(black_box(&ctx("GET"))))
    });
    group.bench_function("route_and_check_and_of_4", |b| {
        b.iter(|| route(black_box("/reports/2026")).check(black_box(&ctx("GET"))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Two noisy shared cores: short windows, more tolerance before calling a change.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .noise_threshold(0.05);
    targets = bench_verify, bench_rs256_backends, bench_request_parts, bench_rules
}
criterion_main!(benches);
