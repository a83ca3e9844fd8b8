//! Image grids (PNG): tiles in rows, each framed in a colour (green: the model was right, red:
//! wrong, grey: no verdict), so a person can see what a probe showed the model.

use std::path::Path;

use clip_data::resize::Rgb8;
use clip_eval::EvalError;

pub const RIGHT: [u8; 3] = [40, 160, 60];
pub const WRONG: [u8; 3] = [200, 40, 40];
pub const PLAIN: [u8; 3] = [190, 190, 190];

/// One tile: an image and its frame colour.
pub struct Tile {
    pub image: Rgb8,
    pub frame: [u8; 3],
}

/// Right or wrong.
pub fn frame(correct: bool) -> [u8; 3] {
    if correct { RIGHT } else { WRONG }
}

/// The grid of `tiles` (each resized to `side`, framed by 3 pixels) in rows of `columns`.
pub fn render(tiles: &[Tile], columns: usize, side: usize) -> Rgb8 {
    let columns = columns.clamp(1, tiles.len().max(1));
    let rows = tiles.len().div_ceil(columns).max(1);
    let (b, gap) = (3usize, 4usize);
    let cell = side + 2 * b + gap;
    let (w, h) = (columns * cell + gap, rows * cell + gap);
    let mut out = Rgb8::new(w, h, vec![255; w * h * 3]);
    for (i, t) in tiles.iter().enumerate() {
        let (x0, y0) = (gap + (i % columns) * cell, gap + (i / columns) * cell);
        let img = if t.image.width == side && t.image.height == side {
            t.image.clone()
        } else {
            crate::render::resized(&t.image, side, side)
        };
        for y in 0..side + 2 * b {
            for x in 0..side + 2 * b {
                let inside = (b..side + b).contains(&x) && (b..side + b).contains(&y);
                let px: [u8; 3] = if inside {
                    let s = ((y - b) * side + (x - b)) * 3;
                    [img.data[s], img.data[s + 1], img.data[s + 2]]
                } else {
                    t.frame
                };
                let d = ((y0 + y) * w + x0 + x) * 3;
                out.data[d..d + 3].copy_from_slice(&px);
            }
        }
    }
    out
}

/// Write `img` as a PNG (atomically).
pub fn save_png(img: &Rgb8, path: &Path) -> Result<(), EvalError> {
    let mut bytes = Vec::new();
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .ok_or_else(|| EvalError::Invalid("image buffer of the wrong size".into()))?
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| EvalError::Invalid(format!("cannot encode '{}': {e}", path.display())))?;
    Ok(clip_data::out::write_file(path, &bytes)?)
}

/// Render and save a grid (nothing is written for no tiles).
pub fn save(tiles: &[Tile], columns: usize, side: usize, path: &Path) -> Result<bool, EvalError> {
    if tiles.is_empty() {
        return Ok(false);
    }
    save_png(&render(tiles, columns, side), path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_framed_in_rows() {
        let black = Rgb8::new(2, 2, vec![0; 12]);
        let tiles: Vec<Tile> = (0..5)
            .map(|i| Tile {
                image: black.clone(),
                frame: frame(i % 2 == 0),
            })
            .collect();
        let g = render(&tiles, 3, 4);
        let cell = 4 + 6 + 4;
        assert_eq!((g.width, g.height), (3 * cell + 4, 2 * cell + 4));
        let px = |x: usize, y: usize| &g.data[(y * g.width + x) * 3..(y * g.width + x) * 3 + 3];
        assert_eq!(px(4, 4), RIGHT);
        assert_eq!(px(4 + cell, 4), WRONG);
        assert_eq!(px(4 + 3 + 1, 4 + 3 + 1), [0, 0, 0]);
        // the sixth cell is empty
        assert_eq!(px(4 + 2 * cell + 5, 4 + cell + 5), [255, 255, 255]);
    }
}
