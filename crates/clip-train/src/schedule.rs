//! Learning-rate schedule: linear warm-up then cosine decay to zero (open_clip's `cosine_lr`).

/// Learning rate at `step` (0-based): `base · (step+1)/warmup` during warm-up, then
/// `0.5 · (1 + cos(π · e/es)) · base` with `e = step − warmup`, `es = steps − warmup`.
pub fn cosine_lr(base: f64, warmup: usize, steps: usize, step: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let e = (step - warmup) as f64;
    let es = steps.saturating_sub(warmup).max(1) as f64;
    0.5 * (1.0 + (std::f64::consts::PI * e / es).cos()) * base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        // values of open_clip's cosine_lr(base_lr=1e-3, warmup_length=10, steps=110)
        let lr = |s| cosine_lr(1e-3, 10, 110, s);
        assert!((lr(0) - 1e-4).abs() < 1e-15);
        assert!((lr(9) - 1e-3).abs() < 1e-15);
        assert!((lr(10) - 1e-3).abs() < 1e-15);
        assert!((lr(60) - 5e-4).abs() < 1e-15);
        assert!(lr(109) > 0.0 && lr(109) < 1e-6);
        let all: Vec<f64> = (10..110).map(lr).collect();
        assert!(
            all.windows(2).all(|w| w[1] <= w[0]),
            "monotone after warm-up"
        );
    }
}
