//! Properties of the request path's two text-handling ends, at the library level (proptest):
//!
//! 1. Any mutation of a valid token's bytes (bit flips, inserted, deleted or replaced bytes,
//!    base64url characters included, anywhere, one or several) is refused by extraction plus
//!    verification, and nothing panics. A change anywhere alters either the signing input or
//!    the signature bytes (base64url decoding is strict, so two spellings never decode alike).
//! 2. Header rendering never emits a byte that is invalid, or ambiguous, in a header value,
//!    whatever the claim values: any Unicode, control characters, long values, nested JSON.
//! 3. A packed user document (how the user data cache holds it) unpacks to the very value it was
//!    packed from, field order included, and a path looked up in it finds what the same path
//!    finds in the value.
//!
//! Case counts are fixed so the suite stays within a few seconds; `PROPTEST_CASES` raises them.

mod common;

use claimgate::app::App;
use claimgate::claims::{ClaimPath, Identity};
use claimgate::config::{ForwardConfig, HeaderEncoding, TokenSource};
use claimgate::expansion::Context;
use claimgate::headers::{header_value, HeaderPlan};
use claimgate::jwks::{Alg, KeySet};
use claimgate::packed_json::PackedJson;
use common::{one_rule, Claims, SigningKey};
use http::{HeaderMap, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};

const HMAC_SECRET: &str = "properties-secret-0123456789abcdef-0123456789";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Two providers installed without any network: ES256 keys from a JWKS document, and an HMAC
/// secret; plus one valid token for each.
struct Fixture {
    app: App,
    tokens: Vec<String>,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ec = SigningKey::es256("ec");
        let hs = SigningKey::hs256(HMAC_SECRET);
        let hmac_issuer = "https://hmac.test";
        // The JWKS URL is never reached: the keys are installed below, and an unknown kid's
        // refetch fails at once (nothing listens on the discard port).
        let yaml = format!(
            "listen: 127.0.0.1:0
upstream: {{url: 'http://127.0.0.1:9'}}
providers:
  - name: ec
    issuer: '{}'
    jwks_uri: 'http://127.0.0.1:9/jwks.json'
    audience: ['{}']
    algorithms: [ES256]
  - name: hmac
    issuer: '{hmac_issuer}'
    signing_keys: ['{HMAC_SECRET}']
    algorithms: [HS256]
",
            common::keys::ISSUER,
            common::keys::AUDIENCE
        );
        let config = claimgate::config::parse_str(&yaml, &|_| None).expect("config parses");
        let app = App::build(config, None).expect("config builds");
        let set = json!({"keys": [ec.jwk()]}).to_string();
        let (set, warnings) = KeySet::from_jwks(set.as_bytes(), &[Alg::ES256]).expect("JWKS");
        assert!(warnings.is_empty(), "{warnings:?}");
        app.key_stores[0].install(set);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Long-lived, so that no case outlives its token.
        let claims = Claims::new().exp_in(24 * 3600);
        let tokens = vec![ec.sign(&claims), hs.sign(&claims.set("iss", hmac_issuer))];
        for token in &tokens {
            assert!(verify(&app, &rt, token.as_bytes()).is_ok(), "fixture token");
        }
        Fixture { app, tokens, rt }
    })
}

/// The request path's first two steps on `Authorization: Bearer <bytes>`: extraction, then
/// verification. `Err` says why the token was refused.
fn verify(app: &App, rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Result<(), String> {
    let value = [b"Bearer ".as_slice(), bytes].concat();
    // Bytes a header value cannot hold never reach claimgate as one.
    let value = HeaderValue::from_bytes(&value).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let sources = [TokenSource::Header("Authorization".into())];
    let (token, _) =
        claimgate::extract::token(&headers, None, &sources).map_err(|e| format!("{e:?}"))?;
    rt.block_on(app.decider.verifier.verify(&token))
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

/// `PROPTEST_CASES` when set (for a longer run), otherwise `default`: an explicit count would
/// otherwise override the variable.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Replace(Index, u8),
    /// Replaced by a base64url character: still decodes, to different bytes.
    ReplaceBase64(Index, Index),
    InsertBase64(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, c)| Mutation::ReplaceBase64(i, c)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, c)| Mutation::InsertBase64(i, c)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| i.index(len.max(1)).min(len);
    let base64 = |c: &Index| BASE64URL[c.index(BASE64URL.len())];
    match m {
        Mutation::Flip(i, bit) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), *b),
        Mutation::Delete(i) if !bytes.is_empty() => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Replace(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::ReplaceBase64(i, c) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = base64(c);
        }
        Mutation::InsertBase64(i, c) => bytes.insert(at(i, bytes.len() + 1), base64(c)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_mutation_of_a_valid_token_is_refused(
        which in 0..2usize,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let f = fixture();
        let original = f.tokens[which].as_bytes();
        let mut bytes = original.to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        prop_assume!(bytes != original);
        let verdict = verify(&f.app, &f.rt, &bytes);
        prop_assert!(
            verdict.is_err(),
            "accepted {:?} (from {:?})",
            String::from_utf8_lossy(&bytes),
            f.tokens[which]
        );
    }
}

/// Strings built to hit every branch of the plain/encoded choice: the RFC 8187 prefix in any
/// case, edge spaces, controls (C0, DEL, C1), separators, non-ASCII, plus arbitrary Unicode and
/// long runs.
fn tricky_string() -> impl Strategy<Value = String> {
    const PIECES: [&str; 28] = [
        "a",
        "Z",
        "0",
        " ",
        "\t",
        "\r",
        "\n",
        "\r\n",
        "\0",
        "\u{7f}",
        "\u{85}",
        "\u{2028}",
        "é",
        "€",
        "😀",
        "%",
        "'",
        "\"",
        ",",
        ";",
        ":",
        "=",
        "\\",
        "UTF-8''",
        "utf-8''",
        "\u{feff}",
        "\u{ffff}",
        "\u{10ffff}",
    ];
    prop_oneof![
        4 => any::<String>(),
        4 => prop::collection::vec(prop::sample::select(&PIECES[..]), 0..24).prop_map(|p| p.concat()),
        1 => (prop::sample::select(&PIECES[..]), 1000..9000usize).prop_map(|(p, n)| p.repeat(n / 4)),
    ]
}

fn claim_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What an upstream can read back exactly: visible ASCII and inner spaces only (no TAB, no
/// control, no obs-text), no leading or trailing space.
fn assert_header_safe(name: &str, value: &HeaderValue) -> Result<(), TestCaseError> {
    let bytes = value.as_bytes();
    prop_assert!(
        bytes.iter().all(|b| (0x20..0x7f).contains(b)),
        "{name}: byte outside visible ASCII in {value:?}"
    );
    prop_assert!(
        !bytes.starts_with(b" ") && !bytes.ends_with(b" "),
        "{name}: edge space in {value:?}"
    );
    Ok(())
}

fn plan() -> &'static HeaderPlan {
    static PLAN: OnceLock<HeaderPlan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let forward: ForwardConfig = serde_json::from_value(json!({
            "headers": {
                "X-Plain": "%%token.a",
                "X-Csv": {"from": "%%token.b", "encoding": "csv"},
                "X-Json": {"from": "%%token.a", "encoding": "json"},
                "X-B64": {"from": "%%token.b", "encoding": "base64url"},
                "X-User-Id": "%%user.id",
                "X-Data": "%%user.data.name",
                "X-Custom": "%%user.custom_data.x",
            },
            "user_header": "X-Claimgate-User",
        }))
        .expect("forward config");
        HeaderPlan::compile(&forward, Some(4096), Counter::default()).expect("plan")
    })
}

/// Every path into `value` (object keys and array indices), plus a few that lead nowhere.
fn paths(value: &Value, prefix: &[String], out: &mut Vec<Vec<String>>) {
    out.push(prefix.to_vec());
    let mut child = |segment: String, v: &Value| {
        let mut path = prefix.to_vec();
        path.push(segment);
        paths(v, &path, out);
    };
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| child(k.clone(), v)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| child(i.to_string(), v)),
        _ => {}
    }
    let mut missing = prefix.to_vec();
    missing.push("missing".into());
    out.push(missing);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn header_values_are_always_valid_whatever_the_value(value in claim_value()) {
        for encoding in [None, Some(HeaderEncoding::Csv), Some(HeaderEncoding::Json), Some(HeaderEncoding::Base64url)] {
            assert_header_safe(&format!("{encoding:?}"), &header_value(&value, encoding))?;
        }
    }

    #[test]
    fn rendered_identity_headers_are_always_valid(
        a in claim_value(),
        b in claim_value(),
        id in tricky_string(),
        name in claim_value(),
        custom in claim_value(),
    ) {
        let mut token = Map::new();
        token.insert("a".into(), a);
        token.insert("b".into(), b);
        let mut data = Map::new();
        data.insert("name".into(), name);
        let identity = Identity {
            id,
            provider: Arc::from("p"),
            data: Arc::new(data),
            token: Arc::new(token),
        };
        let custom = PackedJson::pack(&json!({"x": custom}));
        let ctx = Context {
            identity: &identity,
            custom_data: Some(custom.root()),
            permissions: None,
            request: None,
        };
        let rendered = plan().render(&ctx).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(rendered.iter().any(|(n, _)| n == "x-claimgate-user"));
        for (name, value) in &rendered {
            assert_header_safe(name.as_str(), value)?;
        }
    }

    #[test]
    fn a_packed_document_reads_exactly_as_its_value(value in claim_value()) {
        let packed = PackedJson::pack(&value);
        prop_assert_eq!(packed.to_value().to_string(), value.to_string());
        let mut all = Vec::new();
        paths(&value, &[], &mut all);
        for segments in all.iter().filter(|s| !s.is_empty() && s.iter().all(|s| !s.is_empty())) {
            let text: Vec<String> = segments.iter().map(|s| s.replace('\\', "\\\\").replace('.', "\\.")).collect();
            let path = ClaimPath::parse(&text.join(".")).map_err(TestCaseError::fail)?;
            let expected = path.get(&value).cloned();
            let found = path.get_packed(packed.root()).map(|v| v.to_value());
            prop_assert_eq!(found, expected, "path {:?}", segments);
        }
    }

    #[test]
    fn a_rule_compares_a_packed_document_as_it_would_its_value(value in claim_value()) {
        // Only what a rule reads as a literal: no `%%expansion` strings, no operator keys.
        prop_assume!(reads_as_literal(&value));
        let document = PackedJson::pack(&json!({"x": value.clone()}));
        // A `null` field is absent, and an absent field equals nothing.
        let present = !value.is_null();
        prop_assert_eq!(allows(json!({"%%user.custom_data.x": value.clone()}), &document), present);
        prop_assert_eq!(allows(json!({"%%user.custom_data.x": {"%in": [value.clone()]}}), &document), present);
        prop_assert_eq!(allows(json!({"%%user.custom_data.x": "%%user.custom_data.x"}), &document), present);
        let longer = allows(json!({"%%user.custom_data.x": [value, "other"]}), &document);
        prop_assert!(!longer, "matched an array one item longer");
    }
}

fn reads_as_literal(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.starts_with("%%"),
        Value::Array(items) => items.iter().all(reads_as_literal),
        Value::Object(map) => map
            .iter()
            .all(|(k, v)| !k.starts_with('%') && !k.starts_with('$') && reads_as_literal(v)),
        _ => true,
    }
}

/// Whether `allow_when` lets user `ann`, with `document` as custom data, through.
fn allows(allow_when: Value, document: &PackedJson) -> bool {
    let policy = one_rule::policy(allow_when);
    let identity = one_rule::ann();
    let ctx = Context {
        identity: &identity,
        custom_data: Some(document.root()),
        permissions: None,
        request: None,
    };
    let rule = policy
        .route(&http::Method::GET, "/")
        .expect("a rule matches");
    rule.check(&ctx).is_ok()
}
