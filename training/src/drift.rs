//! The `drift` command's reading of a server's drift answer (`GET /v1/drift/{model}`): the
//! features and fields that moved most, and which of them cross the alert limits.

use models::drift::{DriftReport, FieldDrift};
use serde::Deserialize;
use std::fmt::Write as _;

/// The server's answer at `/v1/drift/{model}`.
#[derive(Debug, Clone, Deserialize)]
pub struct DriftAnswer {
    pub model: ModelName,
    pub window_seconds: u64,
    pub training_rows: usize,
    pub drift: DriftReport,
}

/// Which model answered.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelName {
    pub task: String,
    pub version: String,
}

/// When a figure calls for attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftLimits {
    /// PSI above this is a significant shift (0.2 by the usual reading).
    pub psi: f64,
    /// Share of unknown categorical levels above this.
    pub unknown_share: f64,
    /// Rows scored below this: too few for the PSI to mean anything, no alert.
    pub min_rows: u64,
}

impl Default for DriftLimits {
    fn default() -> Self {
        DriftLimits {
            psi: 0.2,
            unknown_share: 0.05,
            min_rows: 500,
        }
    }
}

/// One line of the table: a numeric feature or a categorical field.
struct Line<'a> {
    name: &'a str,
    kind: &'static str,
    psi: Option<f64>,
    missing: Option<f64>,
    training_missing: f64,
    unknown: Option<f64>,
}

fn lines(report: &DriftReport) -> Vec<Line<'_>> {
    let mut lines: Vec<Line<'_>> = report
        .features
        .iter()
        .map(|f| Line {
            name: &f.feature,
            kind: "feature",
            psi: f.psi,
            missing: f.missing_share,
            training_missing: f.training_missing_share,
            unknown: None,
        })
        .chain(report.fields.iter().map(|f: &FieldDrift| Line {
            name: &f.field,
            kind: "field",
            psi: f.psi,
            missing: f.missing_share,
            training_missing: f.training_missing_share,
            unknown: f.unknown_share,
        }))
        .collect();
    lines.sort_by(|a, b| {
        b.psi
            .unwrap_or(0.0)
            .total_cmp(&a.psi.unwrap_or(0.0))
            .then(a.name.cmp(b.name))
    });
    lines
}

/// The `n` features and fields of highest PSI, highest first, with their PSI (those with a
/// figure only).
pub fn top_shifts(report: &DriftReport, n: usize) -> Vec<(&str, f64)> {
    lines(report)
        .into_iter()
        .filter_map(|line| line.psi.map(|psi| (line.name, psi)))
        .take(n)
        .collect()
}

/// What crosses `limits`, one sentence each; empty when nothing does or too few rows were
/// scored to tell.
pub fn drift_alerts(answer: &DriftAnswer, limits: &DriftLimits) -> Vec<String> {
    if answer.drift.rows < limits.min_rows {
        return Vec::new();
    }
    let mut alerts = Vec::new();
    for line in lines(&answer.drift) {
        if let Some(psi) = line.psi.filter(|&p| p > limits.psi) {
            alerts.push(format!(
                "{} `{}`: PSI {psi:.3} > {}",
                line.kind, line.name, limits.psi
            ));
        }
        if let Some(unknown) = line.unknown.filter(|&u| u > limits.unknown_share) {
            alerts.push(format!(
                "field `{}`: {:.1} % of rows have a level never seen in training (> {:.1} %)",
                line.name,
                100.0 * unknown,
                100.0 * limits.unknown_share
            ));
        }
    }
    alerts
}

/// The drift table: the `top` features and fields by PSI (all when `top` is 0), with share
/// missing against training and share of unknown levels, then the alerts.
pub fn drift_table(answer: &DriftAnswer, limits: &DriftLimits, top: usize) -> String {
    let report = &answer.drift;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: {} rows scored over the last {} s, against {} training rows",
        answer.model.task,
        answer.model.version,
        report.rows,
        answer.window_seconds,
        answer.training_rows
    );
    if report.rows == 0 {
        out.push_str("nothing scored in the window: no drift figures yet\n");
        return out;
    }
    let percent =
        |share: Option<f64>| share.map_or("-".to_string(), |s| format!("{:.1}", 100.0 * s));
    let _ = writeln!(
        out,
        "{:<40} {:>8} {:>9} {:>10} {:>9}",
        "feature / field", "PSI", "missing%", "training%", "unknown%"
    );
    let all = lines(report);
    let shown = if top == 0 {
        all.len()
    } else {
        top.min(all.len())
    };
    for line in &all[..shown] {
        let psi = line.psi.map_or("-".to_string(), |p| format!("{p:.3}"));
        let flag = match line.psi {
            Some(p) if p > limits.psi => "  significant shift",
            Some(p) if p > 0.1 => "  moderate shift",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{:<40} {psi:>8} {:>9} {:>10.1} {:>9}{flag}",
            line.name,
            percent(line.missing),
            100.0 * line.training_missing,
            percent(line.unknown),
        );
    }
    if shown < all.len() {
        let _ = writeln!(out, "({} more below; --top 0 shows all)", all.len() - shown);
    }
    let alerts = drift_alerts(answer, limits);
    if report.rows < limits.min_rows {
        let _ = writeln!(
            out,
            "fewer than {} rows scored: too few to alert on",
            limits.min_rows
        );
    } else if alerts.is_empty() {
        out.push_str("no alert\n");
    } else {
        for alert in alerts {
            let _ = writeln!(out, "ALERT {alert}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rows: u64) -> DriftAnswer {
        serde_json::from_value(serde_json::json!({
            "model": {"task": "propensity", "version": "v7"},
            "window_seconds": 3600,
            "training_rows": 9000,
            "drift": {
                "rows": rows,
                "features": [
                    {"feature": "tenure_days", "psi": 0.02, "missing_share": 0.0, "training_missing_share": 0.0},
                    {"feature": "annual_revenue", "psi": 0.31, "missing_share": 0.4, "training_missing_share": 0.05}
                ],
                "fields": [
                    {"field": "lead_source", "psi": 0.15, "missing_share": 0.0, "training_missing_share": 0.0,
                     "unknown_share": 0.08, "other_share": 0.1, "training_other_share": 0.02}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_table_ranks_by_psi_and_names_what_crosses_the_limits() {
        let limits = DriftLimits::default();
        let text = drift_table(&answer(1000), &limits, 0);
        let order: Vec<usize> = ["annual_revenue", "lead_source", "tenure_days"]
            .iter()
            .map(|name| text.find(name).expect(name))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains("0.310") && text.contains("significant shift"),
            "{text}"
        );
        assert!(text.contains("moderate shift"), "{text}");
        let alerts = drift_alerts(&answer(1000), &limits);
        assert_eq!(
            alerts,
            [
                "feature `annual_revenue`: PSI 0.310 > 0.2",
                "field `lead_source`: 8.0 % of rows have a level never seen in training (> 5.0 %)",
            ]
        );
        // Top 1 shows one line and says how many are left.
        let text = drift_table(&answer(1000), &limits, 1);
        assert!(
            !text.contains("tenure_days") && text.contains("(2 more below"),
            "{text}"
        );
        assert_eq!(
            top_shifts(&answer(1000).drift, 2),
            [("annual_revenue", 0.31), ("lead_source", 0.15)]
        );
        // Too few rows: figures shown, no alert.
        assert!(drift_alerts(&answer(100), &limits).is_empty());
        assert!(drift_table(&answer(100), &limits, 0).contains("too few to alert on"));
    }
}
