//! [`ScoringModel`]: a model family plus its calibrator, written as one ONNX
//! graph from the `f32` feature vector to the calibrated probability.

use super::builder::{
    GraphParts, LOGIT, calibration_tail, dim_i64, linear_logit, tree_logit, validate_calibration,
};
use super::proto::ModelProto;
use super::{LinearModel, OnnxError, ToOnnx, TreeEnsemble};
use crate::calibration::Calibrator;

/// The model part of a [`ScoringModel`]: what turns a feature row into the
/// uncalibrated log-odds.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelGraph {
    /// A boosted tree ensemble (`TreeEnsembleClassifier`).
    Trees(TreeEnsemble),
    /// A logistic regression (`MatMul` + `Add`).
    Linear(LinearModel),
    /// Trees boosted from a linear model's log-odds: the two logits added
    /// (`Add` of the two parts above, in `f32`).
    TreesOnLinear {
        linear: LinearModel,
        trees: TreeEnsemble,
    },
}

impl From<TreeEnsemble> for ModelGraph {
    fn from(ensemble: TreeEnsemble) -> Self {
        ModelGraph::Trees(ensemble)
    }
}

impl From<LinearModel> for ModelGraph {
    fn from(model: LinearModel) -> Self {
        ModelGraph::Linear(model)
    }
}

impl ModelGraph {
    /// Width `F` of the rows the model scores.
    pub fn n_features(&self) -> usize {
        match self {
            ModelGraph::Trees(e) => e.n_features,
            ModelGraph::Linear(m) => m.weights.len(),
            ModelGraph::TreesOnLinear { linear, .. } => linear.weights.len(),
        }
    }

    /// Checks the model can be written (see [`TreeEnsemble::validate`],
    /// [`LinearModel::validate`]).
    pub fn validate(&self) -> Result<(), OnnxError> {
        match self {
            ModelGraph::Trees(e) => e.validate(),
            ModelGraph::Linear(m) => m.validate(),
            ModelGraph::TreesOnLinear { linear, trees } => {
                linear.validate()?;
                trees.validate()?;
                if trees.n_features != linear.weights.len() {
                    return Err(OnnxError::Width {
                        what: "the tree ensemble's input".into(),
                        expected: linear.weights.len(),
                        got: trees.n_features,
                    });
                }
                Ok(())
            }
        }
    }

    /// The exact uncalibrated log-odds, in `f64`.
    ///
    /// # Panics
    /// If the model is invalid or `row` has the wrong width.
    pub fn logit(&self, row: &[f32]) -> f64 {
        match self {
            ModelGraph::Trees(e) => e.logit(row),
            ModelGraph::Linear(m) => m.logit(row),
            ModelGraph::TreesOnLinear { linear, trees } => linear.logit(row) + trees.logit(row),
        }
    }

    /// The log-odds with the graph's `f32` steps (see
    /// [`TreeEnsemble::logit_f32`], [`LinearModel::logit_f32`]).
    ///
    /// # Panics
    /// If the model is invalid or `row` has the wrong width.
    pub fn logit_f32(&self, row: &[f32]) -> f32 {
        match self {
            ModelGraph::Trees(e) => e.logit_f32(row),
            ModelGraph::Linear(m) => m.logit_f32(row),
            ModelGraph::TreesOnLinear { linear, trees } => {
                linear.logit_f32(row) + trees.logit_f32(row)
            }
        }
    }

    /// The score the calibrator sees: the log-odds the exported graph
    /// emits, [`logit_f32`](Self::logit_f32) widened to `f64`. **Fit
    /// calibrators on this score**, not on the exact [`logit`](Self::logit):
    /// the two differ by an `f32` rounding, which is harmless for Platt but
    /// is multiplied by the slope of an isotonic segment, and isotonic slopes
    /// between two nearby tree scores can be large. Fitted on this score, the
    /// knots are the very `f32` values the graph produces, so a row lands on
    /// the same segment in Rust and in the runtime.
    ///
    /// # Panics
    /// If the model is invalid or `row` has the wrong width.
    pub fn score(&self, row: &[f32]) -> f64 {
        f64::from(self.logit_f32(row))
    }
}

/// A servable model: the model part and the calibrator applied to its
/// log-odds. Writes one ONNX graph, `features: float32[N, F]` →
/// `probability: float32[N, 1]` (the calibrated probability); see
/// [`builder`](super::builder) for the operators.
///
/// ```
/// use models::calibration::Calibrator;
/// use models::onnx::{LinearModel, ScoringModel, ToOnnx};
///
/// let model = ScoringModel::new(
///     LinearModel { weights: vec![0.5, -1.0], bias: 0.25, missing_values: vec![0.0, 1.0] },
///     Calibrator::Platt { a: -4.0, b: 2.0 },
/// );
/// let bytes = model.to_onnx_bytes().unwrap();
/// assert!(!bytes.is_empty());
/// let row = [1.0, f32::NAN];
/// assert!((f64::from(model.probability_f32(&row)) - model.probability(&row)).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringModel {
    /// Features → uncalibrated log-odds.
    pub model: ModelGraph,
    /// Log-odds → calibrated probability.
    pub calibration: Calibrator,
}

impl ScoringModel {
    /// Pairs a model with its calibrator.
    pub fn new(model: impl Into<ModelGraph>, calibration: Calibrator) -> Self {
        Self {
            model: model.into(),
            calibration,
        }
    }

    /// A model without calibration ([`Calibrator::Identity`]: the logistic
    /// function of the log-odds).
    pub fn uncalibrated(model: impl Into<ModelGraph>) -> Self {
        Self::new(model, Calibrator::Identity)
    }

    /// Width `F` of the rows the model scores.
    pub fn n_features(&self) -> usize {
        self.model.n_features()
    }

    /// Checks the model and the calibrator can be written: the model part
    /// is valid, the calibrator passes [`Calibrator::validate`] and its
    /// parameters are finite as `f32`.
    pub fn validate(&self) -> Result<(), OnnxError> {
        self.model.validate()?;
        validate_calibration(&self.calibration)
    }

    /// The calibrated probability: `calibration.apply(model.score(row))`,
    /// the calibrator applied in `f64` to the score the graph emits (see
    /// [`ModelGraph::score`]). What the served graph computes, to its `f32`
    /// rounding; the reference for evaluation and parity tests.
    ///
    /// # Panics
    /// If the model is invalid or `row` has the wrong width.
    pub fn probability(&self, row: &[f32]) -> f64 {
        self.calibration.apply(self.model.score(row))
    }

    /// The calibrated probability with the exported graph's `f32` steps:
    /// `calibration.apply_f32(model.logit_f32(row))`. The reference for
    /// parity with ONNX Runtime; the calibration tail has no transcendental
    /// function besides `Sigmoid`, so it matches bit for bit or to a few
    /// ulps.
    ///
    /// # Panics
    /// If the model is invalid or `row` has the wrong width.
    pub fn probability_f32(&self, row: &[f32]) -> f32 {
        self.calibration.apply_f32(self.model.logit_f32(row))
    }
}

impl ToOnnx for ScoringModel {
    fn to_onnx(&self) -> Result<ModelProto, OnnxError> {
        self.validate()?;
        let n_features = dim_i64(self.n_features())?;
        let mut parts = GraphParts::default();
        let name = match &self.model {
            ModelGraph::Trees(e) => {
                tree_logit(e, &mut parts, LOGIT)?;
                "leadscore_tree_ensemble"
            }
            ModelGraph::Linear(m) => {
                linear_logit(m, &mut parts, LOGIT)?;
                "leadscore_linear"
            }
            ModelGraph::TreesOnLinear { linear, trees } => {
                linear_logit(linear, &mut parts, "linear_logit")?;
                tree_logit(trees, &mut parts, "tree_logit")?;
                parts.node("Add", &["linear_logit", "tree_logit"], &[LOGIT], vec![]);
                "leadscore_trees_on_linear"
            }
        };
        calibration_tail(&self.calibration, &mut parts)?;
        Ok(parts.into_model(name, n_features))
    }
}

/// The uncalibrated graph (`Calibrator::Identity`).
impl ToOnnx for TreeEnsemble {
    fn to_onnx(&self) -> Result<ModelProto, OnnxError> {
        ScoringModel::uncalibrated(self.clone()).to_onnx()
    }
}

/// The uncalibrated graph (`Calibrator::Identity`).
impl ToOnnx for LinearModel {
    fn to_onnx(&self) -> Result<ModelProto, OnnxError> {
        ScoringModel::uncalibrated(self.clone()).to_onnx()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::CalibrationError;
    use crate::onnx::proto::{GraphProto, TensorProto};
    use crate::onnx::{AI_ONNX_ML_DOMAIN, Node, OUTPUT_NAME, Tree};

    fn ensemble() -> TreeEnsemble {
        let stump = |feature, threshold, lo, hi| Tree {
            nodes: vec![
                Node::Split {
                    feature,
                    threshold,
                    left: 1,
                    right: 2,
                    missing_left: true,
                },
                Node::Leaf { value: lo },
                Node::Leaf { value: hi },
            ],
        };
        TreeEnsemble {
            n_features: 2,
            base_score: -0.75,
            trees: vec![stump(0, 0.5, -1.0, 0.5), stump(1, 2.0, 0.25, 1.5)],
        }
    }

    fn linear() -> LinearModel {
        LinearModel {
            weights: vec![0.5, -1.0],
            bias: 0.25,
            missing_values: vec![0.125, 2.5],
        }
    }

    fn graph(model: &ScoringModel) -> GraphProto {
        model.to_onnx().expect("valid").graph.expect("graph")
    }

    fn ops(graph: &GraphProto) -> Vec<&str> {
        graph.node.iter().map(|n| n.op_type()).collect()
    }

    fn initializer<'a>(graph: &'a GraphProto, name: &str) -> &'a TensorProto {
        graph
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("initializer {name}"))
    }

    fn isotonic() -> Calibrator {
        Calibrator::Isotonic {
            x: vec![-2.0, -0.5, -0.5 + 1e-12, 0.6, 1.9],
            y: vec![0.0, 0.2, 0.4, 0.5, 1.0],
        }
    }

    #[test]
    fn uncalibrated_models_end_in_a_sigmoid_of_the_logit() {
        for model in [
            ScoringModel::uncalibrated(ensemble()),
            ScoringModel::uncalibrated(linear()),
        ] {
            let g = graph(&model);
            let last = g.node.last().expect("nodes");
            assert_eq!(last.op_type(), "Sigmoid");
            assert_eq!(last.input, ["logit"]);
            assert_eq!(last.output, [OUTPUT_NAME]);
            assert_eq!(g.output.len(), 1);
        }
        assert_eq!(
            ScoringModel::uncalibrated(ensemble()).to_onnx(),
            ensemble().to_onnx()
        );
        assert_eq!(
            ops(&graph(&ScoringModel::uncalibrated(linear()))),
            ["IsNaN", "Where", "MatMul", "Add", "Sigmoid"]
        );
    }

    #[test]
    fn platt_tail_negates_its_parameters() {
        let model = ScoringModel::new(ensemble(), Calibrator::Platt { a: -4.5, b: 1.25 });
        let g = graph(&model);
        assert_eq!(
            ops(&g),
            ["TreeEnsembleClassifier", "Gather", "Mul", "Add", "Sigmoid"]
        );
        assert_eq!(g.node[0].domain(), AI_ONNX_ML_DOMAIN);
        assert_eq!(g.node[1].output, ["logit"]);
        assert_eq!(g.node[2].input, ["logit", "platt_neg_a"]);
        assert_eq!(initializer(&g, "platt_neg_a").float_data, [4.5]);
        assert_eq!(initializer(&g, "platt_neg_b").float_data, [-1.25]);
        assert_eq!(g.node[4].output, [OUTPUT_NAME]);
    }

    #[test]
    fn isotonic_tail_carries_the_f32_tables() {
        let model = ScoringModel::new(linear(), isotonic());
        let g = graph(&model);
        assert_eq!(
            ops(&g),
            [
                "IsNaN",
                "Where",
                "MatMul",
                "Add",
                "Clip",
                "LessOrEqual",
                "Cast",
                "ReduceSum",
                "Gather",
                "Gather",
                "Gather",
                "Sub",
                "Mul",
                "Add"
            ]
        );
        let table = isotonic().piecewise_linear_f32().expect("isotonic");
        assert_eq!(initializer(&g, "iso_thresholds").float_data, table.x[1..]);
        assert_eq!(initializer(&g, "iso_thresholds").dims, [4]);
        assert_eq!(initializer(&g, "iso_x").float_data, table.x);
        assert_eq!(initializer(&g, "iso_y").float_data, table.y);
        assert_eq!(initializer(&g, "iso_slope").float_data, table.slope);
        // -0.5 and -0.5 + 1e-12 are one f32: that segment has slope 0.
        assert_eq!(table.slope[1], 0.0);
        assert_eq!(table.slope[4], 0.0);
        assert_eq!(initializer(&g, "iso_lo").float_data, [-2.0_f32]);
        assert_eq!(initializer(&g, "iso_hi").float_data, [1.9_f32]);

        let one_point = ScoringModel::new(
            linear(),
            Calibrator::Isotonic {
                x: vec![0.5],
                y: vec![0.25],
            },
        );
        let g = graph(&one_point);
        assert_eq!(
            ops(&g)[4..],
            ["Clip", "Sub", "Mul", "Add"],
            "no segment search for one point"
        );
        assert_eq!(one_point.probability_f32(&[3.0, -2.0]), 0.25);
    }

    #[test]
    fn invalid_calibrators_are_rejected() {
        let nan = ScoringModel::new(
            ensemble(),
            Calibrator::Platt {
                a: f64::NAN,
                b: 0.0,
            },
        );
        assert!(matches!(
            nan.to_onnx(),
            Err(OnnxError::Calibration(CalibrationError::Invalid(_)))
        ));
        let huge = ScoringModel::new(ensemble(), Calibrator::Platt { a: 1e300, b: 0.0 });
        assert!(matches!(huge.validate(), Err(OnnxError::NonFinite { .. })));
        let unsorted = ScoringModel::new(
            linear(),
            Calibrator::Isotonic {
                x: vec![0.5, 0.1],
                y: vec![0.1, 0.2],
            },
        );
        assert!(unsorted.to_onnx().is_err());
        let empty = ScoringModel::new(
            linear(),
            Calibrator::Isotonic {
                x: vec![],
                y: vec![],
            },
        );
        assert!(empty.to_onnx().is_err());
    }

    #[test]
    fn references_agree_in_f32_and_f64() {
        let calibrators = [
            Calibrator::Identity,
            Calibrator::Platt { a: -4.5, b: 1.25 },
            isotonic(),
        ];
        let rows: [[f32; 2]; 6] = [
            [0.0, 0.0],
            [0.5, 2.0],
            [0.6, 2.5],
            [f32::NAN, 3.0],
            [1.0, f32::NAN],
            [-3.0, 10.0],
        ];
        for calibration in calibrators {
            for model in [ModelGraph::from(ensemble()), ModelGraph::from(linear())] {
                let scoring = ScoringModel::new(model, calibration.clone());
                for row in &rows {
                    let exact = scoring.probability(row);
                    let f32_steps = f64::from(scoring.probability_f32(row));
                    assert!(
                        (exact - f32_steps).abs() < 1e-6,
                        "{calibration:?} {row:?}: {exact} vs {f32_steps}"
                    );
                    assert_eq!(
                        exact,
                        calibration.apply(f64::from(scoring.model.logit_f32(row))),
                        "probability is calibration after the graph's score"
                    );
                    let model_exact = scoring.model.logit(row);
                    assert!((scoring.model.score(row) - model_exact).abs() < 1e-6);
                }
            }
        }
        // The tree's f32 logit: (0.5 - 0.75) + 0.25 for [0.6, 0.0]; NaN
        // goes left (missing_left).
        let e = ensemble();
        assert_eq!(e.logit_f32(&[0.6, 0.0]), 0.0);
        assert_eq!(e.logit_f32(&[f32::NAN, f32::NAN]), -1.75 + 0.25);
        // A missing linear feature takes its missing value.
        let m = linear();
        assert_eq!(m.logit_f32(&[f32::NAN, 1.0]), 0.5 * 0.125 - 1.0 + 0.25);
        assert_eq!(m.logit(&[3.0, f32::NAN]), 1.5 - 2.5 + 0.25);
    }
}
