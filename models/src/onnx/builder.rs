//! The model families the pipeline serves and the pieces of their ONNX
//! graphs.
//!
//! Every written graph has one input and one output:
//!
//! * input [`INPUT_NAME`] (`features`): `float32[N, F]`, `N` symbolic;
//! * output [`OUTPUT_NAME`] (`probability`): `float32[N, 1]`, the
//!   calibrated probability of the positive class.
//!
//! A graph is a model part giving the uncalibrated log-odds `s` (the
//! `logit` tensor, `float32[N, 1]`), then a calibration tail turning `s`
//! into the probability (see [`ScoringModel`](super::ScoringModel)):
//!
//! | part | graph |
//! | --- | --- |
//! | [`TreeEnsemble`] | `ai.onnx.ml.TreeEnsembleClassifier` (opset 3, post-transform `NONE`, labels `[0, 1]`) → `Gather` of column 1 of its `probabilities` (the raw sum) |
//! | [`LinearModel`] | `IsNaN` → `Where(·, fill[F], features)` → `MatMul(·, W[F,1])` → `Add(b[1])` |
//! | `Calibrator::Identity` | `Sigmoid` |
//! | `Calibrator::Platt { a, b }` | `Mul(s, -a)` → `Add(-b)` → `Sigmoid` |
//! | `Calibrator::Isotonic { x, y }` | `Clip(s, x[0], x[n-1])`; `LessOrEqual(x[1..], ·)` → `Cast(int64)` → `ReduceSum` gives the segment `k`; `Gather` of `x`, `y`, `slope` at `k`; `Sub` → `Mul` → `Add` |
//!
//! The calibration tail evaluates exactly the `f32` steps of
//! [`Calibrator::apply_f32`](crate::calibration::Calibrator::apply_f32).
//!
//! **Trees.** Every leaf carries one weight, for class id 1, and
//! `classlabels_int64s = [0, 1]`. ONNX Runtime treats "two labels, weights
//! for one class id" as its binary case, and what lands in the
//! `probabilities` columns there has changed between releases (onnxruntime
//! issue 27533: `[1 - s, s]`, `[-s, s]` or `[0, s]` for the raw sum `s`,
//! depending on the release and on the signs of the weights). With the
//! weights on class id 1 and post-transform `NONE`, column 1 is `s` in every
//! variant (1.31.1, checked by the serving parity tests with leaves of both
//! signs). Only column 1 is used; the mandatory `label` output is left
//! unconnected. The logistic is applied by the calibration tail, so that
//! Platt scaling works on the log-odds as scikit-learn's does.
//!
//! `base_values` of the tree-ensemble operators is applied differently (or
//! not at all) by different runtimes, so the writer never sets it: the
//! ensemble's [`base_score`](TreeEnsemble::base_score) is folded into the
//! leaf weights of the first tree instead. Thresholds and weights are `f32`,
//! as the runtime compares and accumulates them.

use serde::{Deserialize, Serialize};

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};
use super::{
    AI_ONNX_ML_DOMAIN, AI_ONNX_ML_OPSET, AI_ONNX_OPSET, INPUT_NAME, IR_VERSION, OUTPUT_NAME,
    OnnxError, PRODUCER_NAME,
};
use crate::calibration::{CalibrationError, Calibrator};

/// Converts a model to ONNX.
pub trait ToOnnx {
    /// Builds the ONNX model, validating the model first.
    fn to_onnx(&self) -> Result<ModelProto, OnnxError>;

    /// Builds the ONNX model and serialises it to protobuf bytes.
    fn to_onnx_bytes(&self) -> Result<Vec<u8>, OnnxError> {
        use prost::Message as _;
        Ok(self.to_onnx()?.encode_to_vec())
    }
}

/// One node of a binary decision tree. Nodes refer to their children by
/// index into [`Tree::nodes`]; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Node {
    /// Go to `left` when `row[feature] <= threshold`, else to `right`. A
    /// missing value (NaN) goes left when `missing_left`, else right.
    Split {
        feature: usize,
        threshold: f32,
        left: usize,
        right: usize,
        missing_left: bool,
    },
    /// A leaf adding `value` to the ensemble's logit.
    Leaf { value: f32 },
}

/// A binary decision tree; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// A boosted tree ensemble for binary classification:
/// `p = sigmoid(base_score + Σ_trees leaf(row))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEnsemble {
    /// Width `F` of the input row.
    pub n_features: usize,
    /// Logit offset added to every row.
    pub base_score: f32,
    pub trees: Vec<Tree>,
}

/// Logistic regression: `p = sigmoid(weights · row + bias)`, a missing
/// (NaN) feature `j` taking the value `missing_values[j]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// One weight per input feature; `F = weights.len()`.
    pub weights: Vec<f32>,
    pub bias: f32,
    /// The value of each feature when it is missing (typically its training
    /// mean); `F` entries.
    pub missing_values: Vec<f32>,
}

impl Tree {
    /// The leaf value this tree gives `row`, following the same rules as
    /// the ONNX graph (`<=` goes left, NaN follows `missing_left`).
    ///
    /// # Panics
    /// If the tree is malformed (see [`TreeEnsemble::validate`]) or `row`
    /// is narrower than a split's feature index.
    pub fn leaf_value(&self, row: &[f32]) -> f32 {
        let mut at = 0;
        loop {
            match self.nodes[at] {
                Node::Leaf { value } => return value,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    missing_left,
                } => {
                    let x = row[feature];
                    let go_left = if x.is_nan() {
                        missing_left
                    } else {
                        x <= threshold
                    };
                    at = if go_left { left } else { right };
                }
            }
        }
    }
}

impl TreeEnsemble {
    /// Checks the ensemble can be written: at least one tree and one
    /// feature, finite numbers, feature indices below `n_features`, and every
    /// tree a proper tree (each node reached exactly once from the root).
    pub fn validate(&self) -> Result<(), OnnxError> {
        if self.n_features == 0 {
            return Err(OnnxError::NoFeatures);
        }
        if self.trees.is_empty() {
            return Err(OnnxError::NoTrees);
        }
        if !self.base_score.is_finite() {
            return Err(OnnxError::NonFinite {
                what: "base_score".into(),
            });
        }
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.nodes.is_empty() {
                return Err(OnnxError::EmptyTree { tree: t });
            }
            let mut seen = vec![false; tree.nodes.len()];
            let mut stack = vec![0usize];
            while let Some(n) = stack.pop() {
                if std::mem::replace(&mut seen[n], true) {
                    return Err(OnnxError::NotATree { tree: t, node: n });
                }
                match tree.nodes[n] {
                    Node::Leaf { value } => {
                        if !self.leaf_weight(t, value).is_finite() {
                            return Err(OnnxError::NonFinite {
                                what: format!("tree {t} node {n} leaf value"),
                            });
                        }
                    }
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                        ..
                    } => {
                        if feature >= self.n_features {
                            return Err(OnnxError::FeatureOutOfRange {
                                tree: t,
                                node: n,
                                feature,
                                n_features: self.n_features,
                            });
                        }
                        if !threshold.is_finite() {
                            return Err(OnnxError::NonFinite {
                                what: format!("tree {t} node {n} threshold"),
                            });
                        }
                        for child in [left, right] {
                            if child >= tree.nodes.len() {
                                return Err(OnnxError::ChildOutOfRange {
                                    tree: t,
                                    node: n,
                                    child,
                                    len: tree.nodes.len(),
                                });
                            }
                            stack.push(child);
                        }
                    }
                }
            }
            if let Some(n) = seen.iter().position(|s| !s) {
                return Err(OnnxError::Unreachable { tree: t, node: n });
            }
        }
        Ok(())
    }

    /// The weight written for a leaf of tree `tree`: its value, plus the
    /// base score (in `f32`) for the first tree's leaves.
    fn leaf_weight(&self, tree: usize, value: f32) -> f32 {
        if tree == 0 {
            value + self.base_score
        } else {
            value
        }
    }

    /// `base_score + Σ leaf values`, accumulated in `f64`; the exact logit
    /// of the ensemble.
    ///
    /// # Panics
    /// If the ensemble is invalid or `row.len() < n_features`.
    pub fn logit(&self, row: &[f32]) -> f64 {
        self.trees
            .iter()
            .map(|t| f64::from(t.leaf_value(row)))
            .sum::<f64>()
            + f64::from(self.base_score)
    }

    /// `sigmoid(logit(row))`.
    ///
    /// # Panics
    /// As [`logit`](Self::logit).
    pub fn probability(&self, row: &[f32]) -> f64 {
        sigmoid(self.logit(row))
    }

    /// The logit as the exported graph accumulates it: the written leaf
    /// weights (base score folded into the first tree's) summed in `f32`,
    /// in tree order, from 0 — what ONNX Runtime does on one thread. With
    /// several threads it may sum the trees in another order, which moves
    /// the result by a few `f32` rounding steps.
    ///
    /// # Panics
    /// As [`logit`](Self::logit).
    pub fn logit_f32(&self, row: &[f32]) -> f32 {
        self.trees
            .iter()
            .enumerate()
            .fold(0.0_f32, |sum, (t, tree)| {
                sum + self.leaf_weight(t, tree.leaf_value(row))
            })
    }
}

impl LinearModel {
    /// Checks the model can be written: at least one weight, all finite,
    /// and one finite missing value per weight.
    pub fn validate(&self) -> Result<(), OnnxError> {
        if self.weights.is_empty() {
            return Err(OnnxError::NoFeatures);
        }
        if self.missing_values.len() != self.weights.len() {
            return Err(OnnxError::Width {
                what: "missing_values".into(),
                got: self.missing_values.len(),
                expected: self.weights.len(),
            });
        }
        if let Some(j) = self.missing_values.iter().position(|v| !v.is_finite()) {
            return Err(OnnxError::NonFinite {
                what: format!("missing value of feature {j}"),
            });
        }
        if let Some(i) = self.weights.iter().position(|w| !w.is_finite()) {
            return Err(OnnxError::NonFinite {
                what: format!("weight {i}"),
            });
        }
        if !self.bias.is_finite() {
            return Err(OnnxError::NonFinite {
                what: "bias".into(),
            });
        }
        Ok(())
    }

    /// `row[j]`, or `missing_values[j]` when it is NaN.
    fn filled(&self, row: &[f32]) -> impl Iterator<Item = f32> {
        assert_eq!(row.len(), self.weights.len(), "row width");
        row.iter()
            .zip(&self.missing_values)
            .map(|(&x, &fill)| if x.is_nan() { fill } else { x })
    }

    /// `weights · filled(row) + bias` in `f64`.
    ///
    /// # Panics
    /// If the model is invalid or `row.len() != weights.len()`.
    pub fn logit(&self, row: &[f32]) -> f64 {
        self.weights
            .iter()
            .zip(self.filled(row))
            .map(|(w, x)| f64::from(*w) * f64::from(x))
            .sum::<f64>()
            + f64::from(self.bias)
    }

    /// `sigmoid(logit(row))`.
    ///
    /// # Panics
    /// If `row.len() != weights.len()`.
    pub fn probability(&self, row: &[f32]) -> f64 {
        sigmoid(self.logit(row))
    }

    /// The logit with the graph's `f32` steps: missing values filled, the
    /// dot product (summed in `f64`, rounded once: `MatMul` sums in an order
    /// of the runtime's choosing, so this matches it to a few `f32` rounding
    /// steps), then `+ bias` in `f32`.
    ///
    /// # Panics
    /// If the model is invalid or `row.len() != weights.len()`.
    pub fn logit_f32(&self, row: &[f32]) -> f32 {
        let dot = self
            .weights
            .iter()
            .zip(self.filled(row))
            .map(|(w, x)| f64::from(*w) * f64::from(x))
            .sum::<f64>() as f32;
        dot + self.bias
    }
}

/// The logistic function (one definition for the crate).
pub use crate::gbdt::sigmoid;

/// Name of the model part's output, the uncalibrated log-odds
/// (`float32[N, 1]`) the calibration tail reads.
pub(super) const LOGIT: &str = "logit";
/// Name of the tree part's `probabilities` output, `float32[N, 2]`.
const TREE_PROBABILITIES: &str = "class_probabilities";
/// Name of the tree part's mandatory (unused) `label` output.
const TREE_LABEL: &str = "class_label";
/// The class id every leaf weight is written for, and the column of
/// [`TREE_PROBABILITIES`] holding the raw sum.
const POSITIVE_CLASS: i64 = 1;

/// Nodes and initializers of a graph under construction.
#[derive(Debug, Default)]
pub(super) struct GraphParts {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    uses_ml: bool,
}

impl GraphParts {
    /// Appends a node named after its first output.
    pub(super) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            name: outputs.first().map(|o| (*o).to_owned()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|i| (*i).to_owned()).collect(),
            output: outputs.iter().map(|o| (*o).to_owned()).collect(),
            attribute,
            ..Default::default()
        });
    }

    fn floats(&mut self, name: &str, dims: Vec<i64>, values: Vec<f32>) {
        self.initializers.push(TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(DataType::Float as i32),
            float_data: values,
            ..Default::default()
        });
    }

    fn ints(&mut self, name: &str, dims: Vec<i64>, values: Vec<i64>) {
        self.initializers.push(TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(DataType::Int64 as i32),
            int64_data: values,
            ..Default::default()
        });
    }

    /// The finished model: input `features: float32[N, n_features]`, output
    /// `probability: float32[N, 1]`.
    pub(super) fn into_model(self, name: &str, n_features: i64) -> ModelProto {
        let graph = GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(INPUT_NAME, n_features)],
            output: vec![value_info(OUTPUT_NAME, 1)],
            ..Default::default()
        };
        model(graph, self.uses_ml)
    }
}

/// Appends the tree part: `features` → `output`. The ensemble must be
/// valid.
pub(super) fn tree_logit(
    ensemble: &TreeEnsemble,
    parts: &mut GraphParts,
    output: &str,
) -> Result<(), OnnxError> {
    let mut treeids = Vec::new();
    let mut nodeids = Vec::new();
    let mut featureids = Vec::new();
    let mut values = Vec::new();
    let mut modes = Vec::new();
    let mut truenodeids = Vec::new();
    let mut falsenodeids = Vec::new();
    let mut missing_true = Vec::new();
    let mut class_treeids = Vec::new();
    let mut class_nodeids = Vec::new();
    let mut class_weights = Vec::new();

    for (t, tree) in ensemble.trees.iter().enumerate() {
        let t_id = dim_i64(t)?;
        for (n, node) in tree.nodes.iter().enumerate() {
            let n_id = dim_i64(n)?;
            treeids.push(t_id);
            nodeids.push(n_id);
            match *node {
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    missing_left,
                } => {
                    featureids.push(dim_i64(feature)?);
                    values.push(threshold);
                    modes.push(b"BRANCH_LEQ".to_vec());
                    truenodeids.push(dim_i64(left)?);
                    falsenodeids.push(dim_i64(right)?);
                    missing_true.push(i64::from(missing_left));
                }
                Node::Leaf { value } => {
                    featureids.push(0);
                    values.push(0.0);
                    modes.push(b"LEAF".to_vec());
                    truenodeids.push(0);
                    falsenodeids.push(0);
                    missing_true.push(0);
                    class_treeids.push(t_id);
                    class_nodeids.push(n_id);
                    // base_values is not portable across runtimes: the base
                    // score is folded into the first tree's leaves.
                    class_weights.push(ensemble.leaf_weight(t, value));
                }
            }
        }
    }
    let class_ids = vec![POSITIVE_CLASS; class_weights.len()];

    parts.nodes.push(NodeProto {
        name: Some("trees".into()),
        op_type: Some("TreeEnsembleClassifier".into()),
        domain: Some(AI_ONNX_ML_DOMAIN.into()),
        input: vec![INPUT_NAME.into()],
        output: vec![TREE_LABEL.into(), TREE_PROBABILITIES.into()],
        attribute: vec![
            attr_ints("classlabels_int64s", vec![0, 1]),
            attr_str("post_transform", "NONE"),
            attr_ints("nodes_treeids", treeids),
            attr_ints("nodes_nodeids", nodeids),
            attr_ints("nodes_featureids", featureids),
            attr_floats("nodes_values", values),
            attr_strs("nodes_modes", modes),
            attr_ints("nodes_truenodeids", truenodeids),
            attr_ints("nodes_falsenodeids", falsenodeids),
            attr_ints("nodes_missing_value_tracks_true", missing_true),
            attr_ints("class_treeids", class_treeids),
            attr_ints("class_nodeids", class_nodeids),
            attr_ints("class_ids", class_ids),
            attr_floats("class_weights", class_weights),
        ],
        ..Default::default()
    });
    parts.uses_ml = true;
    parts.ints("positive_class", vec![1], vec![POSITIVE_CLASS]);
    parts.node(
        "Gather",
        &[TREE_PROBABILITIES, "positive_class"],
        &[output],
        vec![attr_int("axis", 1)],
    );
    Ok(())
}

/// Appends the linear part: `features` → `output`. The model must be
/// valid.
pub(super) fn linear_logit(
    model: &LinearModel,
    parts: &mut GraphParts,
    output: &str,
) -> Result<(), OnnxError> {
    let n_features = dim_i64(model.weights.len())?;
    parts.floats(
        "missing_values",
        vec![n_features],
        model.missing_values.clone(),
    );
    parts.floats("weights", vec![n_features, 1], model.weights.clone());
    parts.floats("bias", vec![1], vec![model.bias]);
    parts.node("IsNaN", &[INPUT_NAME], &["is_missing"], vec![]);
    parts.node(
        "Where",
        &["is_missing", "missing_values", INPUT_NAME],
        &["filled"],
        vec![],
    );
    parts.node("MatMul", &["filled", "weights"], &["dot"], vec![]);
    parts.node("Add", &["dot", "bias"], &[output], vec![]);
    Ok(())
}

/// Checks that a calibrator can be written: valid (see
/// [`Calibrator::validate`]) and with parameters that stay finite as `f32`.
pub(super) fn validate_calibration(calibration: &Calibrator) -> Result<(), OnnxError> {
    calibration.validate()?;
    let finite_f32 = |v: f64| (v as f32).is_finite();
    match calibration {
        Calibrator::Identity => Ok(()),
        Calibrator::Platt { a, b } => {
            if finite_f32(*a) && finite_f32(*b) {
                Ok(())
            } else {
                Err(OnnxError::NonFinite {
                    what: "Platt parameters as f32".into(),
                })
            }
        }
        Calibrator::Isotonic { x, .. } => {
            if x.iter().all(|&v| finite_f32(v)) {
                Ok(())
            } else {
                Err(OnnxError::NonFinite {
                    what: "isotonic thresholds as f32".into(),
                })
            }
        }
    }
}

/// Appends the calibration tail: [`LOGIT`] → [`OUTPUT_NAME`]. The
/// calibrator must pass [`validate_calibration`].
pub(super) fn calibration_tail(
    calibration: &Calibrator,
    parts: &mut GraphParts,
) -> Result<(), OnnxError> {
    let input = LOGIT;
    match calibration {
        Calibrator::Identity => {
            parts.node("Sigmoid", &[input], &[OUTPUT_NAME], vec![]);
        }
        Calibrator::Platt { a, b } => {
            // p = 1 / (1 + exp(a s + b)) = Sigmoid(s * (-a) + (-b)); negation
            // is exact, so the f32 steps are those of apply_f32.
            parts.floats("platt_neg_a", vec![], vec![-(*a as f32)]);
            parts.floats("platt_neg_b", vec![], vec![-(*b as f32)]);
            parts.node("Mul", &[input, "platt_neg_a"], &["platt_scaled"], vec![]);
            parts.node(
                "Add",
                &["platt_scaled", "platt_neg_b"],
                &["platt_logit"],
                vec![],
            );
            parts.node("Sigmoid", &["platt_logit"], &[OUTPUT_NAME], vec![]);
        }
        Calibrator::Isotonic { .. } => {
            let empty =
                || OnnxError::Calibration(CalibrationError::Invalid("isotonic table is empty"));
            let table = calibration.piecewise_linear_f32().ok_or_else(empty)?;
            let n = table.x.len();
            let (Some(&first), Some(&last)) = (table.x.first(), table.x.last()) else {
                return Err(empty());
            };
            parts.floats("iso_lo", vec![], vec![first]);
            parts.floats("iso_hi", vec![], vec![last]);
            parts.node("Clip", &[input, "iso_lo", "iso_hi"], &["iso_s"], vec![]);
            let (x_k, y_k, slope_k) = if n == 1 {
                // One point: k is always 0.
                parts.floats("iso_x0", vec![], vec![table.x[0]]);
                parts.floats("iso_y0", vec![], vec![table.y[0]]);
                parts.floats("iso_slope0", vec![], vec![table.slope[0]]);
                ("iso_x0", "iso_y0", "iso_slope0")
            } else {
                let len = dim_i64(n)?;
                // k = #{x[1..] <= s}: LessOrEqual broadcasts [n-1] against
                // [N, 1] to [N, n-1]; the sum over axis 1 keeps [N, 1].
                parts.floats("iso_thresholds", vec![len - 1], table.x[1..].to_vec());
                parts.floats("iso_x", vec![len], table.x);
                parts.floats("iso_y", vec![len], table.y);
                parts.floats("iso_slope", vec![len], table.slope);
                parts.ints("iso_sum_axes", vec![1], vec![1]);
                parts.node(
                    "LessOrEqual",
                    &["iso_thresholds", "iso_s"],
                    &["iso_at_or_above"],
                    vec![],
                );
                parts.node(
                    "Cast",
                    &["iso_at_or_above"],
                    &["iso_at_or_above_i64"],
                    vec![attr_int("to", DataType::Int64 as i64)],
                );
                parts.node(
                    "ReduceSum",
                    &["iso_at_or_above_i64", "iso_sum_axes"],
                    &["iso_k"],
                    vec![attr_int("keepdims", 1)],
                );
                for table in ["iso_x", "iso_y", "iso_slope"] {
                    let out = format!("{table}_k");
                    parts.node(
                        "Gather",
                        &[table, "iso_k"],
                        &[&out],
                        vec![attr_int("axis", 0)],
                    );
                }
                ("iso_x_k", "iso_y_k", "iso_slope_k")
            };
            // p = y[k] + (s - x[k]) * slope[k]
            parts.node("Sub", &["iso_s", x_k], &["iso_dx"], vec![]);
            parts.node("Mul", &["iso_dx", slope_k], &["iso_rise"], vec![]);
            parts.node("Add", &[y_k, "iso_rise"], &[OUTPUT_NAME], vec![]);
        }
    }
    Ok(())
}

pub(super) fn dim_i64(n: usize) -> Result<i64, OnnxError> {
    i64::try_from(n).map_err(|_| OnnxError::TooLarge { value: n })
}

fn model(graph: GraphProto, uses_ml: bool) -> ModelProto {
    let mut opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(AI_ONNX_OPSET),
    }];
    if uses_ml {
        opset_import.push(OperatorSetIdProto {
            domain: Some(AI_ONNX_ML_DOMAIN.into()),
            version: Some(AI_ONNX_ML_OPSET),
        });
    }
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import,
        producer_name: Some(PRODUCER_NAME.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// `float32[N, width]` with `N` symbolic.
fn value_info(name: &str, width: i64) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension {
                            value: Some(Value::DimParam("N".into())),
                            ..Default::default()
                        },
                        Dimension {
                            value: Some(Value::DimValue(width)),
                            ..Default::default()
                        },
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i: Some(i),
        ..attr(name, AttributeType::Int)
    }
}

fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        s: Some(s.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        ints,
        ..attr(name, AttributeType::Ints)
    }
}

fn attr_floats(name: &str, floats: Vec<f32>) -> AttributeProto {
    AttributeProto {
        floats,
        ..attr(name, AttributeType::Floats)
    }
}

fn attr_strs(name: &str, strings: Vec<Vec<u8>>) -> AttributeProto {
    AttributeProto {
        strings,
        ..attr(name, AttributeType::Strings)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn stump(feature: usize, threshold: f32, lo: f32, hi: f32) -> Tree {
        Tree {
            nodes: vec![
                Node::Split {
                    feature,
                    threshold,
                    left: 1,
                    right: 2,
                    missing_left: false,
                },
                Node::Leaf { value: lo },
                Node::Leaf { value: hi },
            ],
        }
    }

    fn ensemble() -> TreeEnsemble {
        TreeEnsemble {
            n_features: 2,
            base_score: 0.5,
            trees: vec![stump(0, 1.0, -1.0, 1.0), stump(1, 0.0, 0.25, -0.25)],
        }
    }

    fn attr_of<'a>(node: &'a NodeProto, name: &str) -> &'a AttributeProto {
        node.attribute
            .iter()
            .find(|a| a.name() == name)
            .unwrap_or_else(|| panic!("attribute {name}"))
    }

    #[test]
    fn tree_ensemble_graph_folds_base_score_into_first_tree() {
        let bytes = ensemble().to_onnx_bytes().unwrap();
        let model = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(model.ir_version(), IR_VERSION);
        let opsets: Vec<_> = model
            .opset_import
            .iter()
            .map(|o| (o.domain().to_owned(), o.version()))
            .collect();
        assert_eq!(
            opsets,
            [
                (String::new(), AI_ONNX_OPSET),
                (AI_ONNX_ML_DOMAIN.to_owned(), AI_ONNX_ML_OPSET)
            ]
        );
        let graph = model.graph.unwrap();
        assert_eq!(graph.input[0].name(), INPUT_NAME);
        let outputs: Vec<_> = graph.output.iter().map(|o| o.name()).collect();
        assert_eq!(outputs, [OUTPUT_NAME]);
        let ops: Vec<_> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["TreeEnsembleClassifier", "Gather", "Sigmoid"]);

        let trees = &graph.node[0];
        assert_eq!(trees.domain(), AI_ONNX_ML_DOMAIN);
        assert_eq!(trees.output, [TREE_LABEL, TREE_PROBABILITIES]);
        assert!(
            trees
                .attribute
                .iter()
                .all(|a| !a.name().starts_with("base_values"))
        );
        assert_eq!(attr_of(trees, "classlabels_int64s").ints, [0, 1]);
        assert_eq!(attr_of(trees, "post_transform").s(), b"NONE");
        assert_eq!(attr_of(trees, "nodes_treeids").ints, [0, 0, 0, 1, 1, 1]);
        assert_eq!(
            attr_of(trees, "nodes_values").floats,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(attr_of(trees, "class_treeids").ints, [0, 0, 1, 1]);
        assert_eq!(attr_of(trees, "class_nodeids").ints, [1, 2, 1, 2]);
        assert_eq!(attr_of(trees, "class_ids").ints, [1, 1, 1, 1]);
        // base_score 0.5 added to tree 0's leaves only.
        assert_eq!(
            attr_of(trees, "class_weights").floats,
            [-0.5, 1.5, 0.25, -0.25]
        );
        assert_eq!(
            attr_of(trees, "nodes_modes").strings,
            [
                &b"BRANCH_LEQ"[..],
                b"LEAF",
                b"LEAF",
                b"BRANCH_LEQ",
                b"LEAF",
                b"LEAF"
            ]
        );

        // Column 1 of the scores is the logit, and its sigmoid the output.
        let gather = &graph.node[1];
        assert_eq!(gather.input, [TREE_PROBABILITIES, "positive_class"]);
        assert_eq!(gather.output, [LOGIT]);
        assert_eq!(graph.node[2].input, [LOGIT]);
        assert_eq!(graph.node[2].output, [OUTPUT_NAME]);
        assert_eq!(attr_of(gather, "axis").i(), 1);
        let column = graph
            .initializer
            .iter()
            .find(|t| t.name() == "positive_class")
            .unwrap();
        assert_eq!(
            (column.dims.as_slice(), column.int64_data.as_slice()),
            (&[1][..], &[1][..])
        );
    }

    #[test]
    fn linear_graph_has_weights_as_f32_initializers() {
        let model = LinearModel {
            weights: vec![1.5, -2.0, 0.25],
            bias: 0.125,
            missing_values: vec![0.5, 0.0, -1.0],
        }
        .to_onnx()
        .unwrap();
        assert_eq!(model.opset_import.len(), 1, "no ai.onnx.ml needed");
        let graph = model.graph.unwrap();
        let ops: Vec<_> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["IsNaN", "Where", "MatMul", "Add", "Sigmoid"]);
        let fill = &graph.initializer[0];
        assert_eq!(fill.dims, [3]);
        assert_eq!(fill.float_data, [0.5, 0.0, -1.0]);
        let w = &graph.initializer[1];
        assert_eq!(w.dims, [3, 1]);
        assert_eq!(w.data_type(), DataType::Float as i32);
        assert_eq!(w.float_data, [1.5, -2.0, 0.25]);
        assert_eq!(graph.initializer[2].float_data, [0.125]);
    }

    #[test]
    fn reference_evaluator_follows_graph_rules() {
        let e = ensemble();
        // 0.5 + (x0 <= 1 ? -1 : 1) + (x1 <= 0 ? 0.25 : -0.25)
        assert_eq!(e.logit(&[1.0, 0.0]), 0.5 - 1.0 + 0.25);
        assert_eq!(e.logit(&[2.0, 0.1]), 0.5 + 1.0 - 0.25);
        // NaN goes right (missing_left = false).
        assert_eq!(e.logit(&[f32::NAN, f32::NAN]), 0.5 + 1.0 - 0.25);
        assert!((e.probability(&[1.0, 0.0]) - sigmoid(-0.25)).abs() < 1e-15);
    }

    #[test]
    fn invalid_models_are_rejected() {
        let mut e = ensemble();
        e.trees[1].nodes[0] = Node::Split {
            feature: 2,
            threshold: 0.0,
            left: 1,
            right: 2,
            missing_left: false,
        };
        assert!(matches!(
            e.to_onnx(),
            Err(OnnxError::FeatureOutOfRange {
                tree: 1,
                node: 0,
                feature: 2,
                n_features: 2
            })
        ));

        let mut e = ensemble();
        e.trees[0].nodes[0] = Node::Split {
            feature: 0,
            threshold: 1.0,
            left: 1,
            right: 1,
            missing_left: false,
        };
        assert!(matches!(
            e.validate(),
            Err(OnnxError::NotATree { tree: 0, node: 1 })
        ));

        let mut e = ensemble();
        e.trees[0].nodes.push(Node::Leaf { value: 0.0 });
        assert!(matches!(
            e.validate(),
            Err(OnnxError::Unreachable { tree: 0, node: 3 })
        ));

        let mut e = ensemble();
        e.trees[0].nodes[0] = Node::Split {
            feature: 0,
            threshold: 1.0,
            left: 1,
            right: 7,
            missing_left: false,
        };
        assert!(matches!(
            e.validate(),
            Err(OnnxError::ChildOutOfRange { child: 7, .. })
        ));

        let mut e = ensemble();
        e.trees[1].nodes[2] = Node::Leaf { value: f32::NAN };
        assert!(matches!(e.validate(), Err(OnnxError::NonFinite { .. })));

        let mut e = ensemble();
        e.trees.clear();
        assert_eq!(e.validate(), Err(OnnxError::NoTrees));

        let empty = LinearModel {
            weights: vec![],
            bias: 0.0,
            missing_values: vec![],
        };
        assert_eq!(empty.to_onnx().unwrap_err(), OnnxError::NoFeatures);
        let inf = LinearModel {
            weights: vec![1.0, f32::INFINITY],
            bias: 0.0,
            missing_values: vec![0.0, 0.0],
        };
        assert!(matches!(inf.validate(), Err(OnnxError::NonFinite { .. })));
        let narrow = LinearModel {
            weights: vec![1.0, 2.0],
            bias: 0.0,
            missing_values: vec![0.0],
        };
        assert!(matches!(
            narrow.validate(),
            Err(OnnxError::Width {
                got: 1,
                expected: 2,
                ..
            })
        ));
        let nan_fill = LinearModel {
            missing_values: vec![0.0, f32::NAN],
            ..narrow
        };
        assert!(matches!(
            nan_fill.validate(),
            Err(OnnxError::NonFinite { .. })
        ));
    }

    #[test]
    fn models_round_trip_through_serde() {
        let e = ensemble();
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""type":"split""#), "{json}");
        assert_eq!(serde_json::from_str::<TreeEnsemble>(&json).unwrap(), e);
    }
}
