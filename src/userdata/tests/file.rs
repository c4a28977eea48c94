//! The file source and config validation (no server needed).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_follows_live_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.json");
    std::fs::write(
        &path,
        r#"[{"user_id": "a", "v": 1}, {"user_id": "a", "v": 9}]"#,
    )
    .unwrap();
    let cfg: UserDataConfig = serde_json::from_value(json!({
        "source": "file", "path": path, "blocked_field": "blocked",
        "on_user_creation": { "document": { "roles": ["reader"] } },
    }))
    .unwrap();
    let metrics = UserDataMetrics::default();
    let data = Arc::new(UserData::new(&cfg, metrics.clone()).unwrap());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(data.clone().run(rx));
    let record = data.lookup("a").await.unwrap();
    assert_eq!(field(&record, "v"), Some(json!(1)), "first entry wins");

    std::fs::write(&path, r#"[{"user_id": "a", "v": 2, "blocked": true}]"#).unwrap();
    let started = Instant::now();
    loop {
        let record = data.lookup("a").await.unwrap();
        if field(&record, "v") == Some(json!(2)) {
            assert!(record.blocked);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "edit not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A broken edit keeps the last good contents.
    std::fs::write(&path, "[{").unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(data.lookup("a").await.unwrap().blocked);

    let created = data.lookup("new").await.unwrap();
    assert_eq!(field(&created, "roles"), Some(json!(["reader"])));
    data.lookup("new").await.unwrap();
    assert_eq!(metrics.users_created.get(), 1);
    stop.send(true).unwrap();
    task.await.unwrap();

    let yaml = dir.path().join("users.yaml");
    std::fs::write(
        &yaml,
        "- user_id: y\n  expirationDate: 2001-01-01T00:00:00Z\n",
    )
    .unwrap();
    let cfg: UserDataConfig = serde_json::from_value(json!({
        "source": "file", "path": yaml, "expiration_field": "expirationDate",
    }))
    .unwrap();
    let data = UserData::new(&cfg, UserDataMetrics::default()).unwrap();
    assert!(data.lookup("y").await.unwrap().expired());
    assert_eq!(data.lookup("z").await.unwrap().document, None);
}

#[test]
fn config_errors_name_the_key() {
    let err = |v: serde_json::Value| {
        let cfg: UserDataConfig = serde_json::from_value(v).unwrap();
        UserData::new(&cfg, UserDataMetrics::default())
            .err()
            .map(|e| e.key)
    };
    let m = |extra: serde_json::Value| {
        let mut v =
            json!({"source": "mongodb", "uri": "mongodb://h", "database": "d", "collection": "c"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    assert_eq!(err(m(json!({}))), None, "needs no network");
    assert_eq!(
        err(m(json!({"uri": null}))).as_deref(),
        Some("user_data.uri")
    );
    assert_eq!(
        err(m(json!({"uri": "http://x"}))).as_deref(),
        Some("user_data.uri")
    );
    assert_eq!(
        err(m(json!({"database": ""}))).as_deref(),
        Some("user_data.database")
    );
    assert_eq!(
        err(m(json!({"collection": null}))).as_deref(),
        Some("user_data.collection")
    );
    assert_eq!(
        err(m(json!({"cache": {"max_entries": 0}}))).as_deref(),
        Some("user_data.cache.max_entries")
    );
    assert_eq!(
        err(m(json!({"cache": {"max_bytes": 0}}))).as_deref(),
        Some("user_data.cache.max_bytes")
    );
    assert_eq!(
        err(m(json!({"on_user_creation": {"document": {"_id": 1}}}))).as_deref(),
        Some("user_data.on_user_creation.document")
    );
    assert_eq!(
        err(json!({"source": "file"})).as_deref(),
        Some("user_data.path")
    );
    assert_eq!(
        err(json!({"source": "file", "path": "u.json", "roles": {"collection": "r"}})).as_deref(),
        Some("user_data.roles")
    );
}
