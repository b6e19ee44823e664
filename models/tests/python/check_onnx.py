#!/usr/bin/env python3
"""Check an exported leadscore ONNX model in Python onnxruntime.

    check_onnx.py MODEL.onnx INPUTS.npy EXPECTED.npy [--tolerance 1e-5] [--threads 1]

INPUTS.npy holds the feature rows (float32, shape [N, F], NaN = missing);
EXPECTED.npy the probabilities the Rust model gives them (float32 or
float64, shape [N] or [N, 1]). The model is run with onnxruntime's CPU
provider, its `probability` output compared with EXPECTED row by row.
Prints the onnxruntime version and the largest |difference|; exits 0 when
every row is within the tolerance, 1 when one is not, 2 on bad input.

The session runs on one intra-op thread by default, as leadscore serves:
on several threads onnxruntime may split a batch so that a tree ensemble's
leaves are summed in another order, which moves the uncalibrated
log-odds by a few float32 steps; a steep isotonic segment multiplies that.

Needs numpy and onnxruntime (scripts/test installs onnxruntime==1.31.1 and
numpy into the repository's .venv).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnxruntime as ort

INPUT_NAME = "features"
OUTPUT_NAME = "probability"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("expected")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0: onnxruntime's default)")
    args = parser.parse_args()

    rows = np.load(args.inputs)
    expected = np.load(args.expected).astype(np.float64).reshape(-1)
    if rows.dtype != np.float32 or rows.ndim != 2:
        print(f"inputs must be float32 [N, F], got {rows.dtype} {rows.shape}", file=sys.stderr)
        return 2
    if rows.shape[0] != expected.shape[0]:
        print(f"{rows.shape[0]} input rows but {expected.shape[0]} expected values", file=sys.stderr)
        return 2

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: rows})
    if got.shape != (rows.shape[0], 1) or got.dtype != np.float32:
        print(f"output {OUTPUT_NAME} is {got.dtype} {got.shape}, expected float32 [N, 1]", file=sys.stderr)
        return 1
    diff = np.abs(got.reshape(-1).astype(np.float64) - expected)
    worst = int(np.argmax(diff)) if diff.size else 0
    max_diff = float(diff[worst]) if diff.size else 0.0
    print(
        f"onnxruntime {ort.__version__}: {rows.shape[0]} rows, max |dp| = {max_diff:.3e}"
        f" (tolerance {args.tolerance:.0e})"
    )
    bad = np.flatnonzero(~(diff <= args.tolerance))  # NaN counts as bad
    if bad.size:
        for i in bad[:10]:
            print(f"row {i}: onnxruntime {got[i, 0]!r}, expected {expected[i]!r}", file=sys.stderr)
        print(f"{bad.size} of {rows.shape[0]} rows differ by more than {args.tolerance:.0e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
