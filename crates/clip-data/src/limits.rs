//! Bounds on what a user can ask for, checked before allocating: a batch of images whose input
//! tensor alone would not fit in the memory this machine has available is refused with the numbers.

/// Bytes of memory available now (`MemAvailable` of `/proc/meminfo`); `None` where unknown.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// `batch` images of `size`×`size` as float32 model input must fit in half the available memory
/// (the forward pass needs several times the input). `what` names the setting in the message.
pub fn check_image_batch(batch: usize, size: usize, what: &str) -> Result<(), String> {
    let bytes = (batch as u128) * 3 * (size as u128) * (size as u128) * 4;
    let Some(avail) = available_memory() else {
        return Ok(());
    };
    if bytes > avail as u128 / 2 {
        let gb = |b: u128| b as f64 / 1e9;
        return Err(format!(
            "{what} {batch} needs {:.1} GB for the {size}×{size} input images alone; this machine has {:.1} GB available — use a smaller batch",
            gb(bytes),
            gb(avail as u128)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_batches_are_refused() {
        assert!(super::check_image_batch(32, 224, "--batch-size").is_ok());
        if super::available_memory().is_some() {
            let e = super::check_image_batch(10_000_000, 224, "--batch-size").unwrap_err();
            assert!(
                e.starts_with("--batch-size 10000000 needs 6021.1 GB"),
                "{e}"
            );
        }
    }
}
