//! Unattended retraining through the `leadscore-train` binary: the publish gate, the
//! registry lock, and a run killed half-way.

#[path = "../../serving/tests/common/mod.rs"]
mod common;
#[path = "../../serving/tests/support/s3.rs"]
mod s3;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use features::spec::Task;
use features::synthetic::{GeneratorParams, SyntheticKind};
use models::bundle::{ModelName, Registry, RegistryAction};

fn train(spec: &Path, registry: &Path, version: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore-train"))
        .args(["train", "--spec"])
        .arg(spec)
        .arg("--registry")
        .arg(registry)
        .args(["--version", version, "--by", "nightly-test"])
        .args(extra)
        .output()
        .expect("run leadscore-train")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a reader of the registry sees: each task's versions, the live one, the log.
fn visible_state(registry: &Registry) -> (Vec<String>, Option<String>, usize) {
    (
        registry
            .versions(&ModelName::of_task(Task::Propensity))
            .expect("versions"),
        registry
            .live(&ModelName::of_task(Task::Propensity))
            .expect("live"),
        registry.history().expect("history").len(),
    )
}

#[test]
fn a_worse_model_is_not_promoted_a_second_run_is_refused_and_a_killed_run_changes_nothing() {
    let data = tempfile::tempdir().expect("tempdir");
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities: 10_000,
        seed: 3,
        ..GeneratorParams::default()
    }
    .generate(data.path())
    .expect("generate");
    let spec = generated.spec_path;
    let root = tempfile::tempdir().expect("registry");
    let registry = Registry::new(root.path());

    // The first model goes live: there is none to compare with.
    let first = train(&spec, root.path(), "good", &["--promote-if-better"]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(
        registry
            .live(&ModelName::of_task(Task::Propensity))
            .unwrap()
            .as_deref(),
        Some("good")
    );

    // The same model again (same data, same seed) is not worse: it goes live.
    let same = train(&spec, root.path(), "same", &["--promote-if-better"]);
    let said = text(&same);
    assert!(same.status.success(), "{said}");
    assert!(said.contains("not worse than the live model"), "{said}");
    // The same data: nothing moved against the live model's training distribution.
    assert!(
        said.contains("the new data against the live model's training distribution (")
            && said.contains("rows): nothing moved (highest PSI 0.000, "),
        "{said}"
    );
    assert_eq!(
        registry
            .live(&ModelName::of_task(Task::Propensity))
            .unwrap()
            .as_deref(),
        Some("same")
    );

    // A much worse model (one tree of two leaves from a constant start) is kept off: the
    // run fails saying why, the live one stays, the refusal is logged, and the new
    // bundle stays for inspection.
    let worse = train(
        &spec,
        root.path(),
        "worse",
        &[
            "--promote-if-better",
            "--family",
            "gbdt",
            "--gbdt-start",
            "constant",
            "--num-leaves",
            "2",
            "--max-trees",
            "1",
            "--no-early-stopping",
        ],
    );
    let said = text(&worse);
    assert!(!worse.status.success(), "{said}");
    assert!(said.contains("not promoted: propensity/worse"), "{said}");
    assert!(said.contains("below the live model's"), "{said}");
    assert_eq!(
        registry
            .live(&ModelName::of_task(Task::Propensity))
            .unwrap()
            .as_deref(),
        Some("same")
    );
    assert!(
        registry
            .load(&ModelName::of_task(Task::Propensity), "worse")
            .is_ok()
    );
    let history = registry.history().expect("history");
    let actions: Vec<(RegistryAction, &str, &str)> = history
        .iter()
        .map(|e| (e.action, e.version.as_str(), e.who.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (RegistryAction::Promote, "good", "nightly-test"),
            (RegistryAction::Promote, "same", "nightly-test"),
            (RegistryAction::Refuse, "worse", "nightly-test"),
        ]
    );

    // While another run holds the lock, a run is refused before it writes anything.
    let before = visible_state(&registry);
    let held = registry.lock("another nightly run").expect("lock");
    let refused = train(&spec, root.path(), "concurrent", &["--promote-if-better"]);
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("locked by another run (pid"), "{said}");
    assert!(said.contains("another nightly run"), "{said}");
    assert_eq!(visible_state(&registry), before);
    drop(held);

    // A run killed half-way (early: loading and features; later: fitting) leaves the
    // registry as it was; the next run is not blocked by its lock.
    for (i, after) in [Duration::from_millis(800), Duration::from_millis(2500)]
        .into_iter()
        .enumerate()
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadscore-train"))
            .args(["train", "--spec"])
            .arg(&spec)
            .arg("--registry")
            .arg(root.path())
            .args(["--version", &format!("killed-{i}"), "--promote"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(after);
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before {after:?}: kill it earlier"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(visible_state(&registry), before, "killed after {after:?}");
    }
    registry
        .lock("after the killed run")
        .expect("the lock died with its process");

    // A live model older than allowed is replaced whatever the comparison says, and the run
    // removes what killed runs leave: a half-written bundle in a hidden temporary folder
    // (made here, as a run killed while writing leaves it).
    let half_written = root.path().join("propensity/.tmp-killed-2-3fa9c1");
    std::fs::create_dir_all(&half_written).expect("mkdir");
    std::fs::write(half_written.join("model.onnx"), b"half").expect("write");
    let due = train(
        &spec,
        root.path(),
        "due",
        &[
            "--promote-if-better",
            "--max-live-age-days",
            "0",
            "--family",
            "logistic",
        ],
    );
    let said = text(&due);
    assert!(due.status.success(), "{said}");
    assert!(said.contains("older than the 0 allowed"), "{said}");
    assert_eq!(
        registry
            .live(&ModelName::of_task(Task::Propensity))
            .unwrap()
            .as_deref(),
        Some("due")
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("propensity"))
        .expect("task folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `leadscore-train registry <args> --registry <root>`.
fn registry_cmd(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore-train"))
        .arg("registry")
        .arg("--registry")
        .arg(root)
        .args(args)
        .output()
        .expect("run leadscore-train")
}

/// `registry promote` of the fixture's first propensity version.
const PROMOTE_V1: [&str; 7] = [
    "promote",
    "--task",
    "propensity",
    "--version",
    "fixture-leads-v1",
    "--reason",
    "first",
];

#[test]
fn registry_commands_say_when_live_is_missing_and_promote_checks_the_model_digest() {
    let root = tempfile::tempdir().expect("registry");
    let fixtures = common::repo_root().join("serving/tests/fixtures/registry");
    common::copy_dir(&fixtures, root.path());
    let promoted = registry_cmd(root.path(), &PROMOTE_V1);
    assert!(promoted.status.success(), "{}", text(&promoted));
    // A newer version, never promoted (the manifest's version follows the folder).
    let v1 = root.path().join("propensity/fixture-leads-v1");
    let v2 = root.path().join("propensity/fixture-leads-v2");
    common::copy_dir(&v1, &v2);
    let manifest_path = v2.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("read")).expect("json");
    manifest["version"] = "fixture-leads-v2".into();
    std::fs::write(&manifest_path, manifest.to_string()).expect("write");

    // LIVE deleted: list and show say so, and mark the promoted version, not the newest.
    std::fs::remove_file(root.path().join("propensity/LIVE")).expect("remove LIVE");
    let listed = registry_cmd(root.path(), &["list"]);
    let said = text(&listed);
    assert!(listed.status.success(), "{said}");
    assert!(
        said.contains("warning: propensity: ")
            && said.contains("LIVE is missing; the live version is fixture-leads-v1"),
        "{said}"
    );
    let mark = |version: &str| {
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(version))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
    };
    assert_eq!(mark("fixture-leads-v1").as_deref(), Some("*"), "{said}");
    assert_ne!(mark("fixture-leads-v2").as_deref(), Some("*"), "{said}");
    let shown = registry_cmd(root.path(), &["show", "--task", "propensity"]);
    let said = text(&shown);
    assert!(shown.status.success(), "{said}");
    assert!(
        said.contains("propensity/fixture-leads-v1 (propensity model)\n")
            && said.contains("  live:        true")
            && said.contains("LIVE is missing"),
        "{said}"
    );

    // One bit of v2's model.onnx flipped: promote refuses it, naming the file and digests.
    let model = v2.join("model.onnx");
    let mut bytes = std::fs::read(&model).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&model, bytes).expect("write");
    let refused = registry_cmd(
        root.path(),
        &[
            "promote",
            "--task",
            "propensity",
            "--version",
            "fixture-leads-v2",
            "--reason",
            "better",
        ],
    );
    let said = text(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains(&format!("{}: SHA-256 is ", model.display()))
            && said.contains("the manifest's `model_sha256` is"),
        "{said}"
    );
    let registry = Registry::new(root.path());
    assert_eq!(
        registry.history().expect("history").len(),
        1,
        "nothing logged"
    );
}

#[test]
fn train_on_bad_input_writes_nothing_not_even_the_registry_folder() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("t.csv"),
        "id;visits;converted\n1;3;1\n2;0;0\n",
    )
    .expect("write");
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "name = \"t\"\ntask = \"propensity\"\n[table]\npath = \"t.csv\"\nid = \"id\"\n\
         label = \"converted\"\n",
    )
    .expect("write");
    let registry = dir.path().join("registry");
    let out = train(&spec, &registry, "v1", &[]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("separator = \";\""), "{said}");
    assert!(
        !registry.exists(),
        "the registry folder was created: {said}"
    );
}

/// A registry on object storage (`file://` through `object_store`): `registry promote`
/// works on a mirror of it and uploads `LIVE` and the log; `registry list` reads it back.
#[test]
fn registry_commands_work_on_a_registry_on_object_storage() {
    let bucket = tempfile::tempdir().expect("bucket");
    registry_commands_work_at(&format!("file://{}/prod", bucket.path().display()));
}

/// The same on S3: the S3-compatible server `scripts/test` starts (`LEADSCORE_TEST_S3` and
/// the `AWS_*` settings, which the trainer reads from its environment); skipped without it
/// unless `LEADSCORE_REQUIRE_S3=1`.
#[test]
fn registry_commands_work_on_a_registry_on_s3() {
    let Some(bucket) = s3::s3_bucket() else {
        return;
    };
    registry_commands_work_at(&format!("{bucket}/registry-cli-{}", std::process::id()));
}

fn registry_commands_work_at(url: &str) {
    let url = url.to_owned();
    let staging = tempfile::tempdir().expect("staging");
    common::copy_dir(
        &common::repo_root().join("serving/tests/fixtures/registry"),
        staging.path(),
    );
    let remote = models::bundle::RemoteRegistry::from_url(&url).expect("url");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(remote.push(staging.path())).expect("push");
    // Another writer (a nightly run, a replica's promote) holds the registry's lock: the
    // promote is refused at once, naming it, and changes nothing.
    let other = remote
        .lock("the nightly run", std::time::Duration::from_secs(60))
        .expect("lock");
    let refused = registry_cmd(Path::new(&url), &PROMOTE_V1);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("(the nightly run)"),
        "{}",
        text(&refused)
    );
    drop(other);
    let untouched = tempfile::tempdir().expect("mirror");
    runtime
        .block_on(remote.pull(untouched.path()))
        .expect("pull");
    let (_, live, log) = visible_state(&Registry::new(untouched.path()));
    assert_eq!(
        (live, log),
        (None, 0),
        "the refused promote changed nothing"
    );
    let promoted = registry_cmd(Path::new(&url), &PROMOTE_V1);
    assert!(promoted.status.success(), "{}", text(&promoted));
    assert!(
        text(&promoted).contains("LIVE of propensity"),
        "{}",
        text(&promoted)
    );
    // What a server's mirror would see.
    let mirror = tempfile::tempdir().expect("mirror");
    runtime.block_on(remote.pull(mirror.path())).expect("pull");
    let registry = Registry::new(mirror.path());
    let (versions, live, log) = visible_state(&registry);
    assert_eq!(versions, ["fixture-leads-v1"]);
    assert_eq!(live.as_deref(), Some("fixture-leads-v1"));
    assert_eq!(log, 1);
    let listed = registry_cmd(Path::new(&url), &["list"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        text(&listed).contains("fixture-leads-v1"),
        "{}",
        text(&listed)
    );
}
