//! Access rules through the real binary: every expression operator allowed and denied, the 403
//! shape, `auth: none` and `auth: optional` routes, and `/userinfo` with roles → permissions.

mod common;

use common::*;
use mongodb::bson::doc;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One rule per operator, then the contract's catch-all (unnamed, so it is `rules[10]`).
fn rules() -> Value {
    let cd = |field: &str| format!("%%user.custom_data.{field}");
    json!([
        {"match": {"path_prefix": "/public", "methods": ["GET"]}, "auth": "none"},
        {"match": {"path_prefix": "/optional"}, "auth": "optional"},
        {"name": "admins", "match": {"path_prefix": "/admin"},
         "allow_when": {cd("roles"): {"%in": ["admin"]}}},
        {"name": "not-banned", "match": {"path_prefix": "/nin"},
         "allow_when": {cd("roles"): {"%nin": ["banned"]}}},
        {"name": "has-group", "match": {"path_prefix": "/exists"},
         "allow_when": {cd("userGroup"): {"%exists": true}}},
        {"name": "staff-readers", "match": {"path_prefix": "/and"},
         "allow_when": {"%and": [{cd("canRead"): true}, {cd("userGroup"): "staff"}]}},
        {"name": "admin-or-staff", "match": {"path_prefix": "/or"},
         "allow_when": {"%or": [{cd("roles"): "admin"}, {cd("userGroup"): "staff"}]}},
        {"name": "not-guests", "match": {"path_prefix": "/not"},
         "allow_when": {"%not": {cd("userGroup"): "guests"}}},
        {"name": "read-only", "match": {"path_prefix": "/method"},
         "allow_when": {"%%request.method": "GET"}},
        {"name": "level-3", "match": {"path_prefix": "/level"},
         "allow_when": {cd("level"): 3}},
        {"match": {"path_prefix": "/"}, "allow_when": {cd("canRead"): true}},
    ])
}

async fn rules_env() -> UdEnv {
    let env = UdEnv::mongo(TestDb::shared().await, |c| c.set("/rules", rules())).await;
    for document in [
        doc! {"user_id": "ann", "roles": ["admin", "reader"], "userGroup": "staff",
        "canRead": true, "level": 3},
        doc! {"user_id": "bob", "roles": ["reader", "banned"], "userGroup": "guests",
        "canRead": false, "level": 2},
        doc! {"user_id": "cy", "roles": [], "canRead": true},
        doc! {"user_id": "dee", "roles": ["reader"], "userGroup": "staff",
        "canRead": false, "level": "3"},
    ] {
        env.db().insert_user(document).await;
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operator_allows_and_denies_through_the_proxy() {
    let env = rules_env().await;
    // (method, path, user, None = allowed / Some(rule) = denied by that rule)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("GET", "/admin/users", "ann", None),
        ("GET", "/admin/users", "bob", Some("admins")),
        ("GET", "/admin", "cy", Some("admins")),
        ("GET", "/nin", "ann", None),
        ("GET", "/nin", "cy", None),
        ("GET", "/nin/x", "bob", Some("not-banned")),
        ("GET", "/exists", "ann", None),
        ("GET", "/exists", "cy", Some("has-group")),
        ("GET", "/and", "ann", None),
        ("GET", "/and", "dee", Some("staff-readers")),
        ("GET", "/and", "cy", Some("staff-readers")),
        ("GET", "/or", "ann", None),
        ("GET", "/or", "dee", None),
        ("GET", "/or", "bob", Some("admin-or-staff")),
        ("GET", "/or", "cy", Some("admin-or-staff")),
        ("GET", "/not", "ann", None),
        ("GET", "/not", "cy", None),
        ("GET", "/not", "bob", Some("not-guests")),
        ("GET", "/method", "bob", None),
        ("POST", "/method", "ann", Some("read-only")),
        ("DELETE", "/method/x", "ann", Some("read-only")),
        ("GET", "/level", "ann", None),
        ("GET", "/level", "bob", Some("level-3")),
        // A string "3" is not the number 3.
        ("GET", "/level", "dee", Some("level-3")),
        ("GET", "/docs", "ann", None),
        ("POST", "/docs", "cy", None),
        ("GET", "/docs", "bob", Some("rules[10]")),
        ("GET", "/docs", "nobody", Some("rules[10]")),
        // Prefixes are whole segments: /administrator is not under /admin.
        ("GET", "/administrator", "bob", Some("rules[10]")),
    ];
    let mut allowed = 0;
    for &(method, path, user, denied_by) in cases {
        let resp = env.send_as(method, user, path).await;
        match denied_by {
            None => {
                let echo = expect_echo(resp).await;
                assert_eq!((echo.method.as_str(), echo.path.as_str()), (method, path));
                assert_eq!(echo.header("x-user-id"), Some(user));
                allowed += 1;
            }
            Some(rule) => {
                eprintln!("{method} {path} as {user}: expecting a 403 by {rule}");
                expect_forbidden(resp, rule).await;
            }
        }
    }
    assert_eq!(
        env.upstream.requests().len(),
        allowed,
        "denied requests reached upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_routes_need_no_token_and_still_strip_identity_headers() {
    let env = rules_env().await;
    let spoofed = keys::b64url(
        json!({"id": "admin", "provider": "test", "data": {}})
            .to_string()
            .as_bytes(),
    );
    let resp = env
        .proxy
        .get("/public/info")
        .header("X-User-Id", "admin")
        .header("X-User-Group", "staff")
        .header("X-Claimgate-User", spoofed)
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.path, "/public/info");
    for header in [
        "x-user-id",
        "x-user-group",
        "x-claimgate-user",
        "x-user-name",
    ] {
        assert!(
            !echo.has_header(header),
            "{header} reached upstream: {:?}",
            echo.headers
        );
    }

    // `none` ignores a token, valid or not, and injects no identity.
    let expired = env.key.sign(&Claims::new().set("sub", "ann").exp_in(-3600));
    for token in [env.token("ann"), expired] {
        let echo = expect_echo(env.proxy.get_with_token("/public/x", &token).await).await;
        for header in ["x-user-id", "x-user-group", "x-claimgate-user"] {
            assert!(
                !echo.has_header(header),
                "{header} reached upstream: {:?}",
                echo.headers
            );
        }
    }

    // Only GET is public; other methods fall through to the catch-all, which needs a token.
    let url = format!("{}/public/info", env.proxy.url);
    let resp = env.proxy.client.post(&url).send().await.unwrap();
    expect_reject(resp, 401, "token_missing").await;
    // Prefixes are whole segments.
    let resp = env.proxy.get("/publicity").send().await.unwrap();
    expect_reject(resp, 401, "token_missing").await;

    // A dot-segment cannot walk out of the public prefix (sent raw: clients normalize it).
    let answer = raw_get(&env.proxy.url, "/public/../admin").await;
    let status_line = answer.lines().next().unwrap_or_default().to_owned();
    assert!(
        !status_line.contains(" 200 "),
        "/public/../admin without a token was forwarded: {answer}"
    );
    // The public GET without a token and the two with tokens; nothing else.
    assert_eq!(
        env.upstream.requests().len(),
        3,
        "{:?}",
        env.upstream.requests()
    );
}

/// Sends `GET <target>` exactly as written and returns the response head and body as text.
async fn raw_get(base: &str, target: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_optional_routes_forward_with_and_without_a_token() {
    let env = rules_env().await;
    let resp = env
        .proxy
        .get("/optional/feed")
        .header("X-User-Id", "ann")
        .header("X-User-Group", "staff")
        .send()
        .await
        .unwrap();
    let echo = expect_echo(resp).await;
    assert_eq!(echo.path, "/optional/feed");
    for header in ["x-user-id", "x-user-group", "x-claimgate-user"] {
        assert!(
            !echo.has_header(header),
            "{header} reached upstream: {:?}",
            echo.headers
        );
    }

    let echo = expect_echo(env.get_as("ann", "/optional/feed").await).await;
    assert_eq!(echo.header("x-user-id"), Some("ann"));
    assert_eq!(echo.header("x-user-group"), Some("staff"));
    assert_eq!(custom_data(&echo)["roles"], json!(["admin", "reader"]));

    // A token that is sent must be valid.
    let expired = env.key.sign(&Claims::new().set("sub", "ann").exp_in(-3600));
    let resp = env.proxy.get_with_token("/optional/feed", &expired).await;
    expect_reject(resp, 401, "token_expired").await;
    assert_eq!(env.upstream.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_shows_identity_custom_properties_and_role_permissions() {
    let db = TestDb::shared().await;
    db.index("roles", "roleId").await;
    let roles = db.coll("roles");
    roles
        .insert_one(doc! {"roleId": "admin", "permissions": ["users:write", "users:read"]})
        .await
        .unwrap();
    roles
        .insert_one(doc! {"roleId": "reader", "permissions": ["docs:read", "users:read"]})
        .await
        .unwrap();
    let contract_rules = json!([
        {"match": {"path_prefix": "/public", "methods": ["GET"]}, "auth": "none"},
        {"name": "admins", "match": {"path_prefix": "/admin"},
         "allow_when": {"%%user.custom_data.roles": {"%in": ["admin"]}}},
        {"match": {"path_prefix": "/"}, "allow_when": {"%%user.custom_data.canRead": true}},
    ]);
    let env = UdEnv::mongo(db, |c| {
        c.set(
            "/user_data/roles",
            json!({"collection": "roles", "id_field": "roleId", "permissions_field": "permissions"}),
        )
        .set("/rules", contract_rules)
        .set(
            "/userinfo",
            json!({"path": "/.claimgate/userinfo", "properties": ["userGroup", "email", "permissions"]}),
        )
    })
    .await;
    env.db()
        .insert_user(doc! {
            "user_id": "ann", "roles": ["admin", "reader"], "userGroup": "staff",
            "email": "ann@corp.test", "canRead": true, "secret": "not listed",
        })
        .await;

    let resp = env.get_as("ann", "/.claimgate/userinfo").await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "userinfo body: {text}");
    let info: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = info
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "data",
            "email",
            "id",
            "permissions",
            "provider",
            "userGroup"
        ],
        "userinfo: {info}"
    );
    assert_eq!(info["id"], "ann");
    assert_eq!(info["provider"], "test");
    assert_eq!(info["data"]["name"], "Alice", "userinfo: {info}");
    assert_eq!(
        info["data"]["email"], "alice@example.test",
        "userinfo: {info}"
    );
    assert_eq!(info["userGroup"], "staff");
    assert_eq!(info["email"], "ann@corp.test");
    let mut permissions: Vec<&str> = info["permissions"]
        .as_array()
        .unwrap_or_else(|| panic!("permissions is not an array: {info}"))
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    permissions.sort_unstable();
    assert_eq!(
        permissions,
        ["docs:read", "users:read", "users:write"],
        "userinfo: {info}"
    );
    assert!(env.upstream.requests().is_empty(), "userinfo was forwarded");

    let resp = env.proxy.get("/.claimgate/userinfo").send().await.unwrap();
    expect_reject(resp, 401, "token_missing").await;
    assert!(env.upstream.requests().is_empty(), "userinfo was forwarded");
}
