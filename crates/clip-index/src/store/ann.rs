//! The approximate (HNSW) index beside the database: built on request, memory-mapped while the
//! rows it was built from are unchanged, and searched instead of the exact scan.

use super::*;

impl SqliteStore {
    /// Memory-map the approximate index if one was built and nothing changed since.
    pub(super) fn load_ann(&mut self) {
        let asked = self.meta("ann").ok().flatten().is_some_and(|v| v == "1");
        let stamp = self.meta("ann_stamp").ok().flatten();
        let file = crate::ann::sidecar(&self.path);
        let stale = || {
            format!(
                "the approximate index {} is out of date (the index changed since it was built); \
                 searching exactly. Run `clip index` on the same source to rebuild it",
                file.display()
            )
        };
        match stamp {
            Some(s) if crate::ann::file_stamp(&file).as_deref() == Some(s.as_str()) => {
                match crate::ann::Ann::open(&file, self.model.dim) {
                    Ok(mut a) => {
                        let ef = self.meta("ann_ef").ok().flatten();
                        if let Some(ef) = ef.and_then(|v| v.parse().ok()) {
                            a.set_ef(ef);
                        }
                        self.ann = Some(a);
                    }
                    Err(e) => self.ann_note = Some(format!("{e}; searching exactly")),
                }
            }
            _ if asked => self.ann_note = Some(stale()),
            _ => {}
        }
    }

    /// Build (or rebuild) the approximate index when `want`, or when one was asked for before and
    /// the index changed since; measure its recall@10 at the calibrated search effort, or at `ef`
    /// (kept as `ann_ef_fixed` for later rebuilds; `Some(0)` calibrates again). `None` when there
    /// was nothing to do.
    pub fn refresh_ann(
        &mut self,
        want: bool,
        ef: Option<usize>,
    ) -> Result<Option<crate::ann::AnnReport>, StoreError> {
        let asked = self.meta("ann")?.is_some_and(|v| v == "1");
        if !want && !asked {
            return Ok(None);
        }
        let file = crate::ann::sidecar(&self.path);
        let fresh = self.meta("ann_stamp")?.is_some()
            && self.meta("ann_stamp")? == crate::ann::file_stamp(&file);
        if fresh && !want {
            return Ok(None);
        }
        let m = crate::search::Matrix::load(self).map_err(|e| StoreError::Open {
            path: self.path.display().to_string(),
            msg: e.to_string(),
        })?;
        let t = std::time::Instant::now();
        let mut ann = crate::ann::Ann::build(&m).map_err(|e| StoreError::Open {
            path: file.display().to_string(),
            msg: format!("building the approximate index: {e}"),
        })?;
        let build_seconds = t.elapsed().as_secs_f64();
        ann.save(&file)?;
        let stamp = crate::ann::file_stamp(&file).unwrap_or_default();
        let probe = crate::ann::RecallProbe::new(&m);
        if let Some(ef) = ef {
            self.set_meta("ann_ef_fixed", &ef.to_string())?;
        }
        let fixed = self.meta("ann_ef_fixed")?.and_then(|v| v.parse().ok());
        let steps = crate::ann::efforts(fixed, &crate::ann::EF_STEPS);
        let (ef, recall_at_10, ann_ms) = probe.calibrate_ann(&mut ann, &steps);
        self.set_meta("ann_ef", &ef.to_string())?;
        self.set_meta("ann", "1")?;
        self.set_meta("ann_stamp", &stamp)?;
        Ok(Some(crate::ann::AnnReport {
            images: m.len(),
            build_seconds,
            recall_at_10,
            queries: probe.len(),
            exact_ms: probe.exact_ms,
            ann_ms,
            ef,
            bytes: std::fs::metadata(&file).map_or(0, |m| m.len()),
            location: file.display().to_string(),
        }))
    }

    /// The approximate index in use, if any.
    pub fn ann(&self) -> Option<&crate::ann::Ann> {
        self.ann.as_ref()
    }

    /// Why an approximate index that was built is not used.
    pub fn ann_note(&self) -> Option<&str> {
        self.ann_note.as_deref()
    }

    /// Stop using the approximate index (`--exact`).
    pub fn drop_ann(&mut self) {
        self.ann = None;
        self.ann_note = None;
    }

    /// The `k` nearest images (or captions) of `q`: images through the approximate index,
    /// captions exactly (their vectors are loaded on first use).
    pub fn nearest_ann(
        &mut self,
        q: &[f32],
        k: usize,
        captions: bool,
    ) -> Result<Vec<(i64, String, f32)>, StoreError> {
        let where_ = self.path.display().to_string();
        let err = |e: crate::search::SearchError| StoreError::Open {
            path: where_.clone(),
            msg: e.to_string(),
        };
        if captions || self.ann.is_none() {
            let m = if !captions {
                crate::search::Matrix::load(self).map_err(err)?
            } else {
                match self.captions.take() {
                    Some(m) => m,
                    None => crate::search::Matrix::captions(self).map_err(err)?,
                }
            };
            let hits = m
                .top_k(q, k)
                .into_iter()
                .map(|h| (h.id, h.path, h.score))
                .collect();
            if captions {
                self.captions = Some(m);
            }
            return Ok(hits);
        }
        let hits = self
            .ann
            .as_ref()
            .map(|a| a.search(q, k))
            .unwrap_or_default();
        let mut out = Vec::with_capacity(hits.len());
        for (id, score) in hits {
            // a row removed since the graph was built cannot happen (the stamp would differ);
            // skip it anyway rather than fail
            if let Some(path) = self.path_of(id)? {
                out.push((id, path, score));
            }
        }
        Ok(out)
    }
}
