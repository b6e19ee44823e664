//! The registry on object storage (`models::bundle::RemoteRegistry`), on `object_store`'s
//! local-folder store: a writer's folder pushed, a reader's mirror pulled, and what a reader
//! must never see (a bundle whose upload is not finished, a `LIVE` naming a version it does
//! not have) left out until it is complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::bundle::{MANIFEST_FILE, ModelName, Registry, RemoteRegistry};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};

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
    let store = Arc::new(LocalFileSystem::new_with_prefix(bucket.path()).expect("store"));
    let remote = RemoteRegistry::new(store.clone(), "registries/prod", "file:///bucket");
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
    let v2 = "registries/prod/propensity/fixture-leads-v2";
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
            &ObjectPath::from("registries/prod/propensity/LIVE"),
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
