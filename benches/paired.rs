//! Paired ratios for the comparisons in `hot_path`, robust to a noisy shared machine.
//!
//! `cargo bench --bench paired` (about 30 s)
//!
//! Criterion measures one function after another, so a neighbour's compile job that starts
//! halfway through skews a ratio between two of its results. Here the two sides of each comparison
//! alternate in short batches (order flipped every pair), and the reported ratio is the median of
//! the per-pair ratios: drift slower than one pair (a few ms) cancels out. The absolute medians
//! are printed too; read them with the criterion numbers, not instead of them.

mod common;

use aws_lc_rs::{hmac, signature};
use claimgate::verify::now_seconds;
use common::{app_for, split, ISSUER};
use serde_json::{Map, Value};
use std::hint::black_box;
use std::time::Instant;

const PAIRS: usize = 301;

type Check<'a> = Box<dyn Fn() -> bool + 'a>;

struct Paired {
    a_ns: f64,
    b_ns: f64,
    ratio: f64,
    ratio_p25: f64,
    ratio_p75: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `batch` calls of `a`, then of `b` (then `b`, `a` next pair), `PAIRS` times.
fn paired(batch: u32, mut a: impl FnMut(u32), mut b: impl FnMut(u32)) -> Paired {
    let time = |f: &mut dyn FnMut(u32)| {
        let start = Instant::now();
        f(batch);
        start.elapsed().as_nanos() as f64 / f64::from(batch)
    };
    // Warm-up: caches, branch predictors, lazy init inside aws-lc.
    for _ in 0..10 {
        time(&mut a);
        time(&mut b);
    }
    let (mut av, mut bv, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let (ta, tb) = if i % 2 == 0 {
            let ta = time(&mut a);
            (ta, time(&mut b))
        } else {
            let tb = time(&mut b);
            (time(&mut a), tb)
        };
        av.push(ta);
        bv.push(tb);
        ratios.push(ta / tb);
    }
    let a_ns = median(&mut av);
    let b_ns = median(&mut bv);
    let ratio = median(&mut ratios);
    Paired {
        a_ns,
        b_ns,
        ratio,
        ratio_p25: ratios[PAIRS / 4],
        ratio_p75: ratios[PAIRS * 3 / 4],
    }
}

fn fmt(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn row(label: &str, a: &str, b: &str, p: &Paired) {
    println!(
        "| {label} | {a}: {} | {b}: {} | **{:.2}** | {:.2}–{:.2} |",
        fmt(p.a_ns),
        fmt(p.b_ns),
        p.ratio,
        p.ratio_p25,
        p.ratio_p75
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let now = now_seconds();
    println!("| comparison | A (median per op) | B (median per op) | A ÷ B, median of {PAIRS} pairs | IQR of the ratio |");
    println!("| --- | --- | --- | ---: | --- |");

    let signers = [
        (common::rsa_2048("bench-rsa"), "RS256", 32),
        (common::es256("bench-ec"), "ES256", 16),
        (common::ed25519("bench-ed"), "EdDSA", 16),
        (common::hs256(), "HS256", 512),
    ];
    for (signer, alg, batch) in &signers {
        let app = app_for(signer, alg);
        let verifier = &app.decider.verifier;
        let token = signer.mint(ISSUER, 1, now, 86_400);
        rt.block_on(verifier.verify(&token)).expect("verifies");
        let (message, sig) = split(&token);
        let full = |n: u32| {
            rt.block_on(async {
                for _ in 0..n {
                    black_box(verifier.verify(black_box(&token)).await.is_ok());
                }
            })
        };
        if *alg == "HS256" {
            let key = hmac::Key::new(hmac::HMAC_SHA256, common::HMAC_SECRET.as_bytes());
            let p = paired(*batch, full, |n| {
                for _ in 0..n {
                    black_box(hmac::verify(&key, black_box(message), black_box(&sig)).is_ok());
                }
            });
            row(
                "HS256 full verify ÷ primitive",
                "claimgate verify",
                "hmac::verify",
                &p,
            );
            continue;
        }
        let key = signer.parsed_public_key();
        let primitive = |n: u32| {
            for _ in 0..n {
                black_box(key.verify_sig(black_box(message), black_box(&sig)).is_ok());
            }
        };
        let p = paired(*batch, full, primitive);
        row(
            &format!("{alg} full verify ÷ primitive"),
            "claimgate verify",
            "verify_sig",
            &p,
        );
        if *alg != "RS256" {
            continue;
        }
        let stranger = signer.mint("https://someone-else.example/", 1, now, 86_400);
        let parse = |n: u32| {
            rt.block_on(async {
                for _ in 0..n {
                    black_box(verifier.verify(black_box(&stranger)).await.is_ok());
                }
            })
        };
        let p = paired(*batch * 4, parse, primitive);
        row(
            "RS256 parse only (unknown iss) ÷ primitive",
            "parse + reject",
            "verify_sig",
            &p,
        );
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_raw_components(&signer.rsa_n, &signer.rsa_e);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[common::AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.validate_nbf = true;
        let library = |n: u32| {
            for _ in 0..n {
                black_box(
                    jsonwebtoken::decode::<Map<String, Value>>(
                        black_box(&token),
                        &decoding,
                        &validation,
                    )
                    .is_ok(),
                );
            }
        };
        let p = paired(*batch, library, full);
        row(
            "RS256 jsonwebtoken::decode ÷ claimgate verify",
            "jsonwebtoken",
            "claimgate",
            &p,
        );

        let (n, e) = (signer.rsa_n.as_slice(), signer.rsa_e.as_slice());
        let aws_components = signature::RsaPublicKeyComponents { n, e };
        let ring_components = ring::signature::RsaPublicKeyComponents { n, e };
        let ring_unparsed = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &signer.rsa_pkcs1_public,
        );
        let backends: [(&str, Check<'_>); 3] = [
            (
                "aws-lc-rs RsaPublicKeyComponents::verify (parse per call)",
                Box::new(|| {
                    aws_components
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
                        .is_ok()
                }),
            ),
            (
                "ring RsaPublicKeyComponents::verify (parse per call)",
                Box::new(|| {
                    ring_components
                        .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
                        .is_ok()
                }),
            ),
            (
                "ring UnparsedPublicKey (PKCS#1 DER, parse per call)",
                Box::new(|| ring_unparsed.verify(message, &sig).is_ok()),
            ),
        ];
        for (label, f) in &backends {
            assert!(f(), "{label} verifies");
            let p = paired(
                *batch,
                |n| {
                    for _ in 0..n {
                        black_box(f());
                    }
                },
                primitive,
            );
            row(
                &format!("{label} ÷ aws-lc-rs ParsedPublicKey"),
                "backend",
                "ParsedPublicKey",
                &p,
            );
        }
    }
}
