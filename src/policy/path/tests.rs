use super::{judge, normalize_path, JudgedPath};
use crate::error::Reject;

#[test]
fn equivalent_spellings_normalize_to_one_path() {
    let cases = [
        ("/", "/"),
        ("/admin", "/admin"),
        ("/admin/", "/admin/"),
        ("//admin//x", "/admin/x"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2E/admin", "/admin"),
        ("/%61dmin/./x", "/admin/x"),
        ("/../../etc", "/etc"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/a%2fb", "/a%2Fb"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/%zz", "/%zz"),
        ("/x%", "/x%"),
        ("*", "*"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_path(input), want, "{input}");
    }
}

fn judged(path: &str, semicolons: bool) -> Result<(String, String), Reject> {
    let uri: http::Uri = path.parse().unwrap();
    let JudgedPath { forward, judged } = judge(&uri, semicolons)?;
    let forward = forward.map_or(uri.to_string(), |u| u.to_string());
    Ok((judged, forward))
}

#[test]
fn spellings_upstreams_read_differently_are_refused() {
    for path in [
        "/admin;x=1/panel",
        "/admin/..;/panel",
        "/public/..;/admin/panel",
        "/admin./panel",
        "/admin%2e/panel",
        "/admin.../panel",
        "/admin%20/panel",
        "/admin%09/panel",
        "/admin%00/panel",
        "/admin%0a",
        "/%u0061dmin/panel",
        "/admin%zz",
        "/admin%",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
    ] {
        assert_eq!(judged(path, false), Err(Reject::BadPath), "{path}");
    }
    for path in [
        "/public/..;/admin/panel",
        "/public/..;x/admin",
        "/public/.;x/admin",
        "/admin.;x/panel",
        "/admin%20;x/panel",
    ] {
        assert_eq!(judged(path, true), Err(Reject::BadPath), "{path}");
    }
}

#[test]
fn semicolon_parameters_are_judged_without_and_forwarded_with() {
    let (judged_path, forward) = judged("/admin;jsessionid=1/panel?q=1", true).unwrap();
    assert_eq!(judged_path, "/admin/panel");
    assert_eq!(forward, "/admin;jsessionid=1/panel?q=1");
    let (judged_path, forward) = judged("/public/x;a=1/../admin", true).unwrap();
    assert_eq!(judged_path, "/public/admin");
    assert_eq!(forward, "/public/admin");
    let (judged_path, _) = judged("/;x/admin", true).unwrap();
    assert_eq!(judged_path, "/admin");
}

#[test]
fn ordinary_paths_pass_unchanged() {
    for path in [
        "/",
        "/admin/panel",
        "/a.b/c",
        "/v1.2/x",
        "/caf%C3%A9",
        "/.well-known/x",
        "/a/./b",
    ] {
        let (judged_path, _) = judged(path, false).unwrap();
        assert_eq!(judged_path, normalize_path(path), "{path}");
    }
    assert_eq!(
        judged("/a/./b", false).unwrap(),
        ("/a/b".into(), "/a/b".into())
    );
}
