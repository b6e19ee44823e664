//! The HTML report of a training run (`report.html` in the bundle): what data, how it was
//! validated, how every model family did, and the plots a data scientist checks before
//! trusting a model (ROC, precision-recall, calibration, lift and gains, feature importance,
//! score distribution per class), with the threshold and lift tables sales ops tune from.
//! One self-contained file: inline SVG and CSS, no script.

use std::fmt::Write as _;

use models::bundle::{GradeBands, Manifest, Thresholds};
use models::metrics::{
    BinaryMetrics, calibration_curve, lift_by_decile, precision_recall_curve, roc_curve,
    threshold_table,
};

use crate::error::TrainError;
use crate::evaluate::Evaluation;
use crate::repeat::RepeatedAuc;
use crate::svg::{BarChart, LineChart, PALETTE, Series, escape, horizontal_bars};
use crate::thresholds::{CHURN_AT_RISK_SHARE, GRADE_SHARES};
use crate::words::{Words, words};
use features::spec::Task;

/// Features shown in the importance chart.
pub const TOP_FEATURES: usize = 25;
/// Bins of the calibration plot and of the score histograms.
const PLOT_BINS: usize = 10;
const HISTOGRAM_BINS: usize = 20;

/// One evaluated family, as the report shows it.
pub struct FamilyResult<'a> {
    pub evaluation: &'a Evaluation,
    /// Ground-truth ROC AUC on the same held-out rows (generator data only).
    pub truth_roc_auc: Option<f64>,
}

/// Everything the report shows.
pub struct ReportInput<'a> {
    /// The shipped bundle's manifest.
    pub manifest: &'a Manifest,
    /// Every evaluated family; `shipped` indexes the one in the bundle.
    pub families: &'a [FamilyResult<'a>],
    pub shipped: usize,
    /// Warnings: the data guards' (likely leakage) and the solvers' (not converged).
    pub warnings: &'a [String],
    /// Seconds the whole run took up to the report.
    pub elapsed_seconds: f64,
    /// The global model of a `train --segment-by` run: each segment's model against it.
    pub segments: &'a [SegmentRow],
    /// Each family's held-out ROC AUC over repeated splits (`--repeats`); empty otherwise.
    pub repeated: &'a [RepeatedAuc],
}

/// One level of a `--segment-by` run, for the global model's report.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    /// The segment field and its level.
    pub field: String,
    pub level: String,
    /// Rows and positive rows of the level in the global feature table.
    pub rows: usize,
    pub positives: usize,
    /// The comparison on the level's held-out rows, when its model was trained.
    pub comparison: Option<crate::segments::Comparison>,
    /// What became of it, in words.
    pub decision: String,
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;\
padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;\
padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}\
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.5em 1em}.plots{display:flex;\
flex-wrap:wrap;gap:12px}code{background:#f3f3f3;padding:0 3px}";

/// Renders the report.
pub fn render_report(input: &ReportInput<'_>) -> Result<String, TrainError> {
    let manifest = input.manifest;
    let shipped = input
        .families
        .get(input.shipped)
        .ok_or_else(|| TrainError::Data("the shipped family is not among the results".into()))?;
    let evaluation = shipped.evaluation;
    let mut html = String::new();
    let title = format!(
        "leadscore {} model {} {} ({})",
        manifest.task.as_str(),
        manifest.name(),
        manifest.version,
        evaluation.family.as_str()
    );
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = escape(&title)
    );
    summary_section(&mut html, input);
    if !input.warnings.is_empty() {
        html.push_str("<div class=\"warn\"><b>Warnings</b><ul>");
        for warning in input.warnings {
            let _ = write!(html, "<li>{}</li>", escape(warning));
        }
        html.push_str("</ul></div>");
    }
    comparison_section(&mut html, input.families, input.shipped);
    repeated_section(&mut html, input.repeated);
    segments_section(&mut html, input.segments);
    let w = words(manifest.task);
    plots_section(
        &mut html,
        input.families,
        input.shipped,
        manifest.feature_names(),
        w,
    )?;
    thresholds_section(&mut html, &manifest.thresholds, evaluation, w)?;
    lift_section(&mut html, evaluation, w)?;
    html.push_str("</body></html>\n");
    Ok(html)
}

fn summary_section(html: &mut String, input: &ReportInput<'_>) {
    let m = input.manifest;
    let d = &m.dataset;
    let rows: Vec<(&str, String)> = vec![
        ("name", m.name().to_string()),
        ("task", m.task.as_str().to_string()),
        ("model", format!("{:?}", m.model_kind).to_lowercase()),
        ("version", m.version.clone()),
        ("created", m.created_at.to_rfc3339()),
        ("code", m.code_version.clone()),
        ("dataset", d.name.clone()),
        (
            "rows",
            format!(
                "{} ({} positive, {:.2} %)",
                d.rows,
                d.positives,
                100.0 * d.positives as f64 / d.rows.max(1) as f64
            ),
        ),
        ("features", m.n_features().to_string()),
        (
            "scoring moments",
            if d.cutoffs.is_empty() {
                "one row per entity".to_string()
            } else {
                format!("{} ({})", d.cutoffs.len(), d.cutoffs.join(", "))
            },
        ),
        ("validation", m.validation.scheme.clone()),
        (
            "calibration",
            input.families[input.shipped]
                .evaluation
                .calibration_reason
                .clone(),
        ),
        (
            "data files",
            d.fingerprint
                .files
                .iter()
                .map(|f| {
                    format!(
                        "{} ({} bytes, sha256 {})",
                        f.path.display(),
                        f.bytes,
                        f.sha256
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ("run time", format!("{:.1} s", input.elapsed_seconds)),
    ];
    html.push_str("<h2>Summary</h2><table>");
    for (name, value) in rows {
        let _ = write!(
            html,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    html.push_str("</table>");
}

fn repeated_section(html: &mut String, repeated: &[RepeatedAuc]) {
    let Some(first) = repeated.first() else {
        return;
    };
    let _ = write!(
        html,
        "<h2>Held-out ROC AUC over {} splits</h2><p>The validation split drawn again with \
         seeds {}: how much the figure above moves with the split alone. The model shipped \
         is the one of the first split.</p><table><tr><th class=\"l\">family</th>\
         <th>mean</th><th>sd</th><th>min</th><th>max</th><th class=\"l\">each split</th></tr>",
        first.roc_auc.len(),
        first
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in repeated {
        let _ = write!(
            html,
            "<tr><td class=\"l\">{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td>\
             <td>{:.4}</td><td class=\"l\">{}</td></tr>",
            r.family.as_str(),
            r.mean(),
            r.sd(),
            r.min(),
            r.max(),
            r.roc_auc
                .iter()
                .map(|a| format!("{a:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    html.push_str("</table>");
}

fn segments_section(html: &mut String, segments: &[SegmentRow]) {
    let Some(first) = segments.first() else {
        return;
    };
    let _ = write!(
        html,
        "<h2>Segments by {}</h2><p>A model of each level's entities alone against this model, \
         on the level's held-out rows (the same rows for both). A segment model ships when its \
         ROC AUC gain is above the noise: a multiple of the gain's standard deviation over \
         bootstrap resamples of those rows.</p><table><tr><th class=\"l\">level</th>\
         <th>rows</th><th>positives</th><th>held out</th><th>segment ROC AUC</th>\
         <th>this model's</th><th>gain</th><th>noise (sd)</th><th class=\"l\">decision</th></tr>",
        escape(&first.field)
    );
    for row in segments {
        let figures = row.comparison.as_ref().map_or_else(
            || "<td>-</td><td>-</td><td>-</td><td>-</td><td>-</td>".to_string(),
            |c| {
                format!(
                    "<td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:+.4}</td><td>{:.4}</td>",
                    c.rows, c.segment_roc_auc, c.global_roc_auc, c.gain, c.noise
                )
            },
        );
        let _ = write!(
            html,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td>{figures}<td class=\"l\">{}</td></tr>",
            escape(&row.level),
            row.rows,
            row.positives,
            escape(&row.decision)
        );
    }
    html.push_str("</table>");
}

fn comparison_section(html: &mut String, families: &[FamilyResult<'_>], shipped: usize) {
    html.push_str(
        "<h2>Held-out metrics</h2><p>Raw: the model's own probability; calibrated: after \
         calibration, cross-fitted on the held-out rows (each half calibrated by a calibrator \
         fitted on the other half), so these figures are honest too.</p><table><tr>\
         <th class=\"l\">model</th><th>rows</th><th>positives</th><th>ROC AUC</th>\
         <th>mean fold AUC</th><th>truth AUC</th><th>PR AUC</th><th>log loss raw</th>\
         <th>log loss calibrated</th><th>Brier calibrated</th><th>ECE raw</th>\
         <th>ECE calibrated</th><th>top-decile lift</th><th>fit s</th></tr>",
    );
    for (i, family) in families.iter().enumerate() {
        let e = family.evaluation;
        let (raw, cal): (&BinaryMetrics, &BinaryMetrics) = (&e.raw_metrics, &e.calibrated_metrics);
        let fold = if e.fold_roc_auc.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.4}",
                e.fold_roc_auc.iter().sum::<f64>() / e.fold_roc_auc.len() as f64
            )
        };
        let truth = family
            .truth_roc_auc
            .map_or("-".to_string(), |a| format!("{a:.4}"));
        let lift = cal
            .top_decile_lift
            .map_or("-".to_string(), |l| format!("{l:.2}"));
        let _ = write!(
            html,
            "<tr><td class=\"l\">{}{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{fold}</td>\
             <td>{truth}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td>\
             <td>{:.4}</td><td>{:.4}</td><td>{lift}</td><td>{:.1}</td></tr>",
            e.family.as_str(),
            if i == shipped { " (shipped)" } else { "" },
            raw.rows,
            raw.positives,
            raw.roc_auc,
            raw.pr_auc,
            raw.log_loss,
            cal.log_loss,
            cal.brier,
            raw.ece,
            cal.ece,
            e.fit_seconds
        );
    }
    html.push_str("</table>");
}

fn plots_section(
    html: &mut String,
    families: &[FamilyResult<'_>],
    shipped: usize,
    feature_names: &[String],
    w: &Words,
) -> Result<(), TrainError> {
    html.push_str("<h2>Plots</h2><div class=\"plots\">");
    let mut roc = Vec::new();
    let mut pr = Vec::new();
    let mut gains = Vec::new();
    for (i, family) in families.iter().enumerate() {
        let e = family.evaluation;
        let color = PALETTE[i % PALETTE.len()];
        let name = e.family.as_str().to_string();
        let curve = roc_curve(&e.calibrated_scores, &e.holdout_labels, None)?;
        roc.push(line(&name, color, curve.fpr.into_iter().zip(curve.tpr)));
        let curve = precision_recall_curve(&e.calibrated_scores, &e.holdout_labels, None)?;
        pr.push(line(
            &name,
            color,
            curve.recall.into_iter().zip(curve.precision),
        ));
        let lift = lift_by_decile(&e.calibrated_scores, &e.holdout_labels)?;
        let points = std::iter::once((0.0, 0.0)).chain(
            lift.iter()
                .map(|d| (d.decile as f64 * 10.0, d.cumulative_capture)),
        );
        gains.push(line(&name, color, points));
    }
    let diagonal = |name: &str, to: f64| Series {
        name: name.into(),
        points: vec![(0.0, 0.0), (to, 1.0)],
        color: PALETTE[4],
        dashed: true,
        markers: false,
    };
    roc.push(diagonal("chance", 1.0));
    gains.push(diagonal("random order", 100.0));
    let unit = (0.0, 1.0);
    let mut charts = vec![
        LineChart {
            title: "ROC curve (held out)".into(),
            x_label: "false positive rate".into(),
            y_label: "true positive rate".into(),
            x_range: unit,
            y_range: unit,
            series: roc,
        },
        LineChart {
            title: "Precision-recall (held out)".into(),
            x_label: "recall".into(),
            y_label: "precision".into(),
            x_range: unit,
            y_range: unit,
            series: pr,
        },
        LineChart {
            title: "Cumulative gains".into(),
            x_label: "% of rows contacted, best scores first".into(),
            y_label: format!("share of {} found", w.positives),
            x_range: (0.0, 100.0),
            y_range: unit,
            series: gains,
        },
    ];
    let e = families[shipped].evaluation;
    let mut calibration = Vec::new();
    for (name, scores, color) in [
        ("raw", &e.raw_scores, PALETTE[1]),
        ("calibrated", &e.calibrated_scores, PALETTE[0]),
    ] {
        let bins = calibration_curve(scores, &e.holdout_labels, PLOT_BINS)?;
        let points = bins
            .iter()
            .filter_map(|b| Some((b.mean_predicted?, b.observed_rate?)));
        let mut series = line(name, color, points);
        series.markers = true;
        calibration.push(series);
    }
    calibration.push(Series {
        name: "perfect".into(),
        points: vec![(0.0, 0.0), (1.0, 1.0)],
        color: PALETTE[4],
        dashed: true,
        markers: false,
    });
    charts.push(LineChart {
        title: format!("Calibration ({})", e.family.as_str()),
        x_label: "mean predicted probability".into(),
        y_label: format!("observed {}", w.rate),
        x_range: unit,
        y_range: unit,
        series: calibration,
    });
    for chart in charts {
        html.push_str(&chart.render());
    }
    html.push_str(&score_histogram(e, w).render());
    let lift = lift_by_decile(&e.calibrated_scores, &e.holdout_labels)?;
    html.push_str(
        &BarChart {
            title: format!("Lift by decile ({})", e.family.as_str()),
            x_label: "decile (1 = highest scores)".into(),
            y_label: format!("{} / overall rate", w.rate),
            categories: lift.iter().map(|d| d.decile.to_string()).collect(),
            series: vec![(
                "lift".into(),
                PALETTE[0],
                lift.iter().map(|d| d.lift).collect(),
            )],
        }
        .render(),
    );
    html.push_str("</div>");
    let (importance, label) = importance(e, feature_names);
    html.push_str(&horizontal_bars(
        &format!(
            "Feature importance ({}, top {})",
            e.family.as_str(),
            importance.len()
        ),
        label,
        &importance,
    ));
    Ok(())
}

/// Most points drawn per curve: a ROC or precision-recall curve has one point per distinct
/// score, tens of thousands on large sets, far more than a 440-pixel chart shows.
const MAX_CURVE_POINTS: usize = 600;

/// Every `k`-th point, so that at most [`MAX_CURVE_POINTS`] remain, the first and last kept.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_CURVE_POINTS {
        return points;
    }
    let step = points.len().div_ceil(MAX_CURVE_POINTS - 1);
    let last = points.len() - 1;
    points
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| i % step == 0 || i == last)
        .map(|(_, p)| p)
        .collect()
}

fn line(name: &str, color: &'static str, points: impl Iterator<Item = (f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points: thin(points.collect()),
        color,
        dashed: false,
        markers: false,
    }
}

/// Share of each class's held-out rows per calibrated-score bin.
fn score_histogram(e: &Evaluation, w: &Words) -> BarChart {
    let mut counts = [[0usize; HISTOGRAM_BINS]; 2];
    for (&score, &label) in e.calibrated_scores.iter().zip(&e.holdout_labels) {
        let bin = ((score * HISTOGRAM_BINS as f64) as usize).min(HISTOGRAM_BINS - 1);
        counts[usize::from(label)][bin] += 1;
    }
    let shares = |class: usize| {
        let total = counts[class].iter().sum::<usize>().max(1) as f64;
        counts[class].iter().map(|&c| c as f64 / total).collect()
    };
    BarChart {
        title: format!("Score distribution per class ({})", e.family.as_str()),
        x_label: "calibrated probability (bins of 0.05)".into(),
        y_label: "share of the class's rows".into(),
        categories: (0..HISTOGRAM_BINS)
            .map(|b| {
                if b % 4 == 0 {
                    format!("{:.1}", b as f64 / HISTOGRAM_BINS as f64)
                } else {
                    String::new()
                }
            })
            .collect(),
        series: vec![
            (w.negative.into(), PALETTE[1], shares(0)),
            (w.positive.into(), PALETTE[0], shares(1)),
        ],
    }
}

/// The top features by mean |contribution| to the held-out log-odds (TreeSHAP for trees,
/// exact contributions for the linear part): the same measure for every family, and the
/// contributions the server gives as reasons.
fn importance(e: &Evaluation, names: &[String]) -> (Vec<(String, f64)>, &'static str) {
    let mut ranked: Vec<(String, f64)> = names.iter().cloned().zip(e.importance.clone()).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(TOP_FEATURES);
    (
        ranked,
        "mean |contribution| to the held-out log-odds (TreeSHAP / linear)",
    )
}

fn thresholds_section(
    html: &mut String,
    thresholds: &Thresholds,
    e: &Evaluation,
    w: &Words,
) -> Result<(), TrainError> {
    let GradeBands { a, b, c } = thresholds.grades;
    let rule = if w.flagged == words(Task::Churn).flagged {
        format!(
            "the {:.0} % of customers most at risk on the held-out rows: the customers a \
             retention team can contact; set it by capacity in the thresholds file",
            100.0 * CHURN_AT_RISK_SHARE
        )
    } else {
        "best F1 on the held-out rows".to_owned()
    };
    let _ = write!(
        html,
        "<h2>Thresholds</h2><p>Defaults written to the manifest (they can be changed): \
         {flagged} from <b>{:.4}</b> ({}); grade A from {a:.4}, \
         B from {b:.4}, C from {c:.4}, D below (top {:.0} %, next {:.0} %, next {:.0} % of \
         held-out rows).</p>",
        thresholds.sales_ready,
        escape(&rule),
        100.0 * GRADE_SHARES[0],
        100.0 * GRADE_SHARES[1],
        100.0 * GRADE_SHARES[2],
        flagged = w.flagged,
    );
    let _ = write!(
        html,
        "<table><tr><th class=\"l\">grade</th><th>rows</th><th>share</th><th>{}</th>\
         <th>{}</th></tr>",
        w.positive, w.rate
    );
    for grade in [
        models::bundle::Grade::A,
        models::bundle::Grade::B,
        models::bundle::Grade::C,
        models::bundle::Grade::D,
    ] {
        let (mut rows, mut positives) = (0usize, 0usize);
        for (&score, &label) in e.calibrated_scores.iter().zip(&e.holdout_labels) {
            if thresholds.grade(score) == grade {
                rows += 1;
                positives += usize::from(label);
            }
        }
        let _ = write!(
            html,
            "<tr><td class=\"l\">{grade}</td><td>{rows}</td><td>{:.1} %</td><td>{positives}</td>\
             <td>{:.1} %</td></tr>",
            100.0 * rows as f64 / e.calibrated_scores.len().max(1) as f64,
            100.0 * positives as f64 / rows.max(1) as f64
        );
    }
    html.push_str("</table>");
    let mut candidates: Vec<f64> = (1..20).map(|i| f64::from(i) * 0.05).collect();
    candidates.push(thresholds.sales_ready);
    candidates.sort_by(f64::total_cmp);
    let table = threshold_table(&e.calibrated_scores, &e.holdout_labels, &candidates)?;
    let _ = write!(
        html,
        "<h3>Precision and recall at each threshold (held out, calibrated)</h3><table><tr>\
         <th>threshold</th><th>flagged</th><th>flagged share</th><th>{}</th>\
         <th>precision</th><th>recall</th><th>F1</th></tr>",
        w.positive
    );
    let marker_text = format!(" ({})", w.flagged);
    for row in table {
        let marker = if row.threshold == thresholds.sales_ready {
            marker_text.as_str()
        } else {
            ""
        };
        let _ = write!(
            html,
            "<tr><td>{:.4}{marker}</td><td>{}</td><td>{:.1} %</td><td>{}</td><td>{:.3}</td>\
             <td>{:.3}</td><td>{:.3}</td></tr>",
            row.threshold,
            row.flagged,
            100.0 * row.flagged_share,
            row.true_positives,
            row.precision,
            row.recall,
            row.f1
        );
    }
    html.push_str("</table>");
    Ok(())
}

fn lift_section(html: &mut String, e: &Evaluation, w: &Words) -> Result<(), TrainError> {
    let lift = lift_by_decile(&e.calibrated_scores, &e.holdout_labels)?;
    let _ = write!(
        html,
        "<h2>Lift and capture by decile</h2><table><tr><th>decile</th><th>rows</th>\
         <th>{}</th><th>scores</th><th>rate</th><th>lift</th><th>cumulative capture</th>\
         <th>cumulative lift</th></tr>",
        w.positive
    );
    for d in lift {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}–{:.4}</td><td>{:.2} %</td>\
             <td>{:.2}</td><td>{:.1} %</td><td>{:.2}</td></tr>",
            d.decile,
            d.rows,
            d.positives,
            d.min_score,
            d.max_score,
            100.0 * d.rate,
            d.lift,
            100.0 * d.cumulative_capture,
            d.cumulative_lift
        );
    }
    html.push_str("</table>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_curves_are_thinned_keeping_both_ends() {
        let points: Vec<(f64, f64)> = (0..10_001).map(|i| (i as f64, 0.0)).collect();
        let thinned = thin(points);
        assert!(thinned.len() <= MAX_CURVE_POINTS, "{}", thinned.len());
        assert_eq!(thinned.first(), Some(&(0.0, 0.0)));
        assert_eq!(thinned.last(), Some(&(10_000.0, 0.0)));
        let short = vec![(0.0, 1.0), (1.0, 0.5)];
        assert_eq!(thin(short.clone()), short);
    }
}
