//! Not a benchmark: writes the inputs of `benches/load.sh`.
//!
//! `cargo bench --bench mint -- --out DIR [--count N] [--issuer URL] [--ttl SECONDS]`
//!
//! Writes `DIR/jwks.json` (a fresh RSA-2048 key, kid `load-rsa`) and `DIR/tokens.txt`: N distinct
//! RS256 tokens (`sub` user-000000 …), one per line, audience `claimgate-bench`. With
//! `--mongo-uri URI` it also fills `bench.users` with one custom user data document per token
//! (`user_id`, `name`, `roles`, `canRead`), indexed on `user_id`. With `--expired N` it also
//! writes `DIR/expired.txt`: N tokens of the same key that expired an hour ago (benches/soak.sh).
//! With `--es256 N` it also writes `DIR/es256-tokens.txt`: N distinct ES256 tokens (a P-256 key,
//! kid `load-ec`, added to `jwks.json`), signed ~30× faster than RS256, for the memory run's
//! million distinct tokens; with `--users U` their `sub` cycles over user-000000 … user-(U-1) and
//! `--mongo-uri` inserts U documents instead of N.
//! Run without `--out` (as a plain `cargo bench` does) it does nothing.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut out: Option<PathBuf> = None;
    let mut count = 10_000usize;
    let mut issuer = "https://issuer.bench.example/".to_owned();
    let mut ttl = 3_600u64;
    let mut mongo_uri: Option<String> = None;
    let mut expired = 0usize;
    let mut es256 = 0usize;
    let mut users: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--out" => out = Some(value("--out").into()),
            "--count" => count = value("--count").parse().expect("--count N"),
            "--issuer" => issuer = value("--issuer"),
            "--ttl" => ttl = value("--ttl").parse().expect("--ttl SECONDS"),
            "--mongo-uri" => mongo_uri = Some(value("--mongo-uri")),
            "--expired" => expired = value("--expired").parse().expect("--expired N"),
            "--es256" => es256 = value("--es256").parse().expect("--es256 N"),
            "--users" => users = Some(value("--users").parse().expect("--users U")),
            // cargo passes `--bench`; criterion-style filters are not ours to handle.
            _ => {}
        }
    }
    let Some(out) = out else {
        eprintln!("mint: no --out DIR given; nothing to do (this bench only feeds load.sh)");
        return;
    };
    std::fs::create_dir_all(&out).expect("create --out dir");
    let started = Instant::now();
    let signer = common::rsa_2048("load-rsa");
    let ec = common::es256("load-ec");
    let jwks = serde_json::json!({ "keys": [signer.jwk, ec.jwk] }).to_string();
    std::fs::write(out.join("jwks.json"), jwks).expect("write jwks.json");

    let now = common::now_seconds();
    // RSA signing is ~1 ms a token: split the work over the available cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = count.div_ceil(threads);
    let tokens: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (signer, issuer) = (&signer, issuer.as_str());
                scope.spawn(move || {
                    (t * per..((t + 1) * per).min(count))
                        .map(|i| signer.mint(issuer, i, now, ttl))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    });
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(out.join("tokens.txt")).expect("tokens"));
    for token in &tokens {
        writeln!(file, "{token}").expect("write token");
    }
    file.flush().expect("flush tokens");
    if expired > 0 {
        // Issued two hours ago for one hour: past `exp` even with the default 60 s clock skew.
        let lines: Vec<String> = (0..expired)
            .map(|i| signer.mint(&issuer, i, now - 7_200, 3_600))
            .collect();
        std::fs::write(out.join("expired.txt"), lines.join("\n") + "\n").expect("expired.txt");
    }
    if es256 > 0 {
        let users = users.unwrap_or(es256).max(1);
        write_es256(&out, &ec, &issuer, (es256, users), (now, ttl));
    }
    if let Some(uri) = mongo_uri {
        insert_users(&uri, users.unwrap_or(count));
    }
    eprintln!(
        "mint: {} tokens ({} bytes each) and jwks.json in {} ({:.1} s)",
        tokens.len(),
        tokens.first().map_or(0, String::len),
        out.display(),
        started.elapsed().as_secs_f64()
    );
}

/// `count` distinct ES256 tokens (distinct `jti`), their `sub` cycling over `users` users.
fn write_es256(
    out: &std::path::Path,
    signer: &common::Signer,
    issuer: &str,
    (count, users): (usize, usize),
    (now, ttl): (u64, u64),
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = count.div_ceil(threads);
    let chunks: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut lines = String::new();
                    for i in t * per..((t + 1) * per).min(count) {
                        lines.push_str(&signer.mint_distinct(issuer, i % users, i, now, ttl));
                        lines.push('\n');
                    }
                    lines
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("minting thread"))
            .collect()
    });
    std::fs::write(out.join("es256-tokens.txt"), chunks.concat()).expect("es256-tokens.txt");
    eprintln!("mint: {count} ES256 tokens over {users} users");
}

/// The documents claimgate's `user_data` reads in the load bench's user-data rows.
fn insert_users(uri: &str, count: usize) {
    use mongodb::bson::doc;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = mongodb::Client::with_uri_str(uri)
            .await
            .expect("--mongo-uri");
        let users = client
            .database("bench")
            .collection::<mongodb::bson::Document>("users");
        users.drop().await.expect("drop bench.users");
        let index = mongodb::IndexModel::builder()
            .keys(doc! { "user_id": 1 })
            .build();
        users.create_index(index).await.expect("index on user_id");
        let ids: Vec<usize> = (0..count).collect();
        for chunk in ids.chunks(1_000) {
            let docs = chunk.iter().map(|i| {
                doc! {
                    "user_id": format!("user-{i:06}"),
                    "name": format!("User {i}"),
                    "roles": ["reader", "bench"],
                    "canRead": true,
                }
            });
            users.insert_many(docs).await.expect("insert users");
        }
    });
    eprintln!("mint: {count} user documents in bench.users");
}
