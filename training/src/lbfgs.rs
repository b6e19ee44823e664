//! Limited-memory BFGS for smooth convex objectives (the logistic regression's penalised log
//! loss): two-loop recursion over the last [`HISTORY`] steps, backtracking line search with
//! the Armijo condition, and a curvature check before a step enters the history.

/// Steps remembered.
pub const HISTORY: usize = 10;
/// Sufficient decrease of the Armijo condition.
const ARMIJO: f64 = 1e-4;
/// Step halvings tried before the line search gives up.
const MAX_HALVINGS: usize = 60;

/// How a minimisation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// The minimiser.
    pub x: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// Largest absolute gradient entry there.
    pub gradient_max: f64,
    /// Iterations done.
    pub iterations: usize,
    /// `true` when the gradient tolerance was reached, `false` when the iterations ran out or
    /// no step decreased the objective any more (the objective is then flat to the precision
    /// of `f64`).
    pub converged: bool,
}

/// Minimises `objective`, which returns the value at `x` and writes the gradient into its
/// third argument, from `start`, until the largest absolute gradient entry is at most
/// `gradient_tolerance` or after `max_iterations` iterations.
pub fn minimize(
    objective: impl FnMut(&[f64], &mut [f64]) -> f64,
    start: Vec<f64>,
    gradient_tolerance: f64,
    max_iterations: usize,
) -> Minimum {
    minimize_measured(
        objective,
        start,
        max_abs,
        gradient_tolerance,
        max_iterations,
    )
}

/// [`minimize`], with the size of a gradient measured by `gradient_size` (which is then what
/// [`Minimum::gradient_max`] holds): for a problem solved in transformed coordinates whose
/// tolerance is set on the gradient of the original ones.
pub fn minimize_measured(
    mut objective: impl FnMut(&[f64], &mut [f64]) -> f64,
    start: Vec<f64>,
    gradient_size: impl Fn(&[f64]) -> f64,
    gradient_tolerance: f64,
    max_iterations: usize,
) -> Minimum {
    let n = start.len();
    let mut x = start;
    let mut gradient = vec![0.0; n];
    let mut value = objective(&x, &mut gradient);
    let mut steps: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::with_capacity(HISTORY);
    let mut next_x = vec![0.0; n];
    let mut next_gradient = vec![0.0; n];
    let mut iterations = 0;
    let mut converged = gradient_size(&gradient) <= gradient_tolerance;
    while !converged && iterations < max_iterations {
        iterations += 1;
        let mut direction = two_loop(&gradient, &steps);
        let mut slope = dot(&direction, &gradient);
        if slope >= 0.0 || slope.is_nan() {
            // Not a descent direction (cannot happen with positive curvature pairs, but
            // rounding): fall back to steepest descent and forget the history.
            steps.clear();
            direction = gradient.iter().map(|g| -g).collect();
            slope = dot(&direction, &gradient);
        }
        // The first step has no curvature information: scale it to a unit move.
        let mut step = if steps.is_empty() {
            1.0 / max_abs(&direction).max(1.0)
        } else {
            1.0
        };
        let mut accepted = false;
        for _ in 0..MAX_HALVINGS {
            for i in 0..n {
                next_x[i] = x[i] + step * direction[i];
            }
            let next_value = objective(&next_x, &mut next_gradient);
            if next_value.is_finite() && next_value <= value + ARMIJO * step * slope {
                let s: Vec<f64> = (0..n).map(|i| next_x[i] - x[i]).collect();
                let y: Vec<f64> = (0..n).map(|i| next_gradient[i] - gradient[i]).collect();
                let curvature = dot(&s, &y);
                if curvature > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
                    if steps.len() == HISTORY {
                        steps.remove(0);
                    }
                    steps.push((s, y, 1.0 / curvature));
                }
                std::mem::swap(&mut x, &mut next_x);
                std::mem::swap(&mut gradient, &mut next_gradient);
                value = next_value;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
        converged = gradient_size(&gradient) <= gradient_tolerance;
    }
    Minimum {
        gradient_max: gradient_size(&gradient),
        x,
        value,
        iterations,
        converged,
    }
}

/// The quasi-Newton direction `-H g` from the remembered steps `(s, y, 1 / s·y)`.
fn two_loop(gradient: &[f64], steps: &[(Vec<f64>, Vec<f64>, f64)]) -> Vec<f64> {
    let mut q: Vec<f64> = gradient.to_vec();
    let mut alphas = vec![0.0; steps.len()];
    for (k, (s, y, rho)) in steps.iter().enumerate().rev() {
        let a = rho * dot(s, &q);
        alphas[k] = a;
        for (qi, yi) in q.iter_mut().zip(y) {
            *qi -= a * yi;
        }
    }
    if let Some((s, y, _)) = steps.last() {
        let gamma = dot(s, y) / dot(y, y);
        for qi in &mut q {
            *qi *= gamma;
        }
    }
    for (k, (s, y, rho)) in steps.iter().enumerate() {
        let b = rho * dot(y, &q);
        for (qi, si) in q.iter_mut().zip(s) {
            *qi += (alphas[k] - b) * si;
        }
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[cfg(test)]
mod tests {
    use super::minimize;

    #[test]
    fn minimises_an_ill_conditioned_quadratic() {
        // f(x) = Σ c_i (x_i - i)², condition number 1e4: the minimum is x_i = i.
        let scales: Vec<f64> = (0..20).map(|i| 10f64.powf(4.0 * i as f64 / 19.0)).collect();
        let result = minimize(
            |x, g| {
                let mut value = 0.0;
                for i in 0..x.len() {
                    let d = x[i] - i as f64;
                    value += scales[i] * d * d;
                    g[i] = 2.0 * scales[i] * d;
                }
                value
            },
            vec![0.0; 20],
            1e-8,
            1000,
        );
        assert!(result.converged, "{result:?}");
        for (i, xi) in result.x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-6, "x[{i}] = {xi}");
        }
    }

    /// Value and gradient of `(1 - a)² + 100 (b - a²)²`, minimum 0 at (1, 1).
    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let (a, b) = (x[0], x[1]);
        g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
        g[1] = 200.0 * (b - a * a);
        (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
    }

    #[test]
    fn minimises_the_rosenbrock_function() {
        let result = minimize(rosenbrock, vec![-1.2, 1.0], 1e-9, 2000);
        assert!(result.converged, "{result:?}");
        assert!((result.x[0] - 1.0).abs() < 1e-6 && (result.x[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn stops_at_the_iteration_limit() {
        let result = minimize(rosenbrock, vec![-1.2, 1.0], 1e-9, 3);
        assert_eq!(result.iterations, 3);
        assert!(!result.converged);
        assert!(
            result.value < 24.2,
            "the objective did not decrease: {result:?}"
        );
    }
}
