//! Writers for the two model families the pipeline serves.
//!
//! Both produce a graph with one input and one output:
//!
//! * input [`INPUT_NAME`] (`features`): `float32[N, F]`, `N` symbolic;
//! * output [`OUTPUT_NAME`] (`probability`): `float32[N, 1]`, the
//!   probability of the positive class.
//!
//! | model | graph |
//! | --- | --- |
//! | [`TreeEnsemble`] | `ai.onnx.ml.TreeEnsembleRegressor` (opset 3, `SUM`, no post-transform) → `Sigmoid` |
//! | [`LinearModel`] | `MatMul(features, W[F,1])` → `Add(b[1])` → `Sigmoid` |
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

/// Logistic regression: `p = sigmoid(weights · row + bias)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    /// One weight per input feature; `F = weights.len()`.
    pub weights: Vec<f32>,
    pub bias: f32,
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
                        if !value.is_finite() {
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

    /// `base_score + Σ leaf values`, accumulated in `f64`; the reference
    /// for what the ONNX graph computes before its `Sigmoid`.
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
    pub fn probability(&self, row: &[f32]) -> f64 {
        sigmoid(self.logit(row))
    }
}

impl LinearModel {
    /// Checks the model can be written: at least one weight, all finite.
    pub fn validate(&self) -> Result<(), OnnxError> {
        if self.weights.is_empty() {
            return Err(OnnxError::NoFeatures);
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

    /// `weights · row + bias` in `f64`.
    ///
    /// # Panics
    /// If `row.len() != weights.len()`.
    pub fn logit(&self, row: &[f32]) -> f64 {
        assert_eq!(row.len(), self.weights.len(), "row width");
        self.weights
            .iter()
            .zip(row)
            .map(|(w, x)| f64::from(*w) * f64::from(*x))
            .sum::<f64>()
            + f64::from(self.bias)
    }

    /// `sigmoid(logit(row))`.
    pub fn probability(&self, row: &[f32]) -> f64 {
        sigmoid(self.logit(row))
    }
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl ToOnnx for TreeEnsemble {
    fn to_onnx(&self) -> Result<ModelProto, OnnxError> {
        self.validate()?;
        let n_features = dim_i64(self.n_features)?;

        let mut treeids = Vec::new();
        let mut nodeids = Vec::new();
        let mut featureids = Vec::new();
        let mut values = Vec::new();
        let mut modes = Vec::new();
        let mut truenodeids = Vec::new();
        let mut falsenodeids = Vec::new();
        let mut missing_true = Vec::new();
        let mut target_treeids = Vec::new();
        let mut target_nodeids = Vec::new();
        let mut target_ids = Vec::new();
        let mut target_weights = Vec::new();

        for (t, tree) in self.trees.iter().enumerate() {
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
                        // base_values is not portable across runtimes: fold
                        // the base score into the first tree's leaves.
                        let weight = if t == 0 {
                            value + self.base_score
                        } else {
                            value
                        };
                        target_treeids.push(t_id);
                        target_nodeids.push(n_id);
                        target_ids.push(0);
                        target_weights.push(weight);
                    }
                }
            }
        }

        let trees = NodeProto {
            name: Some("trees".into()),
            op_type: Some("TreeEnsembleRegressor".into()),
            domain: Some(AI_ONNX_ML_DOMAIN.into()),
            input: vec![INPUT_NAME.into()],
            output: vec!["logit".into()],
            attribute: vec![
                attr_int("n_targets", 1),
                attr_str("aggregate_function", "SUM"),
                attr_str("post_transform", "NONE"),
                attr_ints("nodes_treeids", treeids),
                attr_ints("nodes_nodeids", nodeids),
                attr_ints("nodes_featureids", featureids),
                attr_floats("nodes_values", values),
                attr_strs("nodes_modes", modes),
                attr_ints("nodes_truenodeids", truenodeids),
                attr_ints("nodes_falsenodeids", falsenodeids),
                attr_ints("nodes_missing_value_tracks_true", missing_true),
                attr_ints("target_treeids", target_treeids),
                attr_ints("target_nodeids", target_nodeids),
                attr_ints("target_ids", target_ids),
                attr_floats("target_weights", target_weights),
            ],
            ..Default::default()
        };
        let graph = GraphProto {
            name: Some("leadscore_tree_ensemble".into()),
            node: vec![trees, sigmoid_node("logit")],
            input: vec![value_info(INPUT_NAME, n_features)],
            output: vec![value_info(OUTPUT_NAME, 1)],
            ..Default::default()
        };
        Ok(model(graph, true))
    }
}

impl ToOnnx for LinearModel {
    fn to_onnx(&self) -> Result<ModelProto, OnnxError> {
        self.validate()?;
        let n_features = dim_i64(self.weights.len())?;
        let weights = TensorProto {
            name: Some("weights".into()),
            dims: vec![n_features, 1],
            data_type: Some(DataType::Float as i32),
            float_data: self.weights.clone(),
            ..Default::default()
        };
        let bias = TensorProto {
            name: Some("bias".into()),
            dims: vec![1],
            data_type: Some(DataType::Float as i32),
            float_data: vec![self.bias],
            ..Default::default()
        };
        let matmul = NodeProto {
            name: Some("matmul".into()),
            op_type: Some("MatMul".into()),
            input: vec![INPUT_NAME.into(), "weights".into()],
            output: vec!["score".into()],
            ..Default::default()
        };
        let add = NodeProto {
            name: Some("add_bias".into()),
            op_type: Some("Add".into()),
            input: vec!["score".into(), "bias".into()],
            output: vec!["logit".into()],
            ..Default::default()
        };
        let graph = GraphProto {
            name: Some("leadscore_linear".into()),
            node: vec![matmul, add, sigmoid_node("logit")],
            initializer: vec![weights, bias],
            input: vec![value_info(INPUT_NAME, n_features)],
            output: vec![value_info(OUTPUT_NAME, 1)],
            ..Default::default()
        };
        Ok(model(graph, false))
    }
}

fn dim_i64(n: usize) -> Result<i64, OnnxError> {
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

fn sigmoid_node(input: &str) -> NodeProto {
    NodeProto {
        name: Some("sigmoid".into()),
        op_type: Some("Sigmoid".into()),
        input: vec![input.into()],
        output: vec![OUTPUT_NAME.into()],
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
        assert_eq!(graph.output[0].name(), OUTPUT_NAME);
        let ops: Vec<_> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["TreeEnsembleRegressor", "Sigmoid"]);

        let trees = &graph.node[0];
        assert_eq!(trees.domain(), AI_ONNX_ML_DOMAIN);
        assert!(
            trees
                .attribute
                .iter()
                .all(|a| !a.name().starts_with("base_values"))
        );
        assert_eq!(attr_of(trees, "nodes_treeids").ints, [0, 0, 0, 1, 1, 1]);
        assert_eq!(
            attr_of(trees, "nodes_values").floats,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(attr_of(trees, "target_treeids").ints, [0, 0, 1, 1]);
        assert_eq!(attr_of(trees, "target_nodeids").ints, [1, 2, 1, 2]);
        // base_score 0.5 added to tree 0's leaves only.
        assert_eq!(
            attr_of(trees, "target_weights").floats,
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
    }

    #[test]
    fn linear_graph_has_weights_as_f32_initializers() {
        let model = LinearModel {
            weights: vec![1.5, -2.0, 0.25],
            bias: 0.125,
        }
        .to_onnx()
        .unwrap();
        assert_eq!(model.opset_import.len(), 1, "no ai.onnx.ml needed");
        let graph = model.graph.unwrap();
        let ops: Vec<_> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["MatMul", "Add", "Sigmoid"]);
        let w = &graph.initializer[0];
        assert_eq!(w.dims, [3, 1]);
        assert_eq!(w.data_type(), DataType::Float as i32);
        assert_eq!(w.float_data, [1.5, -2.0, 0.25]);
        assert_eq!(graph.initializer[1].float_data, [0.125]);
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
        };
        assert_eq!(empty.to_onnx().unwrap_err(), OnnxError::NoFeatures);
        let inf = LinearModel {
            weights: vec![1.0, f32::INFINITY],
            bias: 0.0,
        };
        assert!(matches!(inf.validate(), Err(OnnxError::NonFinite { .. })));
    }

    #[test]
    fn models_round_trip_through_serde() {
        let e = ensemble();
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""type":"split""#), "{json}");
        assert_eq!(serde_json::from_str::<TreeEnsemble>(&json).unwrap(), e);
    }
}
