//! A churn model is spoken of in churn's words (report, summary, capacity table), and its
//! default cut-off flags the customers a retention team can contact, not the best-F1 share;
//! `--repeats` puts the spread of the held-out ROC AUC in the summary and the report.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore-train"))
        .args(args)
        .output()
        .expect("run leadscore-train");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

#[test]
fn a_churn_model_speaks_of_churned_customers_at_risk() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("customers");
    let registry = dir.path().join("registry");
    let (data_s, registry_s) = (
        data.to_str().expect("utf-8"),
        registry.to_str().expect("utf-8"),
    );
    run(&[
        "generate",
        "--kind",
        "customers",
        "--entities",
        "3000",
        "--seed",
        "12",
        "--out",
        data_s,
    ]);
    let spec = data.join("spec.toml");
    let said = run(&[
        "train",
        "--spec",
        spec.to_str().expect("utf-8"),
        "--registry",
        registry_s,
        "--family",
        "logistic",
        "--validation",
        "kfold",
        "--folds",
        "3",
        "--repeats",
        "2",
        "--version",
        "c1",
    ]);
    assert!(said.contains("thresholds: at risk "), "{said}");
    // Repeated splits: the spread in the summary and the report.
    assert!(
        said.contains("held-out ROC AUC over 2 splits (seeds 42..)"),
        "{said}"
    );
    assert!(said.contains("2 splits)"), "{said}");
    let bundle = registry.join("churn").join("c1");
    let report = std::fs::read_to_string(bundle.join("report.html")).expect("report");
    assert!(report.contains("churned") && report.contains("churn rate"));
    assert!(report.contains("retention team"));
    assert!(report.contains("Held-out ROC AUC over 2 splits"));
    for word in ["converted", "conversion", "sales-ready"] {
        assert!(!report.contains(word), "the churn report says {word:?}");
    }
    // The default cut-off flags about a tenth of the held-out customers.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let cut = manifest["thresholds"]["sales_ready"]
        .as_f64()
        .expect("cut-off");
    let holdout = std::fs::read_to_string(bundle.join("holdout.csv")).expect("holdout");
    let scores: Vec<f64> = holdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(3)?.parse().ok())
        .collect();
    let flagged = scores.iter().filter(|&&s| s >= cut).count() as f64 / scores.len() as f64;
    assert!(
        (0.08..=0.12).contains(&flagged),
        "flagged {flagged} at {cut}"
    );
    let table = run(&[
        "thresholds",
        "--registry",
        registry_s,
        "--model",
        "churn",
        "--capacity-per-week",
        "50",
    ]);
    assert!(
        table.contains("held-out customers") && table.contains("at risk in force:"),
        "{table}"
    );
    assert!(!table.contains("lead"), "{table}");
}
