//! The registry on object storage (`models::bundle::RemoteRegistry`): a writer's folder
//! pushed, a reader's mirror pulled, and what a reader must never see (a bundle whose upload
//! is not finished, a `LIVE` naming a version it does not have) left out until it is
//! complete. The same checks run on `object_store`'s local-folder store and on S3 (an
//! S3-compatible server, `LEADSCORE_TEST_S3`, which `scripts/test` starts; skipped without
//! it unless `LEADSCORE_REQUIRE_S3=1`).

#[path = "../../serving/tests/support/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::bundle::{MANIFEST_FILE, ModelName, Registry, RemoteRegistry};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use s3::s3_bucket;

fn fixture_registry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../serving/tests/fixtures/registry")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_pushed_registry_mirrors_whole_and_in_order() {
    let bucket = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(bucket.path()).expect("store"));
    let remote = RemoteRegistry::new(store.clone(), "registries/prod", "file:///bucket");
    mirrors_whole_and_in_order(&remote, store.as_ref(), "registries/prod").await;
}

#[tokio::test]
async fn a_pushed_registry_mirrors_whole_and_in_order_on_s3() {
    let Some(bucket) = s3_bucket() else {
        return;
    };
    // A prefix of its own in the shared bucket; the registry reached by URL, as the server
    // and the trainer reach it, its store written to directly for the half-finished upload.
    let prefix = format!("remote-registry-{}", std::process::id());
    let url = format!("{bucket}/{prefix}");
    let remote = RemoteRegistry::from_url(&url).expect("an s3:// URL this build reaches");
    mirrors_whole_and_in_order(&remote, remote.store().as_ref(), &prefix).await;
}

async fn mirrors_whole_and_in_order(remote: &RemoteRegistry, store: &dyn ObjectStore, root: &str) {
    let writer = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture_registry(), writer.path());
    let registry = Registry::new(writer.path());
    let propensity: ModelName = "propensity".parse().expect("name");
    let lock = registry.lock("test").expect("lock");
    registry
        .promote(&lock, &propensity, "fixture-leads-v1", "test", "first")
        .expect("promote");
    drop(lock);

    let pushed = remote.push(writer.path()).await.expect("push");
    assert_eq!(
        pushed.bundles,
        ["churn/fixture-churn-v1", "propensity/fixture-leads-v1"]
    );
    assert_eq!(pushed.live, ["propensity"]);
    assert!(pushed.history);
    assert!(
        remote.push(writer.path()).await.expect("push").is_empty(),
        "nothing new: nothing sent"
    );

    let reader = tempfile::tempdir().expect("temp dir");
    let pulled = remote.pull(reader.path()).await.expect("pull");
    assert_eq!(pulled.bundles, pushed.bundles);
    assert_eq!(pulled.live, ["propensity"]);
    let mirror = Registry::new(reader.path());
    assert_eq!(
        mirror.live(&propensity).expect("live").as_deref(),
        Some("fixture-leads-v1")
    );
    mirror
        .load(&propensity, "fixture-leads-v1")
        .expect("the mirrored bundle loads and checks (its model's SHA-256 included)");
    assert_eq!(
        std::fs::read(reader.path().join("history.jsonl")).expect("log"),
        std::fs::read(writer.path().join("history.jsonl")).expect("log")
    );
    assert!(remote.pull(reader.path()).await.expect("pull").is_empty());

    // An upload under way: a version's model is there, its manifest not yet, and LIVE
    // already names it. The mirror takes neither.
    let v2 = format!("{root}/propensity/fixture-leads-v2");
    let onnx =
        std::fs::read(writer.path().join("propensity/fixture-leads-v1/model.onnx")).expect("model");
    store
        .put(
            &ObjectPath::from(format!("{v2}/model.onnx")),
            PutPayload::from(onnx),
        )
        .await
        .expect("put");
    store
        .put(
            &ObjectPath::from(format!("{root}/propensity/LIVE")),
            PutPayload::from_static(b"fixture-leads-v2"),
        )
        .await
        .expect("put");
    let pulled = remote.pull(reader.path()).await.expect("pull");
    assert!(pulled.is_empty(), "{pulled:?}");
    assert!(!reader.path().join("propensity/fixture-leads-v2").exists());
    assert_eq!(
        mirror.live(&propensity).expect("live").as_deref(),
        Some("fixture-leads-v1"),
        "LIVE stays on what the mirror holds"
    );
    // The upload finishes (manifest last): the next pull takes the bundle, then LIVE.
    let manifest = std::fs::read_to_string(
        writer
            .path()
            .join("propensity/fixture-leads-v1")
            .join(MANIFEST_FILE),
    )
    .expect("manifest")
    .replace("fixture-leads-v1", "fixture-leads-v2");
    for file in ["explainer.json"] {
        let bytes = std::fs::read(writer.path().join("propensity/fixture-leads-v1").join(file))
            .expect("file");
        store
            .put(
                &ObjectPath::from(format!("{v2}/{file}")),
                PutPayload::from(bytes),
            )
            .await
            .expect("put");
    }
    store
        .put(
            &ObjectPath::from(format!("{v2}/{MANIFEST_FILE}")),
            PutPayload::from(manifest.into_bytes()),
        )
        .await
        .expect("put");
    let pulled = remote.pull(reader.path()).await.expect("pull");
    assert_eq!(pulled.bundles, ["propensity/fixture-leads-v2"]);
    assert_eq!(pulled.live, ["propensity"]);
    assert_eq!(
        mirror.live(&propensity).expect("live").as_deref(),
        Some("fixture-leads-v2")
    );
    mirror
        .load(&propensity, "fixture-leads-v2")
        .expect("the second version loads");
}

/// The registry's lock on object storage: one writer at a time, the holder named to the
/// one refused, released when dropped, renewed while held, an expired one taken over, and
/// a lock taken from under its holder reported before it uploads.
fn lock_is_one_writer_at_a_time(remote: &RemoteRegistry, store: Arc<dyn ObjectStore>, root: &str) {
    use models::bundle::{BundleError, REMOTE_LOCK_OBJECT};
    use std::time::Duration;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let at = ObjectPath::from(format!("{root}/{REMOTE_LOCK_OBJECT}"));
    let read = |what: &str| -> Option<serde_json::Value> {
        match runtime.block_on(store.get(&at)) {
            Ok(got) => {
                let bytes = runtime.block_on(got.bytes()).expect(what);
                Some(serde_json::from_slice(&bytes).expect("the lock is JSON"))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{what}: {e}"),
        }
    };
    let write = |body: serde_json::Value| {
        runtime
            .block_on(store.put(&at, PutPayload::from(body.to_string().into_bytes())))
            .expect("put");
    };

    let first = remote
        .lock("writer one", Duration::from_secs(60))
        .expect("a free registry's lock is taken");
    match remote.lock("writer two", Duration::from_secs(60)) {
        Err(BundleError::Locked { holder, .. }) => {
            assert!(holder.contains("(writer one)"), "{holder}");
        }
        other => panic!("a second writer must be refused: {other:?}"),
    }
    first.check().expect("held");
    drop(first);
    assert!(read("released").is_none(), "dropping the lock deletes it");
    drop(
        remote
            .lock("writer two", Duration::from_secs(60))
            .expect("free again"),
    );

    // A killed writer's lock: expired, taken over.
    write(serde_json::json!({"holder": "pid 1 (killed)", "token": "0", "expires_ms": 1}));
    let taker = remote
        .lock("writer three", Duration::from_secs(60))
        .expect("an expired lock is taken over");
    let body = read("taken over").expect("held");
    assert!(
        body["holder"]
            .as_str()
            .is_some_and(|h| h.contains("(writer three)")),
        "{body}"
    );
    drop(taker);

    // Renewed while held: a short lease outlived, still held, its expiry moved on.
    let lease = Duration::from_millis(900);
    let held = remote.lock("renewing", lease).expect("lock");
    let expires = |b: &serde_json::Value| b["expires_ms"].as_u64().expect("expires_ms");
    let at_start = expires(&read("held").expect("held"));
    std::thread::sleep(lease * 2);
    assert!(
        matches!(
            remote.lock("refused", lease),
            Err(BundleError::Locked { .. })
        ),
        "a renewed lock is not taken over"
    );
    let later = read("renewed").expect("held");
    assert!(expires(&later) > at_start, "renewed: {at_start} -> {later}");
    held.check().expect("still held");

    // Taken from under its holder (its renewals failed past the lease, say): the holder
    // hears of it at its next renewal and refuses to upload.
    write(serde_json::json!({"holder": "pid 2 (usurper)", "token": "1", "expires_ms": u64::MAX}));
    std::thread::sleep(lease);
    assert!(held.check().is_err(), "the holder knows its lock is lost");
    drop(held);
    let left = read("the usurper's").expect("not deleted by the one who lost it");
    assert_eq!(left["holder"], "pid 2 (usurper)");
    runtime.block_on(store.delete(&at)).expect("delete");
}

#[test]
fn the_registry_lock_is_one_writer_at_a_time() {
    let bucket = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(bucket.path()).expect("store"));
    let remote = RemoteRegistry::new(store.clone(), "registries/prod", "file:///bucket");
    lock_is_one_writer_at_a_time(&remote, store, "registries/prod");
}

#[test]
fn the_registry_lock_is_one_writer_at_a_time_on_s3() {
    let Some(bucket) = s3_bucket() else {
        return;
    };
    let prefix = format!("remote-lock-{}", std::process::id());
    let url = format!("{bucket}/{prefix}");
    let remote = RemoteRegistry::from_url(&url).expect("an s3:// URL this build reaches");
    lock_is_one_writer_at_a_time(&remote, remote.store(), &prefix);
}
